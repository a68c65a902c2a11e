"""Pure functions from aieng values to weaviate-client request objects, and back.

Everything the store sends (collection config, insert batches, filters, query arguments,
connection parameters) is built here without a server, so the tests assert on the very
weaviate-client objects a server would receive. weaviate is imported inside each function:
importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
from aieng_hookspecs.types import Document, Hit

from ._options import URL_ENV, WeaviateOptions

if TYPE_CHECKING:
    from weaviate.classes.data import DataObject
    from weaviate.collections.classes.filters import _Filters

__all__ = [
    "SOURCE",
    "VECTOR_NAME",
    "SearchRequest",
    "canonical_json",
    "collection_config",
    "connection_params",
    "data_objects",
    "delete_filter",
    "hits_from",
    "metadata_terms",
    "object_uuid",
    "request_spans",
    "search_request",
    "where",
]

#: The ``source`` of the hits this store returns.
SOURCE = "weaviate"
#: The collection's one named vector (self-provided: no vectorizer).
VECTOR_NAME = "default"
#: The properties BM25 (and hybrid's keyword half) search.
SEARCHED = ("title", "text")
#: The property every hit is rebuilt from: the whole document as JSON.
STORED = "doc_json"

# Namespace of the documents' UUIDs: uuid5(namespace, document id), so re-indexing a
# document overwrites its object (Weaviate batches are upserts by UUID).
_NAMESPACE = uuid.UUID("6f0c3b9e-5a4d-5d8e-9b1a-3e7c2f4a1d0b")


def object_uuid(doc_id: str) -> str:
    """The Weaviate object UUID of a document id: deterministic (uuid5), so upserts work.

    The id's UTF-8 bytes are hashed; a lone surrogate (a file name decoded with
    ``surrogateescape``) keeps its own three bytes (``surrogatepass``), which no valid
    string encodes to, so distinct ids keep distinct UUIDs.
    """
    # uuid.uuid5 itself, which takes no bytes before Python 3.12.
    name = doc_id.encode("utf-8", "surrogatepass")
    digest = hashlib.sha1(_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _searchable(text: str) -> str:
    # gRPC / protobuf refuse lone surrogates; the exact text lives in doc_json.
    return text.encode("utf-8", "replace").decode("utf-8")


def _normal(value: Any) -> Any:
    """A JSON value with one spelling per JSON-equal value (``1.0`` → ``1``)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """One string per JSON value as JSON compares them: ``true`` is not ``1``, ``1`` is
    ``1.0``, key order does not matter, a tuple is a list."""
    return json.dumps(_normal(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)


def _key_term(key: str) -> str:
    """A metadata key as gRPC can carry it: itself, or, when it holds a lone surrogate
    (UTF-8 cannot encode it and protobuf refuses it), its JSON string (``"\\udc80"``),
    so that distinct keys keep distinct terms."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(key, ensure_ascii=True)
    return key


def metadata_terms(metadata: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The ``meta`` and ``meta_keys`` property values of a document's metadata.

    ``meta`` holds ``key=<canonical JSON>`` per key (field-tokenized, so a filter matches
    whole terms only); ``meta_keys`` the keys whose value is not null. A key with a lone
    surrogate is written as its JSON string (:func:`where` looks it up so too).
    """
    terms = [f"{_key_term(key)}={canonical_json(value)}"
             for key, value in sorted(metadata.items())]
    keys = sorted(_key_term(key) for key, value in metadata.items() if value is not None)
    return terms, keys


def collection_config(options: WeaviateOptions) -> dict[str, Any]:
    """Keyword arguments of ``client.collections.create`` for the store's collection.

    No vectorizer (one self-provided named vector): the pipeline's embedder makes the
    vectors. ``title`` and ``text`` are BM25-searchable; ``doc_json`` is stored only;
    ``meta`` / ``meta_keys`` are field-tokenized for exact metadata filters.
    """
    from weaviate.classes.config import Configure, DataType, Property, Tokenization

    return {
        "name": options.collection,
        "description": "aieng documents (aieng-weaviate)",
        "vector_config": Configure.Vectors.self_provided(name=VECTOR_NAME),
        "properties": [
            Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                     index_searchable=False),
            Property(name="title", data_type=DataType.TEXT),
            Property(name="text", data_type=DataType.TEXT),
            Property(name=STORED, data_type=DataType.TEXT, index_filterable=False,
                     index_searchable=False),
            Property(name="meta", data_type=DataType.TEXT_ARRAY,
                     tokenization=Tokenization.FIELD, index_searchable=False),
            Property(name="meta_keys", data_type=DataType.TEXT_ARRAY,
                     tokenization=Tokenization.FIELD, index_searchable=False),
        ],
    }


