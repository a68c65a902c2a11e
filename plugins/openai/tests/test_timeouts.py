"""Time limits of a call: ``total_timeout`` over a server that trickles its answer or keeps
asking for a wait, a host's deadline over a pending retry, and timeout errors that name
their limit and its value. The stalled servers here wait for the client to leave, never a
delay a busy machine could outrun."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _openai_double import OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Delta, Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio

_CHUNK = ('data: {"choices": [{"index": 0, "delta": {"content": "Hel"}, '
          '"finish_reason": null}]}')


def ask(text: str = "hello") -> Request:
    return Request(messages=(Message("user", text),), max_tokens=8)


def busy(wait: str) -> Scripted:
    """A 503 asking the client to come back in ``wait`` seconds."""
    return Scripted(status=503, headers={"Retry-After": wait},
                    body='{"error": {"message": "overloaded"}}')


async def consume(backend: OpenAIBackend) -> list[Delta]:
    stream = backend.aieng_stream(ask())
    assert stream is not None
    return [delta async for delta in stream]


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_total_timeout_takes_a_positive_finite_number_of_seconds(value: float) -> None:
    """0, a negative, NaN or infinity is refused naming the option; ``None`` (the
    default) sets no limit of the component's own."""
    with pytest.raises(ValueError, match="total_timeout must be a positive, finite number"):
        OpenAIOptions(base_url="http://127.0.0.1:1/v1", model="m", total_timeout=value)
    with pytest.raises(TypeError, match="total_timeout must be a number of seconds"):
        OpenAIOptions(base_url="http://127.0.0.1:1/v1", model="m",
                      total_timeout="30s")  # type: ignore[arg-type]
    assert OpenAIOptions(base_url="http://127.0.0.1:1/v1", model="m").total_timeout is None


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_total_timeout_ends_an_answer_trickled_a_byte_at_a_time(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A server that sends its answer a byte every 50 ms never trips a 30 s
    ``read_timeout``; ``total_timeout`` ends the call, names itself and its value, and is
    not retried (the whole call's time is spent)."""
    double.script("chat/completions", Scripted(trickle=0.05, body='{"id": "x", '))
    backend: OpenAIBackend = make_backend(read_timeout=30.0, total_timeout=0.5, max_retries=3)
    try:
        with pytest.raises(OpenAIError) as caught:
            await backend.aieng_generate(ask())
    finally:
        await backend.aclose()
    assert caught.value.kind == "timeout"
    assert "total_timeout (0.5 s)" in caught.value.message
    assert "raise total_timeout" in caught.value.hint
    assert len(double.calls_to("chat/completions")) == 1


async def test_no_wait_is_begun_that_would_end_past_total_timeout(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A 503 asking for 20 s under a 5 s ``total_timeout``: the last failure is raised at
    once, its hint saying why there was no retry; the server got one request."""
    double.script("chat/completions", busy("20"), busy("20"))
    backend: OpenAIBackend = make_backend(total_timeout=5.0, backoff_max=30.0, max_retries=3)
    try:
        with pytest.raises(OpenAIError) as caught:
            await backend.aieng_generate(ask())
    finally:
        await backend.aclose()
    assert caught.value.status == 503 and caught.value.attempts == 1
    assert caught.value.retry_after == 20.0
    assert "past total_timeout (5 s" in caught.value.hint
    assert len(double.calls_to("chat/completions")) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_host_deadline_cancels_the_wait_before_a_retry(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A host's cancel scope ended while the call waits 20 s to retry ends the wait:
    no second request is ever sent, and the backend answers the next call. (Cancelled
    once the wait has begun, as the ``openai.retry`` log line says: no race with a
    loaded machine.)"""
    double.script("chat/completions", busy("20"))
    backend: OpenAIBackend = make_backend(backoff_max=30.0, max_retries=3)
    try:
        with capture_logs() as logs:
            async with anyio.create_task_group() as group:
                group.start_soon(backend.aieng_generate, ask())
                with anyio.fail_after(60):
                    while not any(e["event"] == "openai.retry" for e in logs):
                        await anyio.sleep(0.01)
                group.cancel_scope.cancel()
        assert [e["wait_s"] for e in logs if e["event"] == "openai.retry"] == [20.0]
        assert len(double.calls_to("chat/completions")) == 1
        after = await backend.aieng_generate(ask("after"))
    finally:
        await backend.aclose()
    assert after is not None and after.text == "You said: after"
    assert len(double.calls_to("chat/completions")) == 2


async def test_a_read_timeout_names_the_option_and_its_value(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A server that answers nothing: the error says which limit passed (``read_timeout``)
    with its value, and the hint what to raise."""
    double.script("chat/completions", Scripted(hang=True))
    backend: OpenAIBackend = make_backend(read_timeout=0.2, max_retries=0)
    try:
        with pytest.raises(OpenAIError) as caught:
            await backend.aieng_generate(ask())
    finally:
        await backend.aclose()
    assert caught.value.kind == "timeout"
    assert "no byte within read_timeout = 0.2 s" in caught.value.message
    assert "raise read_timeout" in caught.value.hint


async def test_a_stream_stalled_after_a_delta_names_read_timeout_and_its_value(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A stream that sends a delta and then nothing: a timeout naming ``read_timeout``
    and its value (``total_timeout`` bounds only the wait for a stream's headers)."""
    double.script("chat/completions", Scripted(sse=(_CHUNK, ""), hang=True))
    backend: OpenAIBackend = make_backend(read_timeout=0.3, total_timeout=30.0,
                                          max_retries=0)
    try:
        with pytest.raises(OpenAIError) as caught:
            await consume(backend)
    finally:
        await backend.aclose()
    assert caught.value.kind == "timeout"
    assert "stalled" in caught.value.message
    assert "read_timeout = 0.3 s" in caught.value.message
