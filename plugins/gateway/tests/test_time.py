"""Time at the gateway: buckets that a clock jumping back or ahead neither blocks nor
floods, a stream that stalls mid-answer ended by the idle limit (an error event, the run
cancelled, charged what it used), times shown with their zone whatever ``TZ`` says,
time settings refused when they are no finite number, feedback ids scoped by key, and
an ``ApiError`` that pickles. Clocks are fakes moved by the tests, never a sleep."""

from __future__ import annotations

import json
import pickle
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from _support import FlakyBackend, make_gateway
from aieng_gateway import GatewaySettings, KeyStore, Limits, TokenBucket
from aieng_gateway._protocol import ApiError
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, Request
from click.testing import CliRunner

from aieng_core.cli import cli
from aieng_core.testing import ManualClock


@pytest.fixture
def exotic_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``TZ`` at UTC+14 (Kiritimati: a date ahead of most of the world)."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- the buckets ------------------------------------------------------------------------


def test_a_clock_stepped_back_an_hour_holds_no_key_back() -> None:
    """A clock that goes back (a wall clock given as the buckets' clock, stepped by NTP)
    adds nothing and takes nothing: a full bucket stays full, not an hour in debt."""
    clock = ManualClock(10_000.0)
    bucket = TokenBucket(60, clock=clock)
    assert bucket.take(30) == 0
    clock.now -= 3600
    assert bucket.wait_for(30) == 0  # the 30 left are still there
    assert bucket.take(30) == 0 and bucket.take(1) == pytest.approx(1.0)
    clock.now += 1  # and it refills from the time seen after the jump
    assert bucket.take(1) == 0


def test_a_clock_jumping_ahead_refills_to_full_and_no_further() -> None:
    """A jump ahead of a day grants the bucket's capacity, never a burst past it."""
    clock = ManualClock(0.0)
    limits = Limits(clock=clock)
    assert all(limits.admit("k", 5, None, 0) == 0 for _ in range(5))
    assert limits.admit("k", 5, None, 0) > 0
    clock.now += 86_400
    assert [limits.admit("k", 5, None, 0) for _ in range(6)] == [0] * 5 + [12]


# -- a stream that stalls ---------------------------------------------------------------


class Stalls(FlakyBackend):
    """Streams its first word, then nothing until cancelled (a model server gone quiet
    mid-answer); ``cancelled`` is set when the kernel ends it."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled_cancelled = threading.Event()

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return self._stalls()

    async def _stalls(self) -> AsyncIterator[Delta]:
        yield Delta(text="You", index=0)
        try:
            await anyio.sleep(120)
        except anyio.get_cancelled_exc_class():
            self.stalled_cancelled.set()
            raise
        yield Delta(text="", index=1, finish_reason="stop")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_a_stream_that_stalls_mid_answer_ends_with_an_error_event(
        tmp_path: Path) -> None:
    """No delta within the generate stage's timeout (the idle limit, here 0.5 s): the client
    gets the delta it had, a ``data: {"error"}`` event with code ``upstream_timeout``
    naming the limit, then ``[DONE]``: never a hang. The stalled generation is cancelled,
    and the key is charged its prompt's estimate plus the one delta sent."""
    backend = Stalls()
    gateway = make_gateway(tmp_path, backend=backend, timeout=0.5)
    clock = ManualClock(0.0)  # the buckets do not refill while the test runs
    gateway.limits = Limits(clock=clock)
    assert gateway.keys is not None
    key, record = gateway.keys.create("stalls", tpm=10_000)
    gateway.keys.refresh(force=True)
    prompt = "x" * 40  # 10 tokens estimated
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            answer = await client.post("/v1/chat/completions", json={
                "model": "test", "stream": True, "max_tokens": 500,
                "messages": [{"role": "user", "content": prompt}]})
    assert answer.status_code == 200
    events = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "You"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_timeout" and "no delta for 0.5 s" in error["message"]
    assert events[-1] == "[DONE]"
    assert backend.stalled_cancelled.is_set()
    assert gateway.limits._tokens[record.id].level == 10_000 - (10 + 1)


# -- times shown, settings --------------------------------------------------------------


