"""The weaviate store's requests, asserted on weaviate-client's own objects (no server)."""

from __future__ import annotations

import json
import math
import uuid

import httpx
import pytest
from aieng_hookspecs.types import Document, Hit
from aieng_weaviate import WeaviateOptions
from aieng_weaviate._requests import (
    STORED,
    VECTOR_NAME,
    canonical_json,
    collection_config,
    connection_params,
    data_objects,
    delete_filter,
    hits_from,
    object_uuid,
    search_request,
    where,
)
from hypothesis import given
from hypothesis import strategies as st
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.collections.classes.filters import _FilterAnd, _FilterValue, _Operator
from weaviate.collections.classes.internal import MetadataReturn, Object
from weaviate.proto.v1 import base_pb2

from aieng_core.testing import strategies as aist


def test_object_uuid_is_deterministic_uuid5() -> None:
    """A document id maps to one version-5 UUID, the same every time, distinct per id."""
    first = object_uuid("doc-1")
    assert first == object_uuid("doc-1") != object_uuid("doc-2")
    assert uuid.UUID(first).version == 5


def test_collection_config_has_no_vectorizer_and_the_properties() -> None:
    """The collection takes self-provided vectors and declares every property it uses."""
    config = collection_config(WeaviateOptions(collection="Docs"))
    assert config["name"] == "Docs"
    assert config["vector_config"] == Configure.Vectors.self_provided(name=VECTOR_NAME)
    assert config["vector_config"].vectorizer == Configure.Vectorizer.none()
    props = {p.name: p for p in config["properties"]}
    assert props["text"] == Property(name="text", data_type=DataType.TEXT)
    assert props["title"] == Property(name="title", data_type=DataType.TEXT)
    assert props["meta"] == Property(name="meta", data_type=DataType.TEXT_ARRAY,
                                     tokenization=Tokenization.FIELD, index_searchable=False)
    assert props[STORED].indexFilterable is False and props[STORED].indexSearchable is False
    assert props["doc_id"].tokenization == Tokenization.FIELD


def test_data_objects_carry_uuid_vector_and_exact_document() -> None:
    """Each document becomes a DataObject with its uuid5, its named vector, and a JSON copy
    from which the exact document (lone surrogates included) is rebuilt."""
    docs = [Document(id="a", text="hello \udc80 world", title="T", metadata={"lang": "en"}),
            Document(id="b", text="bye")]
    batch = data_objects(docs, [[1, 0], [0.5, 0.5]])
    assert all(isinstance(obj, DataObject) for obj in batch)
    assert batch[0].uuid == object_uuid("a") and batch[1].uuid == object_uuid("b")
    assert batch[0].vector == {VECTOR_NAME: [1.0, 0.0]}
    props = batch[0].properties
    assert props["text"] == "hello ? world"  # what gRPC can carry
    assert props["meta"] == ['lang="en"'] and props["meta_keys"] == ["lang"]
    assert json.loads(props[STORED])["text"] == docs[0].text
    with pytest.raises(ValueError, match="1 vectors for 2 documents"):
        data_objects(docs, [[1.0]])


@given(st.text())
def test_object_uuid_of_a_valid_id_is_uuid5(doc_id: str) -> None:
    """Valid ids keep the UUIDs ``uuid.uuid5`` gives them (existing collections)."""
    namespace = uuid.UUID("6f0c3b9e-5a4d-5d8e-9b1a-3e7c2f4a1d0b")
    assert object_uuid(doc_id) == str(uuid.uuid5(namespace, doc_id))


#: Any code point, lone surrogates included (``st.text()`` leaves them out).
ANY_CHARACTER = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)


@given(st.sets(st.text(ANY_CHARACTER, max_size=6), min_size=2, max_size=30))
def test_distinct_ids_get_distinct_version_5_uuids(ids: set[str]) -> None:
    """Any distinct ids (lone surrogates, NUL, the empty id included) get distinct UUIDs,
    the same on every call: the name hashed is the id's ``surrogatepass`` bytes, which no
    other string shares."""
    uuids = {doc_id: object_uuid(doc_id) for doc_id in ids}
    assert len(set(uuids.values())) == len(ids)
    assert all(object_uuid(doc_id) == made for doc_id, made in uuids.items())
    assert all(uuid.UUID(made).version == 5 for made in uuids.values())


def _carried(values: list[str]) -> None:
    # What a batch insert or a filter sends: protobuf strings, which must be UTF-8.
    base_pb2.TextArrayProperties(prop_name="meta", values=values).SerializeToString()


