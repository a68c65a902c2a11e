"""Answers too large to hold (``max_response_bytes``), and an event stream answered to a
request that asked for one JSON completion."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from _openai_double import CHAT_MODEL, LoopbackServer, OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Message, Request, Usage
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
#: What the flooding server offers: far more than any cap in these tests.
FLOOD = 64 * 1024 * 1024


class Flood:
    """A hostile server: ``/v1/chat/completions`` answers ``status`` with a body of
    :data:`FLOOD` bytes in chunks (no Content-Length), counting what it managed to send."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive())["more_body"]:
            pass
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        # Valid JSON if it were read whole: a completion padded with blanks.
        head = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": "x"}}]})
        await send({"type": "http.response.body", "body": head.encode(), "more_body": True})
        gone = asyncio.Event()

        async def watch() -> None:  # uvicorn's send is silent once the client has gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        while self.sent < FLOOD and not gone.is_set():
            await send({"type": "http.response.body", "body": b" " * CHUNK, "more_body": True})
            self.sent += CHUNK
            # uvicorn's send returns at once after a disconnect without yielding: let the
            # loop run (the transport's connection_lost, the watcher) between chunks, or a
            # busy machine spins through the whole flood before it notices.
            await asyncio.sleep(0)
        watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
def flood_200() -> Iterator[tuple[Flood, LoopbackServer]]:
    app = Flood(200)
    with LoopbackServer(app) as server:
        yield app, server


@pytest.fixture
def flood_500() -> Iterator[tuple[Flood, LoopbackServer]]:
    app = Flood(500)
    with LoopbackServer(app) as server:
        yield app, server


def _ask() -> Request:
    return Request(messages=(Message("user", "hi"),))


def _backend(server: LoopbackServer, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=server.base_url, model=CHAT_MODEL,
                                       backoff_base=0.01, read_timeout=10.0, **options))


def test_the_cap_is_an_option() -> None:
    """64 MiB by default; a positive integer of bytes."""
    options = OpenAIOptions(base_url="http://127.0.0.1:1/v1", model="m")
    assert options.max_response_bytes == 64 * 1024 * 1024
    for bad in (0, -1, 1.5, True, "1MB"):
        with pytest.raises((TypeError, ValueError), match="max_response_bytes"):
            OpenAIOptions(base_url="http://127.0.0.1:1/v1", model="m", max_response_bytes=bad)


async def test_a_body_over_the_cap_is_refused_unread(
        flood_200: tuple[Flood, LoopbackServer]) -> None:
    """A 200 whose body passes max_response_bytes is an OpenAIError naming the option
    (not retried: the server would send it again), read no further than the cap."""
    app, server = flood_200
    backend = _backend(server, max_response_bytes=1024 * 1024)
    with anyio.fail_after(20):
        with pytest.raises(OpenAIError) as caught:
            await backend.aieng_generate(_ask())
    await backend.aclose()
    error = caught.value
    assert error.kind == "protocol" and error.status == 200 and error.attempts == 1
    assert "max_response_bytes" in str(error) and "1048576" in str(error)
    assert app.sent < FLOOD // 4  # it stopped reading: the server could not send the rest


