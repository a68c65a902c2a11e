"""The weaviate store and time: ``timeout_s`` validated, a stalled server (one that takes
connections and answers nothing) a named error within it, and a host's deadline ending a
call at once, connecting or querying, instead of when the client gives up. Threads are
synchronised on events, never on sleeps."""

from __future__ import annotations

import contextlib
import math
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aieng_hookspecs.types import Document, Query
from aieng_weaviate import WeaviateOptions, WeaviateStore, WeaviateTimeout, WeaviateUnavailable
from aieng_weaviate._requests import connection_params
from weaviate.exceptions import WeaviateBatchError, WeaviateDeleteManyError, WeaviateQueryError

from aieng_core.testing import HashEmbedder

_GUARD_S = 30.0  # a hang guard only: every wait below ends on an event long before


@pytest.mark.parametrize(("value", "error", "words"), [
    (0, ValueError, "in (0, 3600]"), (-1, ValueError, "in (0, 3600]"),
    (math.nan, ValueError, "in (0, 3600]"), (math.inf, ValueError, "in (0, 3600]"),
    (3601, ValueError, "in (0, 3600]"), ("30s", TypeError, "the unit is always seconds"),
    (True, TypeError, "a number of seconds"),
])
def test_timeout_s_is_a_number_of_seconds_up_to_an_hour(value: object, error: type[Exception],
                                                         words: str) -> None:
    """``timeout_s`` is seconds in (0, 3600], a fraction too (it took integers only): 0,
    a negative number, NaN, an infinity or a string with a unit are refused naming it."""
    with pytest.raises(error, match="timeout_s") as caught:
        WeaviateOptions(timeout_s=value)  # type: ignore[arg-type]
    assert words in str(caught.value)
    timeout = connection_params(WeaviateOptions(url="http://h:8080", timeout_s=2.5),
                                {})["additional_config"].timeout
    assert (timeout.init, timeout.query, timeout.insert) == (2.5, 2.5, 2.5)


