"""Retries and errors: backoff with jitter, Retry-After, which statuses retry, timeouts,
clear errors with hints, and an API key that never shows."""

from __future__ import annotations

import email.utils
import logging
import pickle
import random
import socket
import time
from typing import Any

import anyio
import pytest
import structlog
from _openai_double import API_KEY, OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, backoff, retry_after, retryable_status

pytestmark = pytest.mark.anyio


def ask(text: str = "hello") -> Request:
    return Request(messages=(Message("user", text),), max_tokens=8)


def fail(status: int, **headers: str) -> Scripted:
    return Scripted(status=status, headers=headers,
                    body='{"error": {"message": "scripted failure"}}')


# -- the rules, without a server ---------------------------------------------------------


def test_retry_after_seconds_date_and_millis() -> None:
    """Retry-After is read as seconds or an HTTP date; retry-after-ms wins; junk is none."""
    now = 1_700_000_000.0
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"retry-after": " 0.5 "}) == 0.5
    assert retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after({"Retry-After": later}, now=now) == pytest.approx(30.0)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after({"Retry-After": earlier}, now=now) == 0.0
    for junk in ("soon", "-1", "nan", "inf", ""):
        assert retry_after({"Retry-After": junk}) is None
    assert retry_after({}) is None


def test_retry_after_reads_every_http_date_form() -> None:
    """RFC 9110's three date forms are all GMT, the asctime one (no zone) included."""
    now = 1_700_000_000.0
    later = now + 30
    forms = [email.utils.formatdate(later, usegmt=True),
             time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(later)),
             time.asctime(time.gmtime(later))]
    for form in forms:
        assert retry_after({"Retry-After": form}, now=now) == pytest.approx(30.0), form


def test_retry_after_with_absurd_date_fields_is_no_request() -> None:
    """A date whose fields overflow is unreadable, so no request (not an OverflowError)."""
    for junk in ("Sun, 06 Nov 99999999999999999999 08:49:37 GMT",
                 "Sun, 06 Nov 1994 99999999999999999999:49:37 GMT",
                 "Sun, 06 Nov 1994 08:49:37 +99999999999999999999"):
        assert retry_after({"Retry-After": junk}) is None


def test_backoff_grows_with_jitter_and_caps() -> None:
    """Each retry's wait lies in [half, all] of base·2^(n-1), capped at the maximum."""
    rng = random.Random(0)
    for attempt in range(1, 12):
        nominal = min(4.0, 0.1 * 2 ** (attempt - 1))
        waits = [backoff(attempt, base=0.1, cap=4.0, rng=rng) for _ in range(50)]
        assert all(nominal / 2 <= wait <= nominal for wait in waits)
        assert len(set(waits)) > 1  # jitter


def test_which_statuses_retry() -> None:
    """408, 409, 429 and 5xx retry; every other 4xx does not."""
    assert all(retryable_status(s) for s in (408, 409, 429, 500, 502, 503, 504, 599))
    assert not any(retryable_status(s) for s in (400, 401, 403, 404, 413, 422))


# -- against the server ------------------------------------------------------------------


async def test_429_honours_retry_after(double: OpenAIServerDouble, make_backend: Any) -> None:
    """A 429 with Retry-After: 1 is retried after the second it asked for, not after the
    backoff (0.01 s here): the wait the client chose, as its retry log line says (no
    stopwatch: a loaded machine stretches any wait)."""
    double.script("chat/completions", fail(429, **{"Retry-After": "1"}))
    backend: OpenAIBackend = make_backend()
    with structlog.testing.capture_logs() as logs:
        completion = await backend.aieng_generate(ask())
    await backend.aclose()
    assert completion is not None and completion.text == "You said: hello"
    assert len(double.calls_to("chat/completions")) == 2
    assert [e["wait_s"] for e in logs if e["event"] == "openai.retry"] == [1.0]


async def test_500_then_success(double: OpenAIServerDouble, make_backend: Any) -> None:
    """Two 5xx answers then a success: the third attempt answers."""
    double.script("chat/completions", fail(500), fail(503))
    backend: OpenAIBackend = make_backend()
    completion = await backend.aieng_generate(ask())
    await backend.aclose()
    assert completion is not None
    assert len(double.calls_to("chat/completions")) == 3


@pytest.mark.parametrize("status", [408, 409])
async def test_retried_4xx(double: OpenAIServerDouble, make_backend: Any, status: int) -> None:
    """408 and 409 are retried."""
    double.script("embeddings", fail(status))
    backend: OpenAIBackend = make_backend()
    assert await backend.aieng_embed(["x"], None) is not None
    await backend.aclose()
    assert len(double.calls_to("embeddings")) == 2


async def test_retries_run_out(double: OpenAIServerDouble, make_backend: Any) -> None:
    """After max_retries the last failure is raised with the attempts made."""
    double.script("chat/completions", *[fail(502)] * 3)
    backend: OpenAIBackend = make_backend(max_retries=2)
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    error = caught.value
    assert (error.kind, error.status, error.attempts) == ("http", 502, 3)
    assert "scripted failure" in error.body and "server" in error.hint