def test_lone_surrogates_in_ids_and_metadata_keys_can_be_sent() -> None:
    """A document id or metadata key with a lone surrogate (a file name decoded with
    ``surrogateescape``) gets a UUID, terms gRPC can carry and filters that find it; two
    such keys or ids stay distinct."""
    one, two = "k" + chr(0xDC80), "k" + chr(0xDC81)  # two keys, two lone surrogates
    doc = Document(id="f" + chr(0xDC80), text="x", metadata={one: 1, two: None})
    [obj] = data_objects([doc], None)
    assert uuid.UUID(object_uuid(doc.id)).version == 5
    assert object_uuid(doc.id) != object_uuid("f" + chr(0xDC81)) != object_uuid("f?")
    props = obj.properties
    _carried(props["meta"])
    _carried(props["meta_keys"])
    found, other, null = where({one: 1}), where({two: 1}), where({two: None})
    assert isinstance(found, _FilterValue) and isinstance(other, _FilterValue)
    assert isinstance(null, _FilterValue)
    _carried([*found.value, *other.value, *null.value])
    assert found.value[0] in props["meta"] and other.value[0] not in props["meta"]
    assert null.value[0] not in props["meta_keys"]  # the null key matches {two: None}
    assert where({one: None}).value[0] in props["meta_keys"]  # type: ignore[union-attr]
    delete = delete_filter([doc.id])
    assert delete.value == [object_uuid(doc.id)]  # type: ignore[union-attr]


def test_where_builds_contains_any_on_canonical_terms() -> None:
    """An equality filter is a ContainsAny of one field-tokenized term on ``meta``."""
    built = where({"lang": "en"})
    assert isinstance(built, _FilterValue)
    assert built.target == "meta" and built.operator == _Operator.CONTAINS_ANY
    assert built.value == ['lang="en"']
    assert vars(built) == vars(Filter.by_property("meta").contains_any(['lang="en"']))
    assert where({}) is None


def test_where_keeps_json_equality() -> None:
    """Booleans are not numbers, 1 equals 1.0, key order and tuple-vs-list do not matter."""
    assert canonical_json(True) != canonical_json(1)
    assert canonical_json(1) == canonical_json(1.0)
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": (1.0, 2), "b": 1})
    doc_terms = data_objects([Document(id="x", text="", metadata={"n": 1.0, "flag": True})],
                             None)[0].properties["meta"]
    n_filter, flag_filter = where({"n": 1}), where({"flag": True})
    assert isinstance(n_filter, _FilterValue) and isinstance(flag_filter, _FilterValue)
    assert n_filter.value[0] in doc_terms and flag_filter.value[0] in doc_terms
    one_filter = where({"flag": 1})
    assert isinstance(one_filter, _FilterValue) and one_filter.value[0] not in doc_terms


def test_where_null_and_several_keys() -> None:
    """``None`` matches a missing or null key (no non-null value); keys are ANDed."""
    null = where({"lang": None})
    assert isinstance(null, _FilterValue)
    assert null.target == "meta_keys" and null.operator == _Operator.CONTAINS_NONE
    assert null.value == ["lang"]
    both = where({"lang": "en", "year": 2024})
    assert isinstance(both, _FilterAnd) and len(both.filters) == 2


def test_delete_filter_targets_the_uuids() -> None:
    """Deleting ids is one ContainsAny on the object id of their uuid5s."""
    built = delete_filter(["a", "b"])
    assert isinstance(built, _FilterValue) and built.operator == _Operator.CONTAINS_ANY
    assert built.target == "_id" and built.value == [object_uuid("a"), object_uuid("b")]


def test_bm25_request() -> None:
    """``bm25`` mode asks for BM25 over title and text with the score in the metadata."""
    request = search_request(WeaviateOptions(mode="bm25"), "ranking fusion", None, 5,
                             {"lang": "en"})
    assert request is not None and request.method == "bm25"
    kwargs = request.kwargs
    assert kwargs["query"] == "ranking fusion" and kwargs["limit"] == 5
    assert kwargs["query_properties"] == ["title", "text"]
    assert kwargs["return_metadata"] == MetadataQuery(score=True)
    assert kwargs["return_properties"] == [STORED]
    assert vars(kwargs["filters"]) == vars(where({"lang": "en"}))