@pytest.fixture
def stalled() -> Iterator[tuple[str, int, threading.Event]]:
    """A server that takes connections on two ports (HTTP, gRPC) and never answers: its
    URL, its gRPC port, and an event set at its first connection."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    held: list[socket.socket] = []
    reached = threading.Event()

    def accept(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            held.append(conn)
            reached.set()

    threads = [threading.Thread(target=accept, args=(each,), daemon=True)
               for each in listeners]
    for thread in threads:
        thread.start()
    http, grpc = (each.getsockname()[1] for each in listeners)
    yield f"http://127.0.0.1:{http}", grpc, reached
    for each in (*listeners, *held):
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept (Linux)
            each.shutdown(socket.SHUT_RDWR)
        each.close()
    for thread in threads:
        thread.join(_GUARD_S)


@pytest.mark.anyio
async def test_a_stalled_server_fails_the_open_naming_the_limit(
        stalled: tuple[str, int, threading.Event]) -> None:
    """Opening against a server that answers nothing fails within the client's connect
    timeout with ``WeaviateUnavailable`` naming the URL, the limit it waited, the option
    and how to raise it (it said only "timed out")."""
    url, grpc, _ = stalled
    store = WeaviateStore(WeaviateOptions(url=url, grpc_port=grpc, timeout_s=0.5),
                          embedder=HashEmbedder(4).aieng_embed)
    with anyio.fail_after(_GUARD_S), pytest.raises(WeaviateUnavailable) as caught:
        await store.aieng_retrieve(Query("anything"), 3)
    message = str(caught.value)
    assert url in message and "did not answer within 0.5 s" in message
    assert "raise timeout_s (seconds)" in message
    await store.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_hosts_deadline_ends_an_open_a_stalled_server_holds(
        stalled: tuple[str, int, threading.Event]) -> None:
    """A host's cancel scope around the first call to a stalled server waited for the
    connect to give up (up to twice min(timeout_s, 30) s) before it took effect. It now
    takes effect at once; the connect, abandoned, ends on its own."""
    url, grpc, reached = stalled
    store = WeaviateStore(WeaviateOptions(url=url, grpc_port=grpc, timeout_s=3),
                          embedder=HashEmbedder(4).aieng_embed)
    ended = threading.Event()
    real_open = store._open

    def noted_open() -> Any:
        try:
            return real_open()
        finally:
            ended.set()

    store._open = noted_open  # type: ignore[method-assign]
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(store.aieng_retrieve, Query("anything"), 3)
            assert await anyio.to_thread.run_sync(reached.wait, _GUARD_S)
            scope.cancel()
    assert scope.cancelled_caught
    assert not ended.is_set()  # the host did not wait for the connect to give up
    await store.aclose()


class _Stalled:
    """A stand-in for a connected client whose collection's calls block until released
    (a stalled server), or raise what weaviate-client raises when its deadline passes."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.entered, self.release = threading.Event(), threading.Event()
        self.left = threading.Event()  # set when a blocked call returns to its thread
        self.collections = self
        self.data = self.query = self

    def exists(self, name: str) -> bool:
        return False

    def create(self, **config: Any) -> None:
        pass

    def use(self, name: str) -> _Stalled:
        return self

    def _answer(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.entered.set()
        try:
            self.release.wait(_GUARD_S)
        finally:
            self.left.set()
        raise AssertionError("answered after the test let the call go")

    hybrid = bm25 = near_vector = insert_many = delete_many = _answer

    def close(self) -> None:
        pass


@pytest.mark.anyio
@pytest.mark.parametrize(("call", "error", "doing"), [
    ("retrieve", WeaviateQueryError("Deadline Exceeded", "GRPC search"), "a search"),
    ("index", WeaviateBatchError('<AioRpcError of RPC that terminated with:\n\tstatus = '
                                 'StatusCode.DEADLINE_EXCEEDED\n\tdetails = "Deadline '
                                 'Exceeded">'), "an insert"),
    ("delete", WeaviateDeleteManyError("Deadline Exceeded"), "a delete"),
])
async def test_a_call_past_timeout_s_is_a_named_timeout(call: str, error: Exception,
                                                        doing: str) -> None:
    """A query, insert or delete the server does not answer within ``timeout_s`` failed
    with the client's "Deadline Exceeded" (no URL, no option): it is a
    ``WeaviateTimeout`` (a ``WeaviateUnavailable`` and a ``TimeoutError``) naming the
    server, the call, the collection, ``timeout_s`` and its value."""
    store = WeaviateStore(WeaviateOptions(url="http://wv:8080", collection="Docs",
                                          timeout_s=7.5),
                          embedder=HashEmbedder(4).aieng_embed, client=_Stalled(error))
    calls: dict[str, Callable[[], Any]] = {
        "retrieve": lambda: store.aieng_retrieve(Query("anything"), 3),
        "index": lambda: store.aieng_index([Document("a", "alpha")]),
        "delete": lambda: store.aieng_delete(["a"])}
    with pytest.raises(WeaviateTimeout) as caught:
        await calls[call]()
    assert isinstance(caught.value, (WeaviateUnavailable, TimeoutError))
    message = str(caught.value)
    assert f"did not answer {doing} on collection Docs within 7.5 s" in message
    assert "http://wv:8080" in message and "raise timeout_s (seconds)" in message
    assert caught.value.__cause__ is error


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_hosts_deadline_ends_a_search_a_stalled_server_holds(
        anyio_backend: str) -> None:
    """A host's cancel scope around a search the server does not answer waited for the
    client's timeout (``timeout_s``, 30 s by default) before it took effect. It now takes
    effect at once."""
    client = _Stalled()
    store = WeaviateStore(WeaviateOptions(url="http://wv:8080"),
                          embedder=HashEmbedder(4).aieng_embed, client=client)
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(store.aieng_retrieve, Query("anything"), 3)
                assert await anyio.to_thread.run_sync(client.entered.wait, _GUARD_S)
                scope.cancel()
        assert scope.cancelled_caught
        assert not client.left.is_set()  # the call is still held: not waited for
    finally:
        client.release.set()
    await store.aclose()
