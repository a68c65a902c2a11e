"""Server-sent events: the parser's rules, and streams that go wrong on the wire."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import anyio
import anyio.abc
import pytest
from _openai_double import OpenAIServerDouble, Scripted, logprob_of
from aieng_hookspecs.types import Delta, Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions, sse_data, sse_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core import Kernel

pytestmark = pytest.mark.anyio


async def lines_of(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def parse(*lines: str) -> list[str]:
    return [data async for data in sse_data(lines_of(*lines))]


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}], **extra})


async def consume(backend: OpenAIBackend, text: str = "hi") -> list[Delta]:
    stream = backend.aieng_stream(Request(messages=(Message("user", text),)))
    assert stream is not None
    return [delta async for delta in stream]


async def test_parser_rules() -> None:
    """``data:`` with or without a space, CRLF, multi-line data, comments, other fields,
    and a last event without a blank line after it."""
    assert await parse("data: a", "", "data:b", "", ": ping", "", "event: x", "id: 3",
                       "retry: 10", "data: c1", "data: c2", "", "data: d\r", "\r",
                       "data", "", "data: last") == ["a", "b", "c1\nc2", "d", "", "last"]
    # A byte-order mark at the start of the stream is dropped, not read into a field name.
    assert await parse("\ufeffdata: a", "", "data: b", "") == ["a", "b"]


async def test_lines_end_at_cr_and_lf_only() -> None:
    """The stream's text is split at CRLF, LF and CR, wherever the chunks happen to cut it
    (a CRLF in two chunks is one break), and at nothing else."""
    pieces = ["data: a\r", "\ndata: b\u2028c\x85\r\n", "\r\n", "data: d\rdata: e\n\n",
              "data: f\r"]
    lines = [line async for line in sse_lines(lines_of(*pieces))]
    assert lines == ["data: a", "data: b\u2028c\x85", "", "data: d", "data: e", "", "data: f"]
    assert [data async for data in sse_data(lines_of(*lines))] == [
        "a\nb\u2028c\x85", "d\ne", "f"]


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(payloads=st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=20),
                                         max_size=3), max_size=5),
       spaced=st.booleans(), crlf=st.booleans(), pings=st.booleans(),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_parser_round_trips_json_events(payloads: list[dict[str, str]], spaced: bool,
                                        crlf: bool, pings: bool, cuts: list[int]) -> None:
    """Whatever the JSON payloads (non-ASCII written raw) and line-ending style, each
    event's data comes back, however the stream's text is cut into chunks."""
    end = "\r\n" if crlf else "\n"
    lines: list[str] = []
    for payload in payloads:
        if pings:
            lines += [": keep-alive" + end, end]
        lines += [("data: " if spaced else "data:") + json.dumps(payload, ensure_ascii=False)
                  + end, end]
    text = "".join(lines)
    bounds = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    chunks = [text[start:stop] for start, stop in pairwise(bounds)]

    async def main() -> tuple[list[str], list[str]]:
        split = [data async for data in sse_data(sse_lines(lines_of(*chunks)))]
        return await parse(*lines), split

    direct, split = anyio.run(main)
    assert [json.loads(d) for d in direct] == payloads == [json.loads(d) for d in split]


async def test_stream_with_pings_and_no_done(double: OpenAIServerDouble,
                                             make_backend: Any) -> None:
    """Keep-alive comments are skipped; a stream that ends after its finish reason without
    ``[DONE]`` (older llama.cpp) still ends well, text in the finishing chunk kept."""
    double.script("chat/completions", Scripted(sse=(
        ": ping", "", chunk("Hel"), "", ": ping", "", chunk("lo"), "",
        chunk("!", finish="length"), "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert [d.text for d in deltas] == ["Hel", "lo", "!", ""]
    assert deltas[-1].finish_reason == "length" and deltas[-1].usage is None


async def test_usage_chunk_after_finish(double: OpenAIServerDouble, make_backend: Any) -> None:
    """Usage sent in a last chunk with no choices lands on the last delta."""
    double.script("chat/completions", Scripted(sse=(
        chunk("ok"), "", chunk(finish="stop"), "",
        "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 4,
                                                        "completion_tokens": 1}}), "",
        "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert deltas[-1].usage is not None and deltas[-1].usage.prompt_tokens == 4


def calls_chunk(*fragments: dict[str, Any]) -> str:
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"tool_calls": list(fragments)}, "finish_reason": None}]})


async def test_streamed_tool_calls_are_put_together(double: OpenAIServerDouble,
                                                   make_backend: Any) -> None:
    """Tool calls streamed in fragments as OpenAI and vLLM send them (id and name once,
    arguments in pieces, two calls interleaved by index) arrive whole on the last delta;
    ``tool_choice`` and ``parallel_tool_calls`` are sent from the metadata."""
    double.script("chat/completions", Scripted(sse=(
        chunk("Checking."), "",
        calls_chunk({"index": 0, "id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}), "",
        calls_chunk({"index": 0, "function": {"arguments": '{"ci'}}), "",
        calls_chunk({"index": 1, "id": "call_b", "type": "function",
                     "function": {"name": "add", "arguments": '{"a": 1,'}}), "",
        calls_chunk({"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}), "",
        calls_chunk({"index": 1, "function": {"arguments": ' "b": 2}'}}), "",
        chunk(finish="tool_calls"), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    stream = backend.aieng_stream(Request(messages=(Message("user", "hi"),), metadata={
        "tool_choice": "required", "parallel_tool_calls": True}))
    assert stream is not None
    deltas = [delta async for delta in stream]
    await backend.aclose()
    assert [d.text for d in deltas] == ["Checking.", ""]
    assert deltas[-1].finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in deltas[-1].tool_calls] == [
        ("call_a", "get_weather", {"city": "Oslo"}), ("call_b", "add", {"a": 1, "b": 2})]
    sent = double.calls_to("chat/completions")[-1].body
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is True


async def test_malformed_streamed_tool_calls_fail_clearly(double: OpenAIServerDouble,
                                                         make_backend: Any) -> None:
    """Arguments that do not come together as JSON are a protocol error that says so."""
    double.script("chat/completions", Scripted(sse=(
        calls_chunk({"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a'}}),
        "", chunk(finish="tool_calls"), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError, match="tool calls are malformed.*not JSON"):
        await consume(backend)
    await backend.aclose()


@pytest.mark.parametrize(("lines", "found"), [
    ((chunk("a"), "", "data: {not json", ""), "not JSON"),
    ((chunk("a"), "", "data: [1, 2]", ""), "not a JSON object"),
    ((chunk("a"), "", "data: [DONE]", ""), "before a finish_reason"),
    ((chunk("a"), ""), "before a finish_reason"),
    (("data: " + json.dumps({"error": {"message": "overloaded"}}), ""), "mid-stream: overloaded"),
    (("data: " + json.dumps({"choices": 5}), ""), "choices is not a list"),
    (("data: " + json.dumps({"choices": {"index": 0}}), ""), "choices is not a list"),
])
async def test_malformed_streams_raise(double: OpenAIServerDouble, make_backend: Any,
                                       lines: tuple[str, ...], found: str) -> None:
    """Non-JSON events, a cut stream, an error event and choices that are not a list raise
    with an excerpt and a hint."""
    double.script("chat/completions", Scripted(sse=lines))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError, match=found) as caught:
        await consume(backend)
    await backend.aclose()
    assert caught.value.hint


@pytest.mark.parametrize("empty", [None, {}, ""])
async def test_an_empty_error_field_is_no_error(double: OpenAIServerDouble, make_backend: Any,
                                                empty: object) -> None:
    """Servers and proxies that put ``"error": null`` (or an empty error) on every chunk
    stream as usual: only an error that says something ends the stream."""
    double.script("chat/completions", Scripted(sse=(
        chunk("Hel", error=empty), "", chunk("lo", error=empty), "",
        chunk(finish="stop", error=empty), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert [d.text for d in deltas] == ["Hel", "lo", ""]
    assert deltas[-1].finish_reason == "stop"


async def test_unicode_line_separators_are_not_line_breaks(double: OpenAIServerDouble,
                                                            make_backend: Any) -> None:
    """Only CR and LF end a line of an event stream: U+2028, U+2029 and U+0085, which JSON
    strings hold raw when a server writes them unescaped (``aieng serve``, vLLM), stay in
    their event's text instead of cutting its JSON in two."""
    text = "one\u2028two\u2029three\x85four"
    event = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    double.script("chat/completions", Scripted(sse=(
        "data: " + json.dumps(event, ensure_ascii=False), "", chunk(finish="stop"), "",
        "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert "".join(d.text for d in deltas) == text


async def test_stream_from_a_server_that_ignores_stream(double: OpenAIServerDouble,
                                                        make_backend: Any) -> None:
    """A server answering a streamed request with one JSON completion (it ignored
    ``stream``) gives its text as one delta, then its finish reason and usage."""
    double.script("chat/completions", Scripted(body=json.dumps({
        "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "Whole answer"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert [d.text for d in deltas] == ["Whole answer", ""]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 2
    double.script("chat/completions", Scripted(body='{"detail": "no"}'))
    with pytest.raises(OpenAIError, match="answered unexpectedly"):
        await consume(backend)
    await backend.aclose()


async def test_streamed_logprobs_reach_the_deltas_and_the_run(
        aieng_kernel: Kernel, double: OpenAIServerDouble, make_backend: Any) -> None:
    """A stream asking for log-probabilities gets each chunk's on its delta, and a
    pipeline streaming over this backend ends with the same log-probabilities as one that
    does not stream."""
    request = Request(messages=(Message("user", "hi there"),), metadata={"logprobs": True})
    backend: OpenAIBackend = make_backend()
    stream = backend.aieng_stream(request)
    assert stream is not None
    deltas = [delta async for delta in stream]
    pipeline = aieng_kernel.compose({"llm": backend})
    whole = await pipeline.run(request)
    streamed = await pipeline.run(request, on_delta=lambda d: None)
    await pipeline.aclose()
    assert double.calls_to("chat/completions")[0].body["logprobs"] is True
    assert [(d.text, d.logprob) for d in deltas] == [
        ("You", logprob_of(0)), (" said:", logprob_of(1)), (" hi", logprob_of(2)),
        (" there", logprob_of(3)), ("", None)]
    assert whole.completion is not None and streamed.completion is not None
    assert streamed.model_calls[0].streamed
    assert streamed.completion.logprobs == whole.completion.logprobs
    assert whole.completion.logprobs is not None and len(whole.completion.logprobs) == 4


async def test_a_whole_answer_to_a_stream_keeps_its_logprobs(double: OpenAIServerDouble,
                                                              make_backend: Any) -> None:
    """A server that ignores ``stream`` and answers whole: its one delta of text carries
    the answer's summed log-probability."""
    double.script("chat/completions", Scripted(body=json.dumps({"choices": [{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "Whole answer"},
        "logprobs": {"content": [{"token": "Whole", "logprob": -0.5},
                                 {"token": " answer", "logprob": -0.25}]}}]})))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert [(d.text, d.logprob) for d in deltas] == [("Whole answer", -0.75), ("", None)]


def scored(content: str | None, *tokens: tuple[str, float], finish: str | None = None) -> str:
    """A chunk whose choice carries ``tokens`` in ``logprobs.content``."""
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": {"content": [
            {"token": t, "logprob": p, "bytes": None, "top_logprobs": []}
            for t, p in tokens]}}]})


