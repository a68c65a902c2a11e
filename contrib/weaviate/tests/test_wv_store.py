"""The weaviate store's wiring, with a stand-in client answering weaviate-client's own
return types (no server), its options and its registration."""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pytest
from aieng_hookspecs.types import Document, Query
from aieng_weaviate import WeaviateOptions, WeaviateStore, WeaviateUnavailable
from aieng_weaviate._requests import STORED, object_uuid
from weaviate.classes.data import DataObject
from weaviate.collections.classes.batch import BatchObjectReturn, DeleteManyReturn, ErrorObject
from weaviate.collections.classes.internal import MetadataReturn, Object, QueryReturn

import aieng_weaviate
from aieng_core import ConfigError, Kernel
from aieng_core.testing import HashEmbedder


class _Data:
    def __init__(self, stored: dict[str, DataObject[Any, Any]], refuse: set[str]) -> None:
        self.stored, self.refuse = stored, refuse

    def insert_many(self, objects: Sequence[DataObject[Any, Any]]) -> BatchObjectReturn:
        result = BatchObjectReturn()
        for i, obj in enumerate(objects):
            if obj.properties["doc_id"] in self.refuse:
                result.errors[i] = ErrorObject(message="refused", object_=None)  # type: ignore[arg-type]
                result.has_errors = True
            else:
                self.stored[str(obj.uuid)] = obj
        return result

    def delete_many(self, where: Any) -> DeleteManyReturn[None]:
        gone = [u for u in where.value if self.stored.pop(u, None) is not None]
        return DeleteManyReturn(failed=0, matches=len(gone), objects=None,
                                successful=len(gone))


class _Query:
    def __init__(self, stored: dict[str, DataObject[Any, Any]]) -> None:
        self.stored = stored
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _answer(self, method: str, kwargs: dict[str, Any]) -> QueryReturn[Any, Any]:
        self.calls.append((method, kwargs))
        objs = list(self.stored.values())[:kwargs["limit"]]
        return QueryReturn(objects=[
            Object(uuid=uuid.UUID(str(o.uuid)), metadata=MetadataReturn(score=1.0 / (i + 1),
                                                                        distance=i / 10),
                   properties={STORED: o.properties[STORED]}, references=None, vector={},
                   collection="Docs") for i, o in enumerate(objs)])

    def bm25(self, **kwargs: Any) -> QueryReturn[Any, Any]:
        return self._answer("bm25", kwargs)

    def hybrid(self, **kwargs: Any) -> QueryReturn[Any, Any]:
        return self._answer("hybrid", kwargs)

    def near_vector(self, **kwargs: Any) -> QueryReturn[Any, Any]:
        return self._answer("near_vector", kwargs)


@attrs.define
class _Collection:
    data: _Data
    query: _Query


class _Collections:
    def __init__(self, refuse: set[str]) -> None:
        self.created: list[dict[str, Any]] = []
        self.stored: dict[str, DataObject[Any, Any]] = {}
        self.collection = _Collection(_Data(self.stored, refuse), _Query(self.stored))

    def exists(self, name: str) -> bool:
        return any(c["name"] == name for c in self.created)

    def create(self, **kwargs: Any) -> None:
        self.created.append(kwargs)

    def use(self, name: str) -> _Collection:
        assert self.exists(name)
        return self.collection


class _Client:
    """Stands in for a connected ``weaviate.WeaviateClient``: the calls the store makes."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.collections = _Collections(refuse or set())
        self.closed = False

    def close(self) -> None:
        self.closed = True


DOCS = [Document(id="a", text="reciprocal rank fusion", metadata={"lang": "en"}),
        Document(id="b", text="dense vectors", title="Vectors")]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_index_retrieve_delete_through_the_client() -> None:
    """(Under trio as under asyncio: the client is synchronous, called in worker threads.)
    Open creates the collection once; index writes uuid5 objects with vectors; retrieve
    sends the mode's request and maps scores; delete removes by id."""
    client = _Client()
    embedder = HashEmbedder(8)
    store = WeaviateStore(WeaviateOptions(collection="Docs", mode="hybrid", alpha=0.3),
                          embedder=embedder.aieng_embed, client=client)
    assert await store.aieng_index(DOCS + [DOCS[0]]) == 2
    assert [c["name"] for c in client.collections.created] == ["Docs"]
    assert set(client.collections.stored) == {object_uuid("a"), object_uuid("b")}
    assert client.collections.stored[object_uuid("b")].vector == {
        "default": embedder.vector("Vectors\n\ndense vectors")}
    hits = await store.aieng_retrieve(Query("rank fusion", filters={"lang": "en"}), 1)
    assert [h.document for h in hits] == [DOCS[0]] and hits[0].source == "weaviate"
    method, kwargs = client.collections.collection.query.calls[-1]
    assert method == "hybrid" and kwargs["alpha"] == 0.3 and kwargs["limit"] == 1
    assert kwargs["filters"].value == ['lang="en"']
    assert await store.aieng_retrieve(Query("   "), 3) == []
    assert await store.aieng_delete(["a", "a", "zzz"]) == 1
    assert set(client.collections.stored) == {object_uuid("b")}
    await store.aclose()
    assert client.closed is False  # a given client belongs to its caller