def data_objects(documents: Sequence[Document],
                 vectors: Sequence[Sequence[float]] | None) -> list[DataObject[Any, Any]]:
    """The insert batch of ``documents`` (with their ``vectors``, in order, when given).

    :raises ValueError: when the vectors do not match the documents one to one, or one
        holds NaN or an infinity (Weaviate's gRPC batches store those, and they corrupt
        its HNSW index without a word).
    """
    from weaviate.classes.data import DataObject

    if vectors is not None and len(vectors) != len(documents):
        raise ValueError(f"{len(vectors)} vectors for {len(documents)} documents")
    for position, doc in enumerate(documents):
        if vectors is not None and not all(math.isfinite(x) for x in vectors[position]):
            raise ValueError(f"the embedder returned a vector with NaN or infinite values "
                             f"for document {doc.id!r}")
    batch: list[DataObject[Any, Any]] = []
    for position, doc in enumerate(documents):
        meta, meta_keys = metadata_terms(doc.metadata)
        properties = {
            "doc_id": _searchable(doc.id),
            "title": _searchable(doc.title),
            "text": _searchable(doc.text),
            STORED: json.dumps({"id": doc.id, "text": doc.text, "title": doc.title,
                                "metadata": doc.metadata}, ensure_ascii=True),
            "meta": meta,
            "meta_keys": meta_keys,
        }
        vector = None if vectors is None else {
            VECTOR_NAME: [float(x) for x in vectors[position]]}
        batch.append(DataObject(properties=properties, uuid=object_uuid(doc.id),
                                vector=vector))
    return batch


#: The most bytes one gRPC request may hold when the connection does not say: the
#: default of weaviate-client and of the server's ``GRPC_MAX_MESSAGE_SIZE`` (~100 MB).
GRPC_MAX_MESSAGE_BYTES = 104_858_000
# Room per object, and per property value, for what object_bytes does not count (the
# UUID, the collection's and the properties' names, protobuf's tags and lengths).
_OBJECT_OVERHEAD, _VALUE_OVERHEAD = 512, 16


