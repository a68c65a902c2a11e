"""An existing collection of the configured name is checked on open (through the client's
config API) before any write: one that another tool made, lacking what the store needs,
is refused with a message naming it, each difference and what to do."""

from __future__ import annotations

import copy
import os
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
import structlog
from aieng_hookspecs.types import Document, Query
from aieng_weaviate import WeaviateCollectionMismatch, WeaviateOptions, WeaviateStore
from aieng_weaviate._requests import collection_config
from aieng_weaviate._schema import collection_mismatches
from weaviate.classes.data import DataObject
from weaviate.collections.classes.batch import BatchObjectReturn
from weaviate.collections.classes.config import CollectionConfig
from weaviate.collections.classes.config_methods import _collection_config_from_json
from weaviate.exceptions import UnexpectedStatusCodeError

from aieng_core.testing import HashEmbedder

_HNSW = {"cleanupIntervalSeconds": 300, "distance": "cosine", "dynamicEfMin": 100,
         "dynamicEfMax": 500, "dynamicEfFactor": 8, "ef": -1, "efConstruction": 128,
         "filterStrategy": "acorn", "flatSearchCutoff": 40000, "maxConnections": 32,
         "skip": False, "vectorCacheMaxObjects": 1000000000,
         "bq": {"enabled": False}, "pq": {"enabled": False}, "sq": {"enabled": False},
         "multivector": {"enabled": False}}


def server_schema(name: str = "Docs") -> dict[str, Any]:
    """The JSON a Weaviate 1.33 server answers (``GET /v1/schema/{name}``) for the
    collection :func:`collection_config` creates: its properties with the server's
    defaults filled in (filterable, searchable, ``word`` tokenization)."""
    properties = []
    for prop in collection_config(WeaviateOptions(collection=name))["properties"]:
        sent = prop._to_dict()
        properties.append({
            "name": sent["name"], "dataType": sent["dataType"],
            "indexFilterable": sent.get("indexFilterable", True),
            "indexSearchable": sent.get("indexSearchable", True),
            "indexRangeFilters": False, "tokenization": sent.get("tokenization", "word")})
    return {
        "class": name, "description": "aieng documents (aieng-weaviate)",
        "invertedIndexConfig": {"bm25": {"b": 0.75, "k1": 1.2}, "cleanupIntervalSeconds": 60,
                                "stopwords": {"additions": None, "preset": "en",
                                              "removals": None},
                                "usingBlockMaxWAND": True},
        "multiTenancyConfig": {"autoTenantActivation": False, "autoTenantCreation": False,
                               "enabled": False},
        "properties": properties,
        "replicationConfig": {"asyncEnabled": False, "deletionStrategy":
                              "NoAutomatedResolution", "factor": 1},
        "shardingConfig": {"actualCount": 1, "actualVirtualCount": 128, "desiredCount": 1,
                           "desiredVirtualCount": 128, "function": "murmur3", "key": "_id",
                           "strategy": "hash", "virtualPerPhysical": 128},
        "vectorConfig": {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw",
                                     "vectorIndexConfig": copy.deepcopy(_HNSW)}},
    }


def _prop(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in schema["properties"] if p["name"] == name)


def _parsed(schema: dict[str, Any]) -> CollectionConfig:
    # weaviate-client's own parser of the server's answer (what config.get() returns).
    return _collection_config_from_json(copy.deepcopy(schema))


def test_the_collection_the_store_creates_fits() -> None:
    """The store's own collection, as the server reports it, passes the check."""
    assert collection_mismatches(_parsed(server_schema())) == []


def _extras(schema: dict[str, Any]) -> None:
    schema["properties"].append({"name": "source", "dataType": ["int"],
                                 "indexFilterable": True, "indexSearchable": False,
                                 "indexRangeFilters": True})
    schema["vectorConfig"]["openai"] = {
        "vectorizer": {"text2vec-openai": {"model": "text-embedding-3-small",
                                           "properties": ["text"]}},
        "vectorIndexType": "flat", "vectorIndexConfig": {"distance": "dot",
                                                         "vectorCacheMaxObjects": 10}}
    schema["vectorConfig"]["default"]["vectorIndexConfig"]["bq"] = {"enabled": True}
    schema["invertedIndexConfig"]["bm25"] = {"b": 0.5, "k1": 1.5}
    _prop(schema, "text")["tokenization"] = "trigram"
    _prop(schema, "doc_json")["indexSearchable"] = True
    _prop(schema, "title")["tokenization"] = "lowercase"