def test_keys_list_writes_times_in_utc_with_their_zone(tmp_path: Path,
                                                     exotic_zone: None) -> None:
    """``aieng keys list`` writes created / revoked as ISO 8601 UTC with its ``Z``, the
    same whatever ``TZ`` the shell has (a time without a zone reads as local time)."""
    path = str(tmp_path / "keys.sqlite3")
    store = KeyStore(path)
    _, record = store.create("zone")
    [revoked] = store.revoke(record.id)
    assert revoked.revoked is not None
    listed = CliRunner().invoke(cli, ["keys", "list", "--keys", path])
    assert listed.exit_code == 0, listed.output
    row = listed.output.splitlines()[1]
    stamps = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row)
    assert stamps == [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
                      for ts in (record.created, revoked.revoked)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -5.0])
def test_time_settings_are_finite_positive_seconds(tmp_path: Path, value: float) -> None:
    """``regenerate_window`` and the key store's ``refresh_s``: NaN (a window that never
    holds, keys never reloaded), infinity, 0 or a negative is refused naming the
    setting."""
    with pytest.raises(ValueError, match="regenerate_window must be a positive"):
        GatewaySettings(regenerate_window=value)
    with pytest.raises(ValueError, match="refresh_s must be a positive, finite number"):
        KeyStore(tmp_path / "keys.sqlite3", refresh_s=value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_serve_refuses_a_graceful_timeout_that_is_no_finite_number(tmp_path: Path,
                                                                  value: str) -> None:
    """``aieng serve --graceful-timeout nan`` (or ``inf``) is a usage error naming the
    option, before anything loads: not a ``cannot convert float NaN to integer``."""
    from aieng_gateway._cli import serve

    pipeline = tmp_path / "p.toml"
    pipeline.write_text("[pipeline]\nname = \"p\"\n")
    result = CliRunner().invoke(serve, [str(pipeline), "--no-auth",
                                        "--graceful-timeout", value])
    assert result.exit_code == 2, result.output
    assert "--graceful-timeout" in result.output
    assert "finite number of seconds" in result.output


# -- feedback ids, errors ----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_feedback_id_is_scoped_by_the_key_that_sends_it(tmp_path: Path) -> None:
    """Another key sending the same id for the same run first (a run id passed around)
    neither makes the owner's signal a "retry" nor refuses it: each key's signal is
    stored, its id ``<key id>:<id>``; each key's retry is still one signal, answered with
    the id as it was sent. An id too long to scope is a 422 naming the field."""
    gateway = make_gateway(tmp_path, timeout=30)
    assert gateway.keys is not None
    owner, owner_record = gateway.keys.create("owner")
    other, other_record = gateway.keys.create("other")
    gateway.keys.refresh(force=True)
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            def auth(key: str, feedback_id: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {key}", "Idempotency-Key": feedback_id}

            run = await client.post("/v1/chat/completions", headers={
                "Authorization": f"Bearer {owner}"}, json={
                "model": "test", "messages": [{"role": "user", "content": "hi"}]})
            run_id = run.json()["id"]
            down = {"run_id": run_id, "kind": "thumbs", "value": -1}
            up = {**down, "value": 1}
            first = await client.post("/v1/feedback", json=down, headers=auth(other, "f-1"))
            mine = await client.post("/v1/feedback", json=up, headers=auth(owner, "f-1"))
            again = await client.post("/v1/feedback", json=up, headers=auth(owner, "f-1"))
            long = await client.post("/v1/feedback", json=up,
                                     headers=auth(owner, "x" * 192))
            rows = await gateway.pipeline.components["feedback"].query(  # type: ignore[attr-defined]
                run_id=run_id)
    assert first.status_code == mine.status_code == again.status_code == 200, mine.text
    assert mine.json()["feedback_id"] == again.json()["feedback_id"] == "f-1"
    assert sorted((r.value, r.metadata["feedback_id"]) for r in rows) == [
        (-1.0, f"{other_record.id}:f-1"), (1.0, f"{owner_record.id}:f-1")]
    assert long.status_code == 422
    assert long.json()["error"]["param"] == "metadata.feedback_id"
    assert "at most 191 characters" in long.json()["error"]["message"]


def test_an_api_error_pickles_with_every_field() -> None:
    """A host sending the gateway's error to a worker process gets it back whole (its
    fields are keyword-only: ``Exception``'s own pickling called ``ApiError(message)``)."""
    error = ApiError(429, "slow down", param="max_tokens", code="rate_limit_exceeded",
                     kind="rate_limit_error", headers={"Retry-After": "3"})
    back = pickle.loads(pickle.dumps(error))
    assert (back.status, back.message, back.param, back.code, back.kind, back.headers) == (
        429, "slow down", "max_tokens", "rate_limit_exceeded", "rate_limit_error",
        {"Retry-After": "3"})
    assert back.body() == error.body() and str(back) == str(error)