def test_vector_request() -> None:
    """``vector`` mode is a near_vector on the named vector, returning the distance; a zero
    vector asks nothing."""
    options = WeaviateOptions(mode="vector")
    request = search_request(options, "q", [0.0, 1.0], 3, {})
    assert request is not None and request.method == "near_vector"
    assert request.kwargs["near_vector"] == [0.0, 1.0]
    assert request.kwargs["target_vector"] == VECTOR_NAME
    assert request.kwargs["return_metadata"] == MetadataQuery(distance=True)
    assert request.kwargs["filters"] is None
    assert search_request(options, "q", [0.0, 0.0], 3, {}) is None


def test_hybrid_request() -> None:
    """``hybrid`` passes the query text, its vector, alpha and the fusion; without a usable
    vector it runs BM25 alone."""
    options = WeaviateOptions(mode="hybrid", alpha=0.25, fusion="ranked")
    request = search_request(options, "q", [1.0, 2.0], 4, {})
    assert request is not None and request.method == "hybrid"
    assert request.kwargs["alpha"] == 0.25 and request.kwargs["vector"] == [1.0, 2.0]
    assert request.kwargs["fusion_type"] is HybridFusion.RANKED
    assert request.kwargs["return_metadata"] == MetadataQuery(score=True)
    relative = search_request(WeaviateOptions(), "q", [1.0], 4, {})
    assert relative is not None
    assert relative.kwargs["fusion_type"] is HybridFusion.RELATIVE_SCORE
    fallback = search_request(options, "q", [0.0, 0.0], 4, {})
    assert fallback is not None and fallback.method == "bm25"


def _object(doc: Document, *, score: float | None = None,
            distance: float | None = None) -> Object[dict[str, str], None]:
    props = data_objects([doc], None)[0].properties
    return Object(uuid=uuid.UUID(object_uuid(doc.id)),
                  metadata=MetadataReturn(score=score, distance=distance),
                  properties={STORED: props[STORED]}, references=None, vector={},
                  collection="Docs")


def test_hits_from_scores_and_documents() -> None:
    """Returned objects become ranked hits with the query metadata's score (BM25/hybrid)
    or cosine similarity ``1 - distance`` (near_vector), and the exact documents."""
    a = Document(id="a", text="alpha \udc80", metadata={"k": [1, 2]})
    b = Document(id="b", text="beta", title="B")
    hits = hits_from("bm25", [_object(a, score=2.5), _object(b, score=1.0)])
    assert hits == [Hit(document=a, score=2.5, rank=1, source="weaviate"),
                    Hit(document=b, score=1.0, rank=2, source="weaviate")]
    near = hits_from("near_vector", [_object(b, distance=0.1), _object(a, distance=0.4)])
    assert [h.document.id for h in near] == ["b", "a"]
    assert near[0].score == pytest.approx(0.9) and near[1].score == pytest.approx(0.6)
    # A missing or non-finite score reads as 0, and order stays non-increasing.
    odd = hits_from("hybrid", [_object(a, score=None), _object(b, score=float("nan")),
                               _object(a, score=3.0)])
    assert [h.score for h in odd] == [0.0, 0.0] and [h.rank for h in odd] == [1, 2]


#: Few values, so that generated hits tie often (None and NaN read as 0, as does -0.0).
_TIED_SCORES = st.sampled_from([None, float("nan"), -0.0, 0.0, 0.25, 0.5, 0.5, 1.0, -1.0])


#: Document ids (not blank: a Document refuses those), lone surrogates included.
_IDS = st.text(ANY_CHARACTER, min_size=1, max_size=4).filter(str.strip)


@given(st.lists(_IDS, unique=True, max_size=12),
       st.data(), st.sampled_from(["bm25", "hybrid", "near_vector"]))
def test_equal_scores_come_in_document_id_order(ids: list[str], data: st.DataObject,
                                                method: str) -> None:
    """Hits are ranked by score, then document id (Python string order), whatever order
    the server returned equal-score objects in (it follows insertion): the same rule as
    the ``vectors`` and ``bm25`` stores. The oracle: a sort of (id, score) pairs computed
    here from the raw metadata."""
    raw = {doc_id: data.draw(_TIED_SCORES) for doc_id in ids}

    def returned(order: list[str]) -> list[Object[dict[str, str], None]]:
        doc = {doc_id: Document(id=doc_id, text="t") for doc_id in order}
        if method == "near_vector":  # a distance d scores 1 - d; None and NaN read as 0
            return [_object(doc[i], distance=None if raw[i] is None else 1.0 - raw[i])
                    for i in order]
        return [_object(doc[i], score=raw[i]) for i in order]

    def expected(value: float | None) -> float:
        return 0.0 if value is None or math.isnan(value) else value

    oracle = sorted(ids, key=lambda i: (-expected(raw[i]), i))
    shuffled = data.draw(st.permutations(ids))
    for order in (ids, shuffled):
        hits = hits_from(method, returned(order))
        assert [h.document.id for h in hits] == oracle
        assert [h.rank for h in hits] == list(range(1, len(ids) + 1))
        assert [h.score for h in hits] == pytest.approx([expected(raw[i]) for i in oracle])