async def test_a_chunk_of_several_tokens_carries_their_sum(double: OpenAIServerDouble,
                                                           make_backend: Any) -> None:
    """A chunk of several tokens gives its delta their summed log-probability; tokens
    that show no text (the end of text) are carried to the next delta, the last one at
    the end; the deltas' sum is the completion's."""
    double.script("chat/completions", Scripted(sse=(
        scored("Hel", ("H", -0.5), ("el", -0.25)), "",
        scored(None, ("<think>", -1.0)), "",
        scored("lo", ("lo", -0.125)), "",
        scored(None, ("<eos>", -2.0), finish="stop"), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend)
    await backend.aclose()
    assert [(d.text, d.logprob) for d in deltas] == [
        ("Hel", -0.75), ("lo", -1.125), ("", -2.0)]


async def test_malformed_streamed_logprobs_fail_clearly(double: OpenAIServerDouble,
                                                       make_backend: Any) -> None:
    """A chunk's log-probabilities that are not numbers are a protocol error."""
    double.script("chat/completions", Scripted(sse=(
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "a"},
                                            "logprobs": {"content": [
                                                {"token": "a", "logprob": None}]}}]}),
        "", chunk(finish="stop"), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError, match="log-probabilities are malformed") as caught:
        await consume(backend)
    await backend.aclose()
    assert caught.value.kind == "protocol"


