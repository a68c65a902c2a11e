"""Servers that are OpenAI-compatible only in part: tool calls streamed without an
``index``, an event stream declared in another charset, a 200 answer that is an error, a
proxy's page where a stream was expected, a stream cut after its finish reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from _openai_double import OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Delta, Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions
from aieng_openai._payload import StreamedCalls, usage_from

pytestmark = pytest.mark.anyio


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}], **extra}, ensure_ascii=False)


def calls_chunk(*fragments: dict[str, Any]) -> str:
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"tool_calls": list(fragments)}, "finish_reason": None}]})


async def consume(backend: OpenAIBackend, text: str = "hi") -> list[Delta]:
    stream = backend.aieng_stream(Request(messages=(Message("user", text),)))
    assert stream is not None
    return [delta async for delta in stream]


def whole(name: str, call_id: str, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}, **extra}


async def test_streamed_tool_calls_without_an_index(double: OpenAIServerDouble,
                                                    make_backend: Any) -> None:
    """Ollama and Gemini stream each call whole in its own chunk without ``index``: two
    calls stay two calls (by their ids), not one whose arguments run together."""
    double.script("chat/completions", Scripted(sse=(
        calls_chunk(whole("get_weather", "call_a", {"city": "Oslo"})), "",
        calls_chunk(whole("add", "call_b", {"a": 1, "b": 2})), "",
        chunk(finish="tool_calls"), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert [(c.id, c.name, c.arguments) for c in deltas[-1].tool_calls] == [
        ("call_a", "get_weather", {"city": "Oslo"}), ("call_b", "add", {"a": 1, "b": 2})]


def test_tool_call_fragments_with_a_null_index() -> None:
    """``"index": null`` (some proxies) is no index: the id opens a call, fragments without
    an id continue the call opened last."""
    calls = StreamedCalls()
    calls.add([{"index": None, "id": "call_a", "type": "function",
                "function": {"name": "f", "arguments": ""}}])
    calls.add([{"index": None, "function": {"arguments": '{"x":'}}])
    calls.add([{"index": None, "id": "call_b", "function": {"name": "g", "arguments": "{"}}])
    calls.add([{"index": None, "function": {"arguments": "}"}}])
    calls.add([{"index": None, "function": {"arguments": ""}}])
    calls.add([{"id": "call_a", "function": {"arguments": " 1}"}}])
    assert [(c.id, c.name, c.arguments) for c in calls.calls()] == [
        ("call_a", "f", {"x": 1}), ("call_b", "g", {})]
    # Indexed fragments are read as before: the index decides, ids given once.
    indexed = StreamedCalls()
    indexed.add([whole("f", "call_a", {}, index=0), whole("g", "call_b", {}, index=1)])
    assert [c.id for c in indexed.calls()] == ["call_a", "call_b"]


async def test_an_event_stream_is_utf8_whatever_its_charset(double: OpenAIServerDouble,
                                                            make_backend: Any) -> None:
    """An event stream is always UTF-8 (WHATWG): a ``charset`` in its Content-Type (a
    servlet container's ISO-8859-1 default) does not turn its text into mojibake."""
    text = "héllo ✓ 😀"
    double.script("chat/completions", Scripted(
        sse=(chunk(text), "", chunk(finish="stop"), "", "data: [DONE]", ""),
        headers={"content-type": "text/event-stream; charset=iso-8859-1"}))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert "".join(d.text for d in deltas) == text


@pytest.mark.parametrize("path", ["chat/completions", "embeddings", "models"])
async def test_a_200_answer_that_is_an_error_says_so(double: OpenAIServerDouble,
                                                     make_backend: Any, path: str) -> None:
    """A proxy answering 200 with an ``{"error": ...}`` body: the error names the server's
    message (not "not OpenAI-compatible", nor a hint on embedding_model)."""
    error = {"error": {"message": "quota exceeded for this month", "type": "insufficient"}}
    double.script(path, Scripted(body=json.dumps(error)))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError) as caught:
        if path == "chat/completions":
            await backend.aieng_generate(Request(messages=(Message("user", "x"),)))
        elif path == "embeddings":
            await backend.aieng_embed(["x"], None)
        else:
            await backend.list_models()
    await backend.aclose()
    assert caught.value.kind == "http" and caught.value.status == 200
    assert "quota exceeded for this month" in caught.value.message
    assert "not OpenAI-compatible" not in str(caught.value)
    assert "embedding_model" not in caught.value.hint
    assert len(double.calls_to(path)) == 1  # an answered error: no retry