@pytest.mark.anyio
async def test_bm25_mode_embeds_only_to_index() -> None:
    """In ``bm25`` mode a query is not embedded."""
    client, embedder = _Client(), HashEmbedder(8)
    store = WeaviateStore(WeaviateOptions(mode="bm25"), embedder=embedder.aieng_embed,
                          client=client)
    await store.aieng_index(DOCS)
    calls = embedder.calls
    await store.aieng_retrieve(Query("dense"), 2)
    assert embedder.calls == calls
    assert client.collections.collection.query.calls[-1][0] == "bm25"


@pytest.mark.anyio
async def test_refused_documents_fail_the_index_call() -> None:
    """A batch error from Weaviate is raised, naming the document and the server's message."""
    store = WeaviateStore(WeaviateOptions(), embedder=HashEmbedder(4).aieng_embed,
                          client=_Client(refuse={"b"}))
    with pytest.raises(RuntimeError, match=r"refused 1 of 2 .*'b': refused"):
        await store.aieng_index(DOCS)


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
async def test_non_finite_vectors_are_refused_before_sending(bad: float) -> None:
    """An embedder's NaN or infinite vector fails the index call naming the document and
    nothing is written: Weaviate's gRPC batch path stores such vectors and they silently
    corrupt its HNSW index (weaviate/weaviate#11434)."""
    client = _Client()

    def embed(texts: Sequence[str], model: str | None) -> list[list[float]]:
        return [[1.0, bad] if "dense" in text else [1.0, 0.0] for text in texts]

    store = WeaviateStore(WeaviateOptions(), embedder=embed, client=client)
    with pytest.raises(ValueError, match=r"NaN or infinite values for document 'b'"):
        await store.aieng_index(DOCS)
    assert client.collections.stored == {}
    assert await store.aieng_index(DOCS[:1]) == 1


class _TiedQuery(_Query):
    """The stand-in's queries, answering every object (in insertion order, as a server
    returns equal scores) with one score and one distance."""

    def _answer(self, method: str, kwargs: dict[str, Any]) -> QueryReturn[Any, Any]:
        answer = super()._answer(method, kwargs)
        for obj in answer.objects:
            obj.metadata.score, obj.metadata.distance = 0.5, 0.5
        return answer


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
async def test_tied_hits_do_not_follow_insertion_order(mode: str) -> None:
    """Documents indexed in two orders, answered with equal scores in insertion order by
    the stand-in client: the same hits, in document id order, both times."""
    docs = [Document(id=doc_id, text=f"text {doc_id}") for doc_id in ["b", "é", "a", "B", "10"]]
    answers = []
    for order in (docs, docs[::-1]):
        client = _Client()
        client.collections.collection.query = _TiedQuery(client.collections.stored)
        store = WeaviateStore(WeaviateOptions(mode=mode), embedder=HashEmbedder(8).aieng_embed,
                              client=client)
        assert await store.aieng_index(order) == len(docs)
        hits = await store.aieng_retrieve(Query("text"), len(docs))
        answers.append([(h.document.id, h.score, h.rank) for h in hits])
    assert answers[0] == answers[1]
    assert [doc_id for doc_id, _, _ in answers[0]] == ["10", "B", "a", "b", "é"]