async def test_stream_retries_before_the_first_byte(double: OpenAIServerDouble,
                                                    make_backend: Any) -> None:
    """A 429 or 5xx before the stream starts is retried; the stream then runs normally."""
    double.script("chat/completions",
                  Scripted(status=429, headers={"Retry-After": "0"}, body="{}"),
                  Scripted(status=503, body="{}"))
    backend: OpenAIBackend = make_backend()
    deltas = await consume(backend, "x y")
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "You said: x y"
    assert len(double.calls_to("chat/completions")) == 3


async def test_stalled_stream_times_out(double: OpenAIServerDouble, make_backend: Any) -> None:
    """A stream that stops sending for longer than read_timeout raises a timeout error."""
    double.script("chat/completions", Scripted(hang=True))
    backend: OpenAIBackend = make_backend(read_timeout=0.2, max_retries=0)
    with pytest.raises(OpenAIError) as caught:
        await consume(backend)
    await backend.aclose()
    assert caught.value.kind == "timeout"


async def test_closing_a_stream_early_releases_it(double: OpenAIServerDouble,
                                                  make_backend: Any) -> None:
    """Leaving a stream after its first delta closes the response; the client still works."""
    backend: OpenAIBackend = make_backend()
    stream = backend.aieng_stream(Request(messages=(Message("user", "a b c d"),)))
    assert stream is not None
    first = await anext(aiter(stream))
    await stream.aclose()  # type: ignore[attr-defined]
    assert first.index == 0
    assert await backend.aieng_generate(Request(messages=(Message("user", "z"),))) is not None
    await backend.aclose()