@pytest.mark.parametrize("stored", [None, 42, "", "plain text", "[1, 2]", '{"text": "x"}',
                                    '{"id": 1, "text": "x"}', '{"id": "x", "text": null}'])
def test_an_object_another_tool_wrote_is_named(stored: object) -> None:
    """An object of the collection without the store's ``doc_json`` (another tool wrote
    it: the property absent or null, or other JSON) fails with an error naming the
    collection, the object and what to do, not a KeyError from deep inside."""
    properties: dict[str, object] = {} if stored is None else {STORED: stored}
    obj = Object(uuid=uuid.UUID(int=7), metadata=MetadataReturn(score=1.0),
                 properties=properties, references=None, vector={}, collection="Docs")
    ok = _object(Document(id="a", text="alpha"), score=2.0)
    with pytest.raises(ValueError, match=r"object 00000000-0000-0000-0000-000000000007 of "
                                         r"the Weaviate collection Docs has no document "
                                         r"the weaviate component wrote .*another tool"):
        hits_from("bm25", [ok, obj])


@given(aist.documents())
def test_any_document_round_trips(doc: Document) -> None:
    """Any document written as a DataObject comes back equal from a returned object."""
    [hit] = hits_from("bm25", [_object(doc, score=1.0)])
    assert hit.document == doc and hit.document.metadata == doc.metadata


def test_connection_params_from_env_and_auth() -> None:
    """The URL comes from the option or ``AIENG_WEAVIATE_URL``; an API key from the named
    variable, as the client's own Auth object."""
    params = connection_params(WeaviateOptions(api_key_env="WV_KEY", grpc_port=50052),
                               {"AIENG_WEAVIATE_URL": "https://wv.example:8443",
                                "WV_KEY": "secret"})
    assert params["http_host"] == params["grpc_host"] == "wv.example"
    assert params["http_port"] == 8443 and params["grpc_port"] == 50052
    assert params["http_secure"] is params["grpc_secure"] is True
    assert params["auth_credentials"] == Auth.api_key("secret")
    assert isinstance(params["additional_config"], AdditionalConfig)
    plain = connection_params(WeaviateOptions(url="http://localhost"), {})
    assert plain["http_port"] == 80 and plain["auth_credentials"] is None


@pytest.mark.parametrize(("url", "host", "port"), [
    ("http://[::1]:8080", "[::1]", 8080),
    ("https://[2001:db8::7]", "[2001:db8::7]", 443),
    ("http://[::ffff:127.0.0.1]:8080/", "[::ffff:127.0.0.1]", 8080),
])
def test_connection_params_ipv6(url: str, host: str, port: int) -> None:
    """An IPv6 address in brackets is a valid ``url``, and reaches the client bracketed:
    it writes ``{host}:{port}`` for its HTTP URL and its gRPC target alike."""
    from weaviate.connect.base import ConnectionParams

    params = connection_params(WeaviateOptions(url=url), {})
    assert params["http_host"] == params["grpc_host"] == host
    assert params["http_port"] == port
    made = ConnectionParams.from_params(**{k: v for k, v in params.items()
                                           if k.startswith(("http_", "grpc_"))})
    scheme = "https" if url.startswith("https") else "http"
    assert made._http_url == f"{scheme}://{host}:{port}"
    assert httpx.URL(made._http_url).host == host.strip("[]")
    assert made._grpc_target == f"{host}:50051"


def test_connection_params_errors() -> None:
    """No URL anywhere, a bad URL in the environment, or an unset key variable is an error
    saying what to set."""
    with pytest.raises(LookupError, match="AIENG_WEAVIATE_URL"):
        connection_params(WeaviateOptions(), {})
    with pytest.raises(ValueError, match="url must look like"):
        connection_params(WeaviateOptions(), {"AIENG_WEAVIATE_URL": "localhost:8080"})
    with pytest.raises(LookupError, match="WV_KEY"):
        connection_params(WeaviateOptions(url="http://h:1", api_key_env="WV_KEY"), {})