async def test_a_200_error_to_a_stream_says_so(double: OpenAIServerDouble,
                                               make_backend: Any) -> None:
    """The same error answered (as JSON) to a streamed request."""
    double.script("chat/completions", Scripted(body=json.dumps({"error": "overloaded"})))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError, match="overloaded") as caught:
        await consume(backend)
    await backend.aclose()
    assert caught.value.kind == "http" and caught.value.status == 200


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """A loopback HTTP server answering every request with ``answer`` (then closing);
    yields the API root."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            await stream.send(answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}/v1"
        group.cancel_scope.cancel()


async def test_a_page_instead_of_a_stream_shows_the_page() -> None:
    """A proxy's HTML page answered 200 to a streamed request is not "a stream that ended
    early": the error names its Content-Type and shows the start of the page."""
    page = b"<html><body>Please sign in to the corporate proxy</body></html>"
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n"
              b"connection: close\r\n\r\n" % len(page)) + page
    async with raw_server(answer) as base:
        backend = OpenAIBackend(OpenAIOptions(base_url=base, model="m", max_retries=0))
        with pytest.raises(OpenAIError) as caught:
            await consume(backend)
        await backend.aclose()
    assert caught.value.kind == "protocol"
    assert "text/html" in caught.value.message and "sign in" in caught.value.body
    assert "base_url" in caught.value.hint


async def test_a_stream_cut_after_its_finish_reason_is_whole() -> None:
    """A server that closes a chunked stream without its last chunk once the finish reason
    (and usage) are out: the answer is whole, so it is handed over, not failed."""

    def piece(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
              b"transfer-encoding: chunked\r\n\r\n"
              + piece(chunk("fine").encode() + b"\n\n")
              + piece(chunk(finish="stop").encode() + b"\n\n")
              + piece(b"data: " + json.dumps(usage).encode() + b"\n\n"))  # no 0-chunk
    async with raw_server(answer) as base:
        backend = OpenAIBackend(OpenAIOptions(base_url=base, model="m", max_retries=0))
        deltas = await consume(backend)
        cut_early = answer[:answer.index(b"\n\n") + 2]  # before any finish reason
        await backend.aclose()
    assert [d.text for d in deltas] == ["fine", ""]
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None and deltas[-1].usage.prompt_tokens == 3
    async with raw_server(cut_early) as base:  # cut before the finish reason: an error
        backend = OpenAIBackend(OpenAIOptions(base_url=base, model="m", max_retries=0))
        with pytest.raises(OpenAIError, match="the stream broke") as caught:
            await consume(backend)
        await backend.aclose()
    assert caught.value.kind == "connection"


async def test_a_cancelled_stream_closes_its_connection() -> None:
    """A caller cancelled mid-stream (a gateway whose client went away) closes the
    connection, so the server stops generating, and frees its slot of the pool: with
    ``max_connections = 1`` the next call still gets through."""
    closed = anyio.Event()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    whole_stream = (head + chunk("next").encode() + b"\n\n"
                    + chunk(finish="stop").encode() + b"\n\n")
    answers = [head + chunk("first").encode() + b"\n\n", whole_stream]

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            answer = answers.pop(0)
            await stream.send(answer)
            if answer is not whole_stream:  # hold the stream open until the client leaves
                try:
                    while True:
                        await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    closed.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        backend = OpenAIBackend(OpenAIOptions(base_url=f"http://127.0.0.1:{port}/v1",
                                              model="m", max_retries=0, max_connections=1,
                                              pool_timeout=2.0))
        seen: list[str] = []
        with anyio.CancelScope() as scope:
            stream = backend.aieng_stream(Request(messages=(Message("user", "x"),)))
            assert stream is not None
            async for delta in stream:
                seen.append(delta.text)
                scope.cancel()
        with anyio.fail_after(5):
            await closed.wait()
        assert seen == ["first"]
        assert [d.text for d in await consume(backend)] == ["next", ""]
        await backend.aclose()
        group.cancel_scope.cancel()


async def test_usage_counts_written_as_whole_floats(double: OpenAIServerDouble,
                                                    make_backend: Any) -> None:
    """A server (or a proxy that re-encodes JSON numbers) writing its usage as ``12.0``
    tokens: the counts are 12, as JSON reads ``12.0`` and ``12`` alike, not 0 (a gateway
    would charge the key nothing); a fraction, a negative, a NaN or a string is no count."""
    double.script("chat/completions", Scripted(sse=(
        chunk("hi"), "", chunk(finish="stop"), "",
        "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [],
                               "usage": {"prompt_tokens": 12.0, "completion_tokens": 3.0}}),
        "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    usage = deltas[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 3)
    assert type(usage.prompt_tokens) is int
    for junk in (2.5, -3.0, float("nan"), float("inf"), "7", True, 1e300):
        counted = usage_from({"prompt_tokens": junk, "completion_tokens": 4})
        assert counted is not None and counted.prompt_tokens == 0, junk
