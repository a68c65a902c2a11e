"""The weaviate store on the big day: large documents split into requests the server
accepts, and limits that say what they are. A stand-in client (no server) that measures
each insert request with weaviate-client's own protobuf encoding, and refuses one over
its gRPC message limit as the server does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aieng_hookspecs.types import Document, Query
from aieng_weaviate import WeaviateOptions, WeaviateStore
from aieng_weaviate._requests import data_objects, object_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from weaviate.classes.data import DataObject
from weaviate.collections.batch.grpc_batch import _BatchGRPC
from weaviate.collections.classes.batch import BatchObjectReturn, _BatchObject
from weaviate.exceptions import WeaviateQueryError
from weaviate.proto.v1 import batch_pb2
from weaviate.util import _ServerVersion

from aieng_core.testing import HashEmbedder

_GRPC = _BatchGRPC(_ServerVersion(1, 33, 0), None, None)


def request_bytes(objects: Sequence[DataObject[Any, Any]]) -> int:
    """The size of the gRPC request weaviate-client's ``insert_many`` makes of ``objects``."""
    request = batch_pb2.BatchObjectsRequest(objects=[
        _GRPC.grpc_object(_BatchObject(collection="Docs", vector=obj.vector,
                                       uuid=str(obj.uuid), properties=obj.properties,
                                       tenant=None, references=None, index=i))
        for i, obj in enumerate(objects)])
    return int(request.ByteSize())


class _Connection:
    """Stands in for the client's connection: what the server told it when it connected."""

    def __init__(self, limit: int) -> None:
        self._grpc_max_msg_size = limit


class _Data:
    """Stands in for ``collection.data``: refuses a request over the limit, as the server
    does (gRPC's RESOURCE_EXHAUSTED), and records each request's size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.requests: list[int] = []
        self.stored: set[str] = set()

    def insert_many(self, objects: Sequence[DataObject[Any, Any]]) -> BatchObjectReturn:
        size = request_bytes(objects)
        if size > self.limit:
            raise RuntimeError(f"RESOURCE_EXHAUSTED: received message larger than max "
                               f"({size} vs. {self.limit})")
        self.requests.append(size)
        self.stored.update(str(obj.uuid) for obj in objects)
        return BatchObjectReturn()


class _Query:
    """Stands in for ``collection.query``: refuses a limit over its maximum, as the server
    does (QUERY_MAXIMUM_RESULTS), in the client's own error."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum

    def hybrid(self, **kwargs: Any) -> Any:
        if kwargs["limit"] > self.maximum:
            raise WeaviateQueryError("explorer: get class: vector search: object vector "
                                     "search at index docs: query maximum results exceeded",
                                     "GRPC search")
        raise AssertionError("not reached in these tests")


class _Collection:
    def __init__(self, limit: int, maximum: int) -> None:
        self._connection = _Connection(limit)
        self.data = _Data(limit)
        self.query = _Query(maximum)


class _Collections:
    def __init__(self, collection: _Collection) -> None:
        self.collection = collection

    def exists(self, name: str) -> bool:
        return False

    def create(self, **kwargs: Any) -> None:
        pass

    def use(self, name: str) -> _Collection:
        return self.collection


class _Client:
    """Stands in for a connected ``weaviate.WeaviateClient``."""

    def __init__(self, limit: int = 104_858_000, maximum: int = 10_000) -> None:
        self.collection = _Collection(limit, maximum)
        self.collections = _Collections(self.collection)

    def close(self) -> None:
        pass


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=300), min_size=1, max_size=4),
       metadata=st.dictionaries(st.text(max_size=8),
                                st.one_of(st.none(), st.integers(), st.text(max_size=20)),
                                max_size=4),
       dim=st.integers(min_value=1, max_value=64))
def test_object_bytes_is_at_least_what_the_client_sends(
        texts: list[str], metadata: dict[str, Any], dim: int) -> None:
    """The store's estimate of an object's size is never below the size weaviate-client's
    own encoding gives it (surrogates, any script, metadata terms, the vector)."""
    docs = [Document(id=f"d{i}-{text[:5]}", text=text or "x", title=text[:7],
                     metadata=metadata) for i, text in enumerate(texts)]
    objects = data_objects(docs, [[0.5] * dim for _ in docs])
    for obj in objects:
        assert object_bytes(obj) >= request_bytes([obj])
    assert sum(map(object_bytes, objects)) >= request_bytes(objects)


@pytest.mark.anyio
async def test_large_documents_go_in_requests_the_server_accepts() -> None:
    """A batch whose documents together pass the server's gRPC message limit is sent as
    several requests under it: it used to be one request, which the server refuses, so
    ``batch_size`` documents of a few MB each (100 of 2 MB: 400 MB with the text sent
    twice) failed every index call."""
    limit = 200_000
    client = _Client(limit=limit)
    store = WeaviateStore(WeaviateOptions(collection="Docs", batch_size=100),
                          embedder=HashEmbedder(8).aieng_embed, client=client)
    docs = [Document(id=f"d{i}", text=f"doc {i} " + "word " * 6_000) for i in range(40)]
    assert await store.aieng_index(docs) == 40
    data = client.collection.data
    assert len(data.stored) == 40
    assert max(data.requests) <= limit
    assert len(data.requests) <= 2 * sum(data.requests) // limit + 1  # no request per doc


@pytest.mark.anyio
async def test_a_document_over_the_message_limit_is_refused_by_name() -> None:
    """One document larger than the server's gRPC message limit fails the call naming it,
    its size and the server's setting, before its batch is sent (it was the server's
    RESOURCE_EXHAUSTED, naming no document)."""
    client = _Client(limit=100_000)
    store = WeaviateStore(WeaviateOptions(collection="Docs"),
                          embedder=HashEmbedder(8).aieng_embed, client=client)
    docs = [Document(id="small", text="a few words"),
            Document(id="huge", text="word " * 20_000)]
    with pytest.raises(ValueError, match=r"'huge'.*100,000 bytes.*GRPC_MAX_MESSAGE_SIZE"):
        await store.aieng_index(docs)
    assert client.collection.data.requests == []


@pytest.mark.anyio
async def test_k_over_the_servers_maximum_results_names_the_setting() -> None:
    """A query asking for more hits than the server's QUERY_MAXIMUM_RESULTS fails saying
    so, with the setting to raise, and the server's error as its cause."""
    client = _Client(maximum=10_000)
    store = WeaviateStore(WeaviateOptions(collection="Docs"),
                          embedder=HashEmbedder(8).aieng_embed, client=client)
    with pytest.raises(ValueError, match=r"k = 20000 .*QUERY_MAXIMUM_RESULTS") as caught:
        await store.aieng_retrieve(Query("rank fusion"), 20_000)
    assert isinstance(caught.value.__cause__, WeaviateQueryError)