def _utf8_bytes(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8", "replace"))


def object_bytes(obj: DataObject[Any, Any]) -> int:
    """An upper estimate of the bytes ``obj`` (of :func:`data_objects`) takes in a gRPC
    insert request: its property values as UTF-8, its vectors as float32."""
    size = _OBJECT_OVERHEAD
    for name, value in (obj.properties or {}).items():
        values = value if isinstance(value, list) else [value]
        size += _utf8_bytes(name) + sum(_utf8_bytes(str(item)) + _VALUE_OVERHEAD
                                        for item in values)
    vector = obj.vector
    if isinstance(vector, Mapping):
        size += sum(4 * len(values) + _VALUE_OVERHEAD for values in vector.values())
    return size


def request_spans(documents: Sequence[Document], objects: Sequence[DataObject[Any, Any]],
                  limit: int) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` slices of ``objects`` (those of ``documents``, in order) to send
    as one insert request each: as many objects as fit in ``limit`` bytes (the server's
    gRPC message limit), at least one.

    weaviate-client's ``insert_many`` sends its objects in one request, and a server
    refuses one larger than its limit: ``batch_size`` documents of a few MB each (every
    text is sent twice, searchable and in ``doc_json``) would fail the whole batch.

    :raises ValueError: naming the document that alone exceeds ``limit``, before anything
        is sent.
    """
    sizes = [object_bytes(obj) for obj in objects]
    for doc, size in zip(documents, sizes, strict=True):
        if size > limit:
            raise ValueError(
                f"document {doc.id!r} takes about {size:,} bytes in an insert request (its "
                f"text is sent twice: searchable, and in {STORED}), over the {limit:,} bytes "
                "the Weaviate server accepts in one gRPC message (its GRPC_MAX_MESSAGE_SIZE "
                "setting); split it into chunks (a chunker in the pipeline), or raise that "
                "setting on the server; nothing of its batch was sent (earlier batches of "
                "the call were written)")
    start, total = 0, 0
    for end, size in enumerate(sizes):
        if total + size > limit and end > start:
            yield start, end
            start, total = end, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def where(filters: Mapping[str, Any]) -> _Filters | None:
    """The Weaviate filter of metadata equality filters (``Query.filters``), or ``None``.

    ``{key: value}`` matches the term ``key=<canonical JSON of value>`` of ``meta``, so
    equality is JSON's (booleans are no numbers, ``1 == 1.0``, lists and objects compare
    whole). ``{key: None}`` matches a null or missing key, as in the kernel's ``memory``
    retriever: no non-null value under ``meta_keys``.
    """
    from weaviate.classes.query import Filter

    parts: list[_Filters] = []
    for key, value in sorted(filters.items()):
        if value is None:
            parts.append(Filter.by_property("meta_keys").contains_none([_key_term(key)]))
        else:
            parts.append(Filter.by_property("meta").contains_any(
                [f"{_key_term(key)}={canonical_json(value)}"]))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Filter.all_of(parts)


def delete_filter(ids: Sequence[str]) -> _Filters:
    """The filter of ``delete_many`` deleting the documents ``ids``."""
    from weaviate.classes.query import Filter

    return Filter.by_id().contains_any([object_uuid(doc_id) for doc_id in ids])


@attrs.frozen
class SearchRequest:
    """One query: the ``collection.query`` method to call and its keyword arguments."""

    method: Literal["bm25", "near_vector", "hybrid"]
    kwargs: dict[str, Any]


def search_request(options: WeaviateOptions, text: str, vector: Sequence[float] | None,
                   k: int, filters: Mapping[str, Any]) -> SearchRequest | None:
    """The request answering ``text`` under the options' ``mode``; ``None``: no search
    (a vector mode without a usable vector).

    A zero (or absent) query vector has no direction: ``hybrid`` then runs BM25 alone and
    ``vector`` returns nothing.
    """
    from weaviate.classes.query import HybridFusion, MetadataQuery

    usable = vector is not None and any(x != 0 for x in vector) and all(
        math.isfinite(x) for x in vector)
    common: dict[str, Any] = {"limit": k, "filters": where(filters),
                              "return_properties": [STORED]}
    if options.mode == "bm25" or (options.mode == "hybrid" and not usable):
        return SearchRequest("bm25", {"query": _searchable(text),
                                      "query_properties": list(SEARCHED),
                                      "return_metadata": MetadataQuery(score=True),
                                      **common})
    if not usable or vector is None:
        return None
    as_floats = [float(x) for x in vector]
    if options.mode == "vector":
        return SearchRequest("near_vector", {"near_vector": as_floats,
                                             "target_vector": VECTOR_NAME,
                                             "return_metadata": MetadataQuery(distance=True),
                                             **common})
    fusion = (HybridFusion.RELATIVE_SCORE if options.fusion == "relative_score"
              else HybridFusion.RANKED)
    return SearchRequest("hybrid", {"query": _searchable(text), "vector": as_floats,
                                    "alpha": float(options.alpha), "fusion_type": fusion,
                                    "query_properties": list(SEARCHED),
                                    "target_vector": VECTOR_NAME,
                                    "return_metadata": MetadataQuery(score=True), **common})


def _score(method: str, metadata: Any) -> float:
    if method == "near_vector":
        distance = getattr(metadata, "distance", None)
        value = 1.0 - float(distance) if distance is not None else 0.0  # cosine similarity
    else:
        score = getattr(metadata, "score", None)
        value = float(score) if score is not None else 0.0
    return value if math.isfinite(value) else 0.0


def _stored_document(obj: Any) -> Document:
    """The document a returned object holds in ``doc_json``.

    :raises ValueError: naming the object and its collection, when it holds none (another
        tool wrote it into the same collection).
    """
    stored: Any = (obj.properties or {}).get(STORED)
    try:
        value = json.loads(stored) if isinstance(stored, str) else None
        if isinstance(value, dict):
            return Document(id=value["id"], text=value["text"],
                            title=value.get("title", ""),
                            metadata=value.get("metadata") or {})
    except (ValueError, KeyError, TypeError):
        pass
    raise ValueError(
        f"object {obj.uuid} of the Weaviate collection {obj.collection} has no document "
        f"the weaviate component wrote (its {STORED} property is "
        f"{'missing' if stored is None else 'not one'}): was it written by another tool? "
        f"Give the component a collection of its own (its `collection` option)")


def hits_from(method: str, objects: Sequence[Any]) -> list[Hit]:
    """The hits of a query's returned objects (``QueryReturn.objects``), ranked 1..n.

    Scores are the query metadata's: ``score`` for BM25 and hybrid, ``1 - distance``
    (cosine similarity) for ``near_vector``. Hits are sorted by score, then document id
    (Python string order), as the ``vectors`` and ``bm25`` stores rank them: the server
    returns equal scores in insertion order, which re-indexing changes. Which tied
    objects make the server's top ``limit`` is still the server's choice.
    """
    scored: list[tuple[Document, float]] = []
    seen: set[str] = set()
    for obj in objects:
        doc = _stored_document(obj)
        if doc.id in seen:
            continue
        seen.add(doc.id)
        scored.append((doc, _score(method, obj.metadata)))
    scored.sort(key=lambda pair: (-pair[1], pair[0].id))
    return [Hit(document=doc, score=score, rank=rank, source=SOURCE)
            for rank, (doc, score) in enumerate(scored, start=1)]


def connection_params(options: WeaviateOptions,
                      environ: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of ``weaviate.connect_to_custom`` for the options.

    :raises LookupError: when neither ``url`` nor ``AIENG_WEAVIATE_URL`` names a server, or
        ``api_key_env`` names an unset variable.
    """
    from urllib.parse import urlsplit

    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    url = options.url or environ.get(URL_ENV, "")
    if not url:
        raise LookupError(f"no Weaviate server: set the weaviate component's `url` option "
                          f"or the environment variable {URL_ENV} (http://host:8080)")
    WeaviateOptions(url=url)  # the environment's URL gets the option's validation
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    if ":" in host:  # IPv6: the client writes f"{host}:{port}" for HTTP and gRPC alike
        host = f"[{host}]"
    auth = None
    if options.api_key_env:
        key = environ.get(options.api_key_env, "")
        if not key:
            raise LookupError(f"the weaviate component's api_key_env names "
                              f"{options.api_key_env}, which is not set")
        auth = Auth.api_key(key)
    timeout = options.timeout_s
    return {
        "http_host": host, "http_port": parts.port or (443 if secure else 80),
        "http_secure": secure, "grpc_host": host, "grpc_port": options.grpc_port,
        "grpc_secure": secure, "auth_credentials": auth,
        "additional_config": AdditionalConfig(
            timeout=Timeout(init=min(timeout, 30), query=timeout, insert=timeout)),
    }