async def test_a_redirect_is_an_error_naming_its_target(double: OpenAIServerDouble,
                                                       make_backend: Any) -> None:
    """A 3xx answer (http:// where the server wants https://) is not read as a stream that
    ended early: it fails at once with the status, the Location and a hint on base_url."""
    target = "https://api.example.invalid/v1/chat/completions"
    double.script("chat/completions",
                  Scripted(status=307, headers={"Location": target}, body=""))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError) as caught:
        await consume(backend)
    await backend.aclose()
    assert caught.value.status == 307 and target in str(caught.value)
    assert "base_url" in caught.value.hint
    assert len(double.calls_to("chat/completions")) == 1


@asynccontextmanager
async def raw_server(*answers: bytes) -> AsyncIterator[str]:
    """A loopback HTTP server that reads each request whole and answers it with the next
    raw bytes of ``answers``, then closes the connection (bodies cut short on the wire);
    yields the API root."""
    queue = list(answers)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            found = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            while found is not None and len(body) < int(found.group(1)):
                body += await stream.receive()
            await stream.send(queue.pop(0))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}/v1"
        group.cancel_scope.cancel()


CUT_500 = (b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
           b"content-length: 100\r\n\r\n{\"error\": {\"mess")
SSE_OK = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
          b"connection: close\r\n\r\n" + chunk("fine").encode() + b"\n\n"
          + chunk(finish="stop").encode() + b"\n\ndata: [DONE]\n\n")
CUT_JSON = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{\"choices\": [")


async def test_bodies_cut_short_are_openai_errors() -> None:
    """A stream's error answer whose body breaks off is still that error (a 5xx: retried),
    and a whole JSON answer to a stream that breaks off is an OpenAIError, never httpx's
    own exception."""
    async with raw_server(CUT_500, SSE_OK, CUT_500, CUT_JSON) as base:
        backend = OpenAIBackend(OpenAIOptions(base_url=base, model="m", max_retries=1,
                                              backoff_base=0.01, read_timeout=10.0))
        deltas = await consume(backend)  # the 500 is retried, the stream then answers
        assert "".join(d.text for d in deltas) == "fine"
        with pytest.raises(OpenAIError) as caught:
            await consume(backend)
        await backend.aclose()
    assert caught.value.kind == "connection" and caught.value.attempts == 1
    assert "broke" in str(caught.value) and caught.value.hint


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"connection: close\r\n\r\n")


@pytest.mark.parametrize("sent", [
    b'data: {"object": "chat.completion.chunk", "choi',  # cut in the first event
    (chunk("fine") + "\n\n").encode() + b'data: {"object": "chat.compl',  # in a later one
])
async def test_a_stream_cut_mid_event_says_it_broke_off(sent: bytes) -> None:
    """A server that closes the connection halfway through an event (half a line, no
    blank line after it) cut the stream short: a connection error saying so, not a
    "malformed stream" that sends the user to check the server's format."""
    async with raw_server(SSE_HEAD + sent) as base:
        backend = OpenAIBackend(OpenAIOptions(base_url=base, model="m", max_retries=0,
                                              read_timeout=10.0))
        with pytest.raises(OpenAIError) as caught:
            await consume(backend)
        await backend.aclose()
    assert caught.value.kind == "connection"
    assert "broke off" in str(caught.value) and "mid-stream" in caught.value.hint


async def test_a_malformed_event_that_ended_is_still_malformed() -> None:
    """An event ended by its blank line that is not JSON is the server's format, even
    when the connection closes right after it."""
    async with raw_server(SSE_HEAD + b"data: {not json}\n\n") as base:
        backend = OpenAIBackend(OpenAIOptions(base_url=base, model="m", max_retries=0,
                                              read_timeout=10.0))
        with pytest.raises(OpenAIError) as caught:
            await consume(backend)
        await backend.aclose()
    assert caught.value.kind == "protocol" and "not JSON" in str(caught.value)