def test_compatible_extras_are_fine() -> None:
    """More properties, another named vector with a vectorizer, a quantizer, BM25 tuning,
    another word-level tokenization of the searched text: all still fit."""
    schema = server_schema()
    _extras(schema)
    assert collection_mismatches(_parsed(schema)) == []


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        schema["properties"] = [p for p in schema["properties"] if p["name"] != name]
    return change


def _set(name: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        _prop(schema, name).update(values)
    return change


def _vector(**values: Any) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        schema["vectorConfig"]["default"]["vectorIndexConfig"].update(values)
    return change


def _legacy(schema: dict[str, Any]) -> None:
    del schema["vectorConfig"]
    schema.update(vectorizer="none", vectorIndexType="hnsw",
                  vectorIndexConfig=copy.deepcopy(_HNSW))


def _renamed(schema: dict[str, Any]) -> None:
    schema["vectorConfig"]["main"] = schema["vectorConfig"].pop("default")


def _vectorizer(schema: dict[str, Any]) -> None:
    schema["vectorConfig"]["default"]["vectorizer"] = {
        "text2vec-openai": {"model": "text-embedding-3-small"}}


def _reference(schema: dict[str, Any]) -> None:
    _drop("doc_json")(schema)
    schema["properties"].append({"name": "doc_json", "dataType": ["Other"]})


def _tenants(schema: dict[str, Any]) -> None:
    schema["multiTenancyConfig"]["enabled"] = True


def _dropped_index(schema: dict[str, Any]) -> None:
    schema["vectorConfig"]["default"] = {"vectorizer": {"none": {}},
                                         "vectorIndexType": "none"}


MISMATCHES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no meta", _drop("meta"), r"no property 'meta' \(text\[\]; metadata filters"),
    ("no doc_json", _drop("doc_json"), r"no property 'doc_json' \(text; hits are rebuilt"),
    ("no doc_id", _drop("doc_id"), r"no property 'doc_id'"),
    ("meta by word", _set("meta", tokenization="word"),
     r"'meta' is tokenized 'word', not 'field'"),
    ("meta_keys by whitespace", _set("meta_keys", tokenization="whitespace"),
     r"'meta_keys' is tokenized 'whitespace', not 'field'"),
    ("meta is text", _set("meta", dataType=["text"]), r"'meta' is text, not text\[\]"),
    ("text is text[]", _set("text", dataType=["text[]"]), r"'text' is text\[\], not text "),
    ("doc_json is int", _set("doc_json", dataType=["int"], tokenization=None),
     r"'doc_json' is int, not text"),
    ("meta unfilterable", _set("meta_keys", indexFilterable=False),
     r"'meta_keys' is not filterable"),
    ("text unsearchable", _set("text", indexSearchable=False), r"'text' is not searchable"),
    ("title by field", _set("title", tokenization="field"),
     r"'title' is tokenized 'field' \(one term per value"),
    ("meta folds accents", _set("meta", textAnalyzer={"asciiFold": True}),
     r"'meta' folds accents"),
    ("doc_json reference", _reference, r"'doc_json' is a cross-reference"),
    ("legacy vector", _legacy, r"a legacy unnamed vector, not the named vector 'default'"),
    ("no default vector", _renamed, r"no named vector 'default' \(its named vectors: 'main'"),
    ("vectorizer", _vectorizer, r"made by the vectorizer 'text2vec-openai'"),
    ("dot distance", _vector(distance="dot"), r"uses the distance 'dot', not 'cosine'"),
    ("multi-vector", _vector(multivector={"enabled": True, "aggregation": "maxSim"}),
     r"'default' is a multi-vector"),
    ("dropped index", _dropped_index, r"index of its vector 'default' was dropped"),
    ("tenants", _tenants, r"multi-tenancy enabled"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in MISMATCHES],
                         ids=[i for i, _, _ in MISMATCHES])
def test_each_difference_is_named(change: Callable[[dict[str, Any]], None],
                                  message: str) -> None:
    """Each thing the store needs and the collection lacks is one named difference."""
    schema = server_schema()
    change(schema)
    found = collection_mismatches(_parsed(schema))
    assert len(found) == 1, found
    assert re.search(message, found[0]), found


class _Config:
    """Test double of a collection's ``config`` (``_ConfigCollection``): ``get()`` parses
    a server's JSON answer with weaviate-client's own parser, as the real one does."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    def get(self) -> CollectionConfig:
        return _parsed(self.schema)


class _Data:
    """Test double of ``collection.data``: keeps what is inserted."""

    def __init__(self) -> None:
        self.inserted: list[DataObject[Any, Any]] = []

    def insert_many(self, objects: Sequence[DataObject[Any, Any]]) -> BatchObjectReturn:
        self.inserted.extend(objects)
        return BatchObjectReturn()


class _Collections:
    """Test double of ``client.collections`` holding collections as the server's schema
    JSON; ``create`` may fail as the server does when another process created the same
    collection first (422, ``UnexpectedStatusCodeError``)."""

    def __init__(self, schemas: dict[str, dict[str, Any]], racer: dict[str, Any] | None
                 = None) -> None:
        self.schemas, self.racer = schemas, racer
        self.created: list[str] = []
        self.data = _Data()

    def exists(self, name: str) -> bool:
        return name in self.schemas

    def create(self, **kwargs: Any) -> None:
        name = kwargs["name"]
        if self.racer is not None:  # the other worker's collection lands first
            self.schemas[name] = self.racer
            raise UnexpectedStatusCodeError("Create collection", httpx.Response(
                422, json={"error": [{"message": f"class name {name} already exists"}]}))
        self.created.append(name)
        self.schemas[name] = server_schema(name)

    def use(self, name: str) -> Any:
        assert self.exists(name)
        return type("Collection", (), {"config": _Config(self.schemas[name]),
                                       "data": self.data})()


class _Client:
    """Test double of a connected ``weaviate.WeaviateClient``: its ``collections``."""

    def __init__(self, collections: _Collections) -> None:
        self.collections = collections


DOCS = [Document(id="a", text="alpha", metadata={"lang": "en"})]


def _store(collections: _Collections) -> WeaviateStore:
    return WeaviateStore(WeaviateOptions(collection="Docs"),
                         embedder=HashEmbedder(8).aieng_embed, client=_Client(collections))


@pytest.mark.anyio
async def test_a_collection_another_tool_made_is_refused_before_any_write() -> None:
    """A same-named collection with word-tokenized ``meta`` and no ``default`` vector
    fails the first call with one error naming it, both differences and what to do;
    nothing is written and nothing is created."""
    schema = server_schema()
    _set("meta", tokenization="word")(schema)
    _renamed(schema)
    collections = _Collections({"Docs": schema})
    store = _store(collections)
    with pytest.raises(WeaviateCollectionMismatch) as caught:
        await store.aieng_index(DOCS)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith("the Weaviate collection Docs exists but does not fit")
    assert "'meta' is tokenized 'word'" in message and "no named vector 'default'" in message
    assert "`collection` option" in message and "client.collections.delete('Docs')" in message
    assert collections.data.inserted == [] and collections.created == []
    with pytest.raises(WeaviateCollectionMismatch):  # every call, not only the first
        await store.aieng_retrieve(Query("alpha"), 1)


@pytest.mark.anyio
async def test_a_fitting_existing_collection_is_used_as_it_is() -> None:
    """An existing collection that fits (extras included) is written to, not recreated."""
    schema = server_schema()
    _extras(schema)
    collections = _Collections({"Docs": schema})
    assert await _store(collections).aieng_index(DOCS) == 1
    assert collections.created == [] and len(collections.data.inserted) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fits", [True, False])
async def test_a_collection_another_process_creates_first_is_checked(fits: bool) -> None:
    """Two workers opening at once: the one whose ``create`` loses the race (422: the
    collection exists now) goes on with the other's collection, checked like any other."""
    racer = server_schema()
    if not fits:
        _set("meta", tokenization="word")(racer)
    collections = _Collections({}, racer=racer)
    store = _store(collections)
    if fits:
        assert await store.aieng_index(DOCS) == 1
    else:
        with pytest.raises(WeaviateCollectionMismatch, match="'meta' is tokenized 'word'"):
            await store.aieng_index(DOCS)
        assert collections.data.inserted == []


@pytest.mark.anyio
async def test_a_failed_create_of_a_missing_collection_is_raised() -> None:
    """A ``create`` that fails while the collection is still missing is the server's
    error, not a check."""
    collections = _Collections({})

    def refuse(**kwargs: Any) -> None:
        raise UnexpectedStatusCodeError("Create collection", httpx.Response(
            403, json={"error": [{"message": "forbidden"}]}))

    collections.create = refuse  # type: ignore[method-assign]
    with pytest.raises(UnexpectedStatusCodeError, match="403"):
        await _store(collections).aieng_index(DOCS)


@pytest.mark.anyio
async def test_a_schema_this_client_cannot_read_is_used_with_a_warning() -> None:
    """A newer server's schema the installed client cannot parse (a tokenization it does
    not know, on an extra property) is not a known mismatch: the store goes on as it did
    before the check, and logs a warning naming the collection and the fix."""
    schema = server_schema()
    schema["properties"].append({"name": "notes", "dataType": ["text"],
                                 "indexFilterable": True, "indexSearchable": True,
                                 "tokenization": "kagome_xx"})
    collections = _Collections({"Docs": schema})
    with structlog.testing.capture_logs() as logs:
        assert await _store(collections).aieng_index(DOCS) == 1
    warning = next(e for e in logs if e["event"] == "weaviate.collection.unchecked")
    assert warning["collection"] == "Docs" and "kagome_xx" in warning["error"]
    assert warning["log_level"] == "warning" and "upgrade weaviate-client" in warning["hint"]


URL = os.environ.get("AIENG_WEAVIATE_URL", "")


@pytest.mark.anyio
@pytest.mark.skipif(not URL, reason="needs a Weaviate server: set AIENG_WEAVIATE_URL "
                                    "(e.g. http://localhost:8080); none can run here")
async def test_against_a_real_server() -> None:
    """The real config API: the store's own collection, reopened by a second store, fits;
    one made by another tool (word-tokenized ``meta``, a vectorizer-less unnamed vector)
    is refused before any write."""
    import weaviate
    from aieng_weaviate._requests import connection_params
    from weaviate.classes.config import DataType, Property

    own, other = f"AiengTest{uuid.uuid4().hex}", f"AiengTest{uuid.uuid4().hex}"
    options = WeaviateOptions(url=URL, collection=own)
    client: Any = weaviate.connect_to_custom(**connection_params(options, os.environ))
    try:
        embed = HashEmbedder(8).aieng_embed
        assert await WeaviateStore(options, embedder=embed, client=client).aieng_index(
            DOCS) == 1
        assert await WeaviateStore(options, embedder=embed, client=client).aieng_index(
            DOCS) == 1
        client.collections.create(name=other, properties=[
            Property(name=name, data_type=dt) for name, dt in [
                ("doc_id", DataType.TEXT), ("title", DataType.TEXT), ("text", DataType.TEXT),
                ("doc_json", DataType.TEXT), ("meta", DataType.TEXT_ARRAY),
                ("meta_keys", DataType.TEXT_ARRAY)]])
        store = WeaviateStore(WeaviateOptions(url=URL, collection=other), embedder=embed,
                              client=client)
        with pytest.raises(WeaviateCollectionMismatch, match="'meta' is tokenized 'word'"):
            await store.aieng_index(DOCS)
        assert len(client.collections.use(other)) == 0
    finally:
        client.collections.delete([own, other])
        client.close()
