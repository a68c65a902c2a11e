"""One ``openai`` backend over weeks: thousands of calls through one HTTP client.

The server double runs on loopback behind a counter of the connections it is called on
(each TCP connection has its own client port), so the tests count connections opened,
not time: a call whose answer was read to its end gives its connection back to the pool,
and only a call that must drop its connection (a stream abandoned half-way, a cancelled
call) makes the next one connect again. ``ameasure_growth`` reports what the calls retain
and the descriptors they hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog
from _openai_double import (
    API_KEY,
    CHAT_MODEL,
    EMBED_MODEL,
    LoopbackServer,
    OpenAIServerDouble,
    Scripted,
    echo,
)
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions

from aieng_core.testing import HashEmbedder, ScriptedBackend
from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio


class Connections:
    """ASGI middleware: the client ports (one a TCP connection) the app was called on,
    and how many times a call came on another connection than the call before (calls one
    after the other: the connections opened, counted without memory that grows)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ports: set[int] = set()
        self.record = True  # off while memory is measured: the set would grow
        self.changes = 0
        self._last = 0

    def clear(self, *, record: bool = True) -> None:
        self.ports.clear()
        self.record, self.changes, self._last = record, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            port = scope["client"][1]
            self.changes += port != self._last
            self._last = port
            if self.record:
                self.ports.add(port)
        await self.app(scope, receive, send)