async def test_retry_after_beyond_backoff_max_is_not_awaited(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A server asking for a longer wait than backoff_max gets no retry; the error says."""
    double.script("chat/completions", fail(429, **{"Retry-After": "3600"}))
    backend: OpenAIBackend = make_backend(backoff_max=5.0)
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert caught.value.status == 429 and "3600.0 s" in caught.value.hint
    assert len(double.calls_to("chat/completions")) == 1
    # The wait asked for stays on the error: a gateway in front hands it on (Retry-After).
    assert caught.value.retry_after == 3600.0
    assert pickle.loads(pickle.dumps(caught.value)).retry_after == 3600.0


@pytest.mark.parametrize(("status", "hint"), [
    (400, "parameters"), (401, "check api_key"), (403, "api_key"),
    (404, "check base_url"), (422, "parameters")])
async def test_other_4xx_fail_at_once_with_a_hint(double: OpenAIServerDouble,
                                                  make_backend: Any, status: int,
                                                  hint: str) -> None:
    """Other 4xx answers are not retried and raise with the status and a hint."""
    double.script("chat/completions", fail(status))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert caught.value.status == status and hint in caught.value.hint
    assert len(double.calls_to("chat/completions")) == 1


async def test_unknown_model_on_the_server_says_check_model(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """The server's 404 for a model it lacks says to check base_url / model."""
    backend: OpenAIBackend = make_backend(model="not-on-the-server")
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert caught.value.status == 404 and "model" in caught.value.hint
    assert "not-on-the-server" in caught.value.body


async def test_read_timeout(double: OpenAIServerDouble, make_backend: Any) -> None:
    """A server slower than read_timeout fails with a timeout error (retried first)."""
    double.script("chat/completions", Scripted(hang=True), Scripted(hang=True))
    backend: OpenAIBackend = make_backend(read_timeout=0.2, max_retries=1)
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert caught.value.kind == "timeout" and caught.value.attempts == 2
    assert "read_timeout" in caught.value.hint


async def test_slow_then_fast_succeeds(double: OpenAIServerDouble, make_backend: Any) -> None:
    """One timed-out attempt, then an answer."""
    double.script("chat/completions", Scripted(hang=True))
    backend: OpenAIBackend = make_backend(read_timeout=0.2)
    assert await backend.aieng_generate(ask()) is not None
    await backend.aclose()


async def test_waiting_for_a_free_connection_names_max_connections(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """More concurrent calls than ``max_connections``: the one that waits past
    ``pool_timeout`` (not ``connect_timeout``: a queue behind long generations is no dead
    server) says it waited for a free connection and names the options."""
    double.script("chat/completions", Scripted(hang=True))
    backend: OpenAIBackend = make_backend(max_connections=1, connect_timeout=30.0,
                                          pool_timeout=0.3, max_retries=0)
    async with anyio.create_task_group() as group:
        group.start_soon(backend.aieng_generate, ask("holds the only connection"))
        with anyio.fail_after(60):  # the first call is in (a loaded machine is slow)
            while not double.calls_to("chat/completions"):
                await anyio.sleep(0.01)
        with pytest.raises(OpenAIError) as caught:
            await backend.aieng_generate(ask("waits for it"))
        group.cancel_scope.cancel()
    await backend.aclose()
    assert caught.value.kind == "timeout"
    assert "free connection" in caught.value.message
    assert "max_connections" in caught.value.hint and "1" in caught.value.message
    assert "pool_timeout" in caught.value.hint and "0.3 s" in caught.value.message
    assert len(double.calls_to("chat/completions")) == 1  # the second was never sent


async def test_connection_refused_is_retried_then_raised(make_backend: Any) -> None:
    """Nothing listening: connection errors are retried, then raised with a hint."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend: OpenAIBackend = make_backend(base_url=f"http://127.0.0.1:{port}/v1",
                                          max_retries=2)
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert caught.value.kind == "connection" and caught.value.attempts == 3
    assert "base_url" in caught.value.hint


async def test_api_key_never_in_errors_or_logs(double: OpenAIServerDouble, make_backend: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A wrong key echoed back by the server (as OpenAI does), retries, and failures:
    neither the key nor its visible ends appear in an error message or a log record."""
    wrong = "sk-wrong-9876543210fedcba-ALSOSECRET"
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        bad: OpenAIBackend = make_backend(api_key=wrong)
        with pytest.raises(OpenAIError) as unauthorized:
            await bad.aieng_generate(ask())
        await bad.aclose()
        double.script("chat/completions", fail(500), fail(429, **{"Retry-After": "0"}))
        good: OpenAIBackend = make_backend()
        assert await good.aieng_generate(ask()) is not None
        double.script("chat/completions", *[Scripted(
            status=500, body=f'{{"error": "upstream rejected key {API_KEY}"}}')] * 4)
        with pytest.raises(OpenAIError) as echoed:
            await good.aieng_generate(ask())
        await good.aclose()
    assert unauthorized.value.status == 401 and "check api_key" in unauthorized.value.hint
    assert "Incorrect API key provided" in unauthorized.value.body
    assert [entry["event"] for entry in logs].count("openai.retry") >= 2
    seen = " ".join([str(unauthorized.value), repr(unauthorized.value),
                     str(echoed.value), repr(echoed.value), caplog.text, repr(logs),
                     repr(bad), repr(bad.options), repr(good.options)])
    for secret in (wrong, API_KEY):
        assert secret not in seen
        assert secret[:8] not in seen and secret[-8:] not in seen


async def test_a_seed_makes_the_retry_waits_repeat(double: OpenAIServerDouble,
                                                   make_backend: Any) -> None:
    """Two components with the same ``seed`` wait the same jittered times before their
    retries (a replayed run repeats); another seed waits differently."""

    async def waits(seed: int) -> list[float]:
        double.script("chat/completions", fail(500), fail(503))
        backend: OpenAIBackend = make_backend(seed=seed, backoff_base=0.01)
        with structlog.testing.capture_logs() as logs:
            assert await backend.aieng_generate(ask()) is not None
        await backend.aclose()
        return [entry["wait_s"] for entry in logs if entry["event"] == "openai.retry"]

    first, again, other = await waits(7), await waits(7), await waits(8)
    assert len(first) == 2 and first == again and first != other