@pytest.mark.anyio
async def test_open_without_a_server_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither ``url`` nor ``AIENG_WEAVIATE_URL`` the store fails before connecting."""
    monkeypatch.delenv("AIENG_WEAVIATE_URL", raising=False)
    store = WeaviateStore(WeaviateOptions(), embedder=HashEmbedder(4).aieng_embed)
    with pytest.raises(LookupError, match="AIENG_WEAVIATE_URL"):
        await store.aieng_index(DOCS)


class _NotWeaviate(http.server.BaseHTTPRequestHandler):
    """An HTTP server that is not Weaviate (404 for every path), or with ``meta`` set one
    whose REST half answers (``/v1/meta``) while its gRPC port is closed."""

    meta = b""

    def do_GET(self) -> None:
        body = self.meta if self.path.startswith("/v1/meta") else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Callable[[bytes], str]]:
    """Starts local HTTP servers (:class:`_NotWeaviate` answering ``meta`` at
    ``/v1/meta``, 404 elsewhere) and returns their URLs; stops them after the test."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(meta: bytes) -> str:
        handler = type("Handler", (_NotWeaviate,), {"meta": meta})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def _refused_url() -> str:
    with socket.socket() as sock:  # a port just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("where", ["refused", "not weaviate", "grpc closed", "environment"])
async def test_an_unreachable_server_is_named(where: str,
                                              http_server: Callable[[bytes], str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening against a port where nothing listens, or an HTTP server that is not Weaviate
    (the client's own error then names no URL: "Meta endpoint! Unexpected status code:
    404"), or a server whose gRPC port is closed, fails with one ``WeaviateUnavailable`` (a ``ConnectionError``) naming the URL,
    whether it came from the option or ``AIENG_WEAVIATE_URL``, and the gRPC port."""
    url = {"not weaviate": lambda: http_server(b""),
           "grpc closed": lambda: http_server(b'{"version": "1.33.0", "modules": {}}'),
           }.get(where, _refused_url)()
    monkeypatch.setenv("AIENG_WEAVIATE_URL", url)
    grpc = int(_refused_url().rsplit(":", 1)[1])
    options = WeaviateOptions(url="" if where == "environment" else url, grpc_port=grpc,
                              timeout_s=5)
    store = WeaviateStore(options, embedder=HashEmbedder(4).aieng_embed)
    with pytest.raises(WeaviateUnavailable) as caught:
        await store.aieng_index(DOCS)
    message = str(caught.value)
    assert isinstance(caught.value, ConnectionError)
    assert f"at {url} (gRPC port {grpc};" in message and "AIENG_WEAVIATE_URL" in message
    if where == "grpc closed":
        assert "WeaviateGRPCUnavailableError" in message
    assert "\n" not in message  # one line: the client's own text has several
    assert caught.value.__cause__ is not None
    await store.aclose()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mode", "semantic", "mode"),
    ("alpha", 1.5, "alpha must be in"),
    ("alpha", True, "alpha must be a number"),
    ("collection", "docs", "collection must be"),
    ("url", "localhost:8080", "url must look like"),
    ("url", "http://localhost:99999", "url's port must be in"),
    ("url", "http://localhost:0", "url's port must be in"),
    ("url", "http://[::1]:0", "url's port must be in"),
    ("url", "http://[::1::]:8080", "url must look like"),
    ("url", "http://[localhost]:8080", "url must look like"),
    ("url", "http://::1:8080", "url must look like"),
    ("url", "http://user@host:8080", "url must look like"),
    ("url", "http://host?x=1", "url must look like"),
    ("api_key_env", "MY KEY", "api_key_env"),
    ("grpc_port", 0, "grpc_port"),
    ("batch_size", 0, "batch_size"),
])
def test_bad_options_are_refused(key: str, value: object, message: str) -> None:
    """Each option is validated with a message naming it."""
    with pytest.raises((TypeError, ValueError), match=message):
        WeaviateOptions(**{key: value})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_plugin_registers_the_component(aieng_kernel: Kernel, register_plugin: Any) -> None:
    """The plugin offers ``weaviate``; a pipeline file's options reach it, and a misspelled
    option fails with the key; building a pipeline imports and connects nothing."""
    with register_plugin(aieng_weaviate, "weaviate") as info:
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline({
            "pipeline": {"name": "wv", "stages": ["retrieve"]},
            "components": {"store": {"use": "weaviate", "url": "http://localhost:1",
                                     "mode": "bm25"}}})
        assert pipeline is not None
        with pytest.raises(ConfigError, match="components.store"):
            aieng_kernel.pipeline({"pipeline": {"name": "wv"},
                                   "components": {"store": {"use": "weaviate", "alfa": 1}}})