@pytest.fixture
def quiet() -> Iterator[None]:
    """structlog at ERROR for the test: pytest keeps every line printed (the client's
    debug line per call) or logged, which would count as the client's growth."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[OpenAIServerDouble, Connections, LoopbackServer]]:
    double = OpenAIServerDouble(ScriptedBackend(echo), HashEmbedder(dimensions=8),
                                models=[CHAT_MODEL, EMBED_MODEL], api_key=API_KEY)
    counted = Connections(double.app)
    with LoopbackServer(counted) as server:
        yield double, counted, server


def _backend(server: LoopbackServer, **options: Any) -> OpenAIBackend:
    values: dict[str, Any] = {"base_url": server.base_url, "model": CHAT_MODEL,
                              "embedding_model": EMBED_MODEL, "api_key": API_KEY,
                              "backoff_base": 0.001, "backoff_max": 0.01, "max_retries": 1,
                              "read_timeout": 30.0}
    values.update(options)
    return OpenAIBackend(OpenAIOptions(**values))


async def _server_settled(server: LoopbackServer, *, most: int) -> None:
    """Wait (10 s at most) until the server holds at most ``most`` connections: it closes
    its side of those the client dropped a moment after (its memory is this process's)."""
    with anyio.fail_after(10):
        while len(server.server.server_state.connections) > most:
            await anyio.sleep(0.01)


def _ask(i: int) -> Request:
    return Request(messages=(Message("user", f"question {i} a b c"),), max_tokens=8)


def _forget(double: OpenAIServerDouble) -> None:
    """The double's records of the calls (its own growth, not the client's)."""
    double.calls.clear()
    double.backend.requests.clear()


async def _answered(backend: OpenAIBackend, double: OpenAIServerDouble, i: int) -> None:
    """One call answered in full: a completion, a stream read to its end, a retried 500,
    an error answer (400), embeddings."""
    kind = i % 5
    if kind == 0:
        assert await backend.aieng_generate(_ask(i)) is not None
    elif kind == 1:
        stream = backend.aieng_stream(_ask(i))
        assert stream is not None
        assert [d async for d in stream][-1].finish_reason == "stop"
    elif kind == 2:  # a 500, retried once: answered
        double.script("chat/completions", Scripted(status=500, body='{"error": "busy"}'))
        assert await backend.aieng_generate(_ask(i)) is not None
    elif kind == 3:  # refused: the error's body read for its excerpt
        double.script("chat/completions", Scripted(status=400, body='{"error": "no"}'))
        stream = backend.aieng_stream(_ask(i))
        assert stream is not None
        with pytest.raises(OpenAIError):
            async for _ in stream:
                pass
    else:
        assert await backend.aieng_embed([f"text {i}"], None) is not None


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_answers_read_to_their_end_reuse_one_connection(
        served: tuple[OpenAIServerDouble, Connections, LoopbackServer]) -> None:
    """300 calls one after the other, streams read to their ``[DONE]`` among them: one
    connection in all (a stream whose body was left unread after ``[DONE]`` was closed,
    and each next call connected again, with a TLS handshake to a hosted API)."""
    double, counted, server = served
    backend = _backend(server)
    counted.clear()
    for i in range(300):
        _forget(double)
        await _answered(backend, double, i)
    await backend.aclose()
    assert len(counted.ports) == 1, len(counted.ports)


async def test_a_thousand_calls_retain_nothing(
        served: tuple[OpenAIServerDouble, Connections, LoopbackServer], quiet: None) -> None:
    """Completions, streams read to their end, retried 500s, refused calls and embeddings
    over one client: once the pool is warm they retain nothing and hold one socket."""
    double, _, server = served
    backend = _backend(server, max_connections=4)

    async def call(i: int) -> None:
        _forget(double)
        await _answered(backend, double, i)

    # The regular-expression engine keeps some 20 kB whatever the number of calls.
    growth = await ameasure_growth(call, warmup=50, calls=1_000)
    await backend.aclose()
    assert growth.per_call < 32, growth.report()
    assert all("socket" in item for item in growth.held), growth.report()
    assert len(growth.held) <= 1, growth.report()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_dropped_calls_reconnect_once_each_and_leave_no_task(
        served: tuple[OpenAIServerDouble, Connections, LoopbackServer], quiet: None) -> None:
    """Streams abandoned after their first delta and calls cancelled while the server
    thinks must drop their connections: the next call connects again, once per dropped
    one (never once per call), at most ``max_connections`` sockets stay open, and no task
    is left behind (no reader of the stream left for the garbage collector to close)."""
    double, counted, server = served
    backend = _backend(server, max_connections=4)
    dropped = 0

    async def call(i: int) -> None:
        nonlocal dropped
        _forget(double)
        if i % 4 == 1:  # abandoned half-way: its connection cannot be reused
            stream = backend.aieng_stream(_ask(i))
            assert stream is not None
            await anext(aiter(stream))
            await stream.aclose()  # type: ignore[attr-defined]
            dropped += 1
        elif i % 4 == 3:  # cancelled while the server holds the answer
            double.script("chat/completions", Scripted(hang=True))
            async with anyio.create_task_group() as group:
                group.start_soon(backend.aieng_generate, _ask(i))
                with anyio.fail_after(10):
                    while not double.calls:
                        await anyio.sleep(0.001)
                group.cancel_scope.cancel()
            dropped += 1
        else:
            await _answered(backend, double, i)
        if i == 20 - 1:  # the warm-up's end: count the connections from here
            counted.clear(record=False)
            dropped = 0

    growth = await ameasure_growth(call, warmup=20, calls=200)
    await backend.aclose()
    await _server_settled(server, most=0)
    assert counted.changes <= dropped + 1, (counted.changes, dropped)
    sockets = [item for item in growth.held if "socket" in item]
    assert len(sockets) <= 4 and len(sockets) == len(growth.held), growth.report()


async def test_concurrent_calls_share_max_connections(
        served: tuple[OpenAIServerDouble, Connections, LoopbackServer]) -> None:
    """200 calls, 40 at a time, over ``max_connections = 4``: four connections in all."""
    double, counted, server = served
    backend = _backend(server, max_connections=4, pool_timeout=30.0)
    counted.clear()
    _forget(double)
    limiter = anyio.Semaphore(40)

    async def one(i: int) -> None:
        async with limiter:
            if i % 2:
                assert await backend.aieng_generate(_ask(i)) is not None
            else:
                stream = backend.aieng_stream(_ask(i))
                assert stream is not None
                assert [d async for d in stream][-1].finish_reason == "stop"

    async with anyio.create_task_group() as group:
        for i in range(200):
            group.start_soon(one, i)
    await backend.aclose()
    _forget(double)
    assert len(counted.ports) <= 4, len(counted.ports)


async def test_a_backend_opened_and_closed_again_and_again_holds_nothing(
        served: tuple[OpenAIServerDouble, Connections, LoopbackServer], quiet: None) -> None:
    """A host that builds a pipeline per tenant opens and closes its backend each time:
    every close closes the client it opened, so no socket, thread or memory stays."""
    double, _, server = served

    async def tenant(i: int) -> None:
        _forget(double)
        backend = _backend(server)
        await backend.aieng_pipeline_open()
        assert await backend.aieng_generate(_ask(i)) is not None
        await backend.aieng_pipeline_close()

    async def measured(i: int) -> None:
        await tenant(i)
        if i == 10 + 40 - 1:
            await _server_settled(server, most=0)

    growth = await ameasure_growth(measured, warmup=10, calls=40)
    # A client left open would keep its TLS context and pool: hundreds of kilobytes each.
    assert growth.per_call < 1_024, growth.report()
    assert not growth.held, growth.report()