async def test_a_declared_length_over_the_cap_is_refused_before_reading(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A Content-Length over the cap fails at once, for embeddings and models too."""
    big = json.dumps({"object": "list", "data": [], "pad": "x" * 5000})
    double.script("models", Scripted(body=big))
    backend: OpenAIBackend = make_backend(max_response_bytes=4096)
    with pytest.raises(OpenAIError, match="max_response_bytes") as caught:
        await backend.list_models()
    await backend.aclose()
    assert caught.value.kind == "protocol"


async def test_an_error_body_is_read_only_for_its_excerpt(
        flood_500: tuple[Flood, LoopbackServer]) -> None:
    """A 5xx with an endless body: the error (with its excerpt) comes without reading it
    all (only the excerpt is ever shown)."""
    app, server = flood_500
    backend = _backend(server, max_retries=0)
    with anyio.fail_after(20):
        with pytest.raises(OpenAIError) as caught:
            await backend.aieng_generate(_ask())
    await backend.aclose()
    assert caught.value.status == 500 and caught.value.body.startswith('{"choices"')
    assert app.sent < FLOOD // 4


async def test_an_event_over_the_cap_is_refused(double: OpenAIServerDouble,
                                                make_backend: Any) -> None:
    """One stream event (or line) longer than max_response_bytes is an error naming it."""
    long = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "y" * 3000},
                                               "finish_reason": None}]})
    double.script("chat/completions", Scripted(sse=(long, "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend(max_response_bytes=1000)
    stream = backend.aieng_stream(_ask())
    assert stream is not None
    with pytest.raises(OpenAIError, match="max_response_bytes") as caught:
        [delta async for delta in stream]
    await backend.aclose()
    assert caught.value.kind == "protocol"


def _event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    return "data: " + json.dumps({"object": "chat.completion.chunk", "model": "served-name",
                                  "choices": [{"index": 0, "delta": delta,
                                               "finish_reason": finish, **extra}]})


async def test_an_event_stream_answer_to_a_json_request_is_one_completion(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A server (a proxy, some llama.cpp builds) that always streams: the answer to a
    non-stream request is read whole from its events (text, finish reason, usage, tool
    calls, log-probabilities), not refused as "not JSON"."""
    token = {"content": [{"token": "Hel", "logprob": -0.5}, {"token": "lo", "logprob": -0.25}]}
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "add", "arguments": '{"a": 1'}}
    double.script("chat/completions", Scripted(sse=(
        ": keep-alive", "",
        _event({"role": "assistant", "content": "Hel"}, logprobs={"content": token["content"][:1]}),
        "", _event({"content": "lo"}, logprobs={"content": token["content"][1:]}), "",
        _event({"tool_calls": [call]}), "",
        _event({"tool_calls": [{"index": 0, "function": {"arguments": ', "b": 2}'}}]}), "",
        _event({}, "tool_calls"), "",
        "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 3,
                                                        "completion_tokens": 2}}), "",
        "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    completion = await backend.aieng_generate(Request(messages=(Message("user", "hi"),),
                                                      metadata={"logprobs": True}))
    await backend.aclose()
    assert completion is not None
    assert completion.text == "Hello" and completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(prompt_tokens=3, completion_tokens=2)
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [
        ("call_1", "add", {"a": 1, "b": 2})]
    assert completion.logprobs is not None
    assert [(t.token, t.logprob) for t in completion.logprobs] == [("Hel", -0.5), ("lo", -0.25)]
    assert completion.model == "served-name"


async def test_a_broken_event_stream_answer_is_a_clear_error(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """An event stream that ends before its finish reason is the stream's error."""
    double.script("chat/completions", Scripted(sse=(_event({"content": "cut"}), "")))
    backend: OpenAIBackend = make_backend(max_retries=0)
    with pytest.raises(OpenAIError, match="finish_reason") as caught:
        await backend.aieng_generate(_ask())
    await backend.aclose()
    assert caught.value.kind == "protocol"



async def test_a_stream_left_early_gives_its_connection_back(double: OpenAIServerDouble,
                                                             make_backend: Any) -> None:
    """With one connection allowed, a stream closed after its first delta frees it at once:
    the next call gets it (no wait for a garbage collector to close the response)."""
    backend: OpenAIBackend = make_backend(max_connections=1, pool_timeout=1.0, max_retries=0)
    stream = backend.aieng_stream(Request(messages=(Message("user", "a b c d"),)))
    assert stream is not None
    assert (await anext(aiter(stream))).index == 0
    await stream.aclose()  # type: ignore[attr-defined]
    with anyio.fail_after(10):
        assert await backend.aieng_generate(_ask()) is not None
    await backend.aclose()
