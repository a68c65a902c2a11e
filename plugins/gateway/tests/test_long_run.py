"""The gateway over weeks: what thousands of requests from thousands of keys leave behind.

Each test calls the app in-process (an ASGI driver: the request's body, then a client that
stays or goes away after some of the stream) so that memory, tasks and descriptors are
the gateway's own; ``ameasure_growth`` reports what the measured requests retained. A
fake clock moves a second per request, so a minute of quiet and the regenerate window
pass within the test: what expires must be gone, not only ignored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import FlakyBackend
from aieng_gateway import Gateway, GatewaySettings, KeyStore
from aieng_gateway import _app as gateway_app
from aieng_gateway._keys import hash_key
from aieng_gateway._ratelimit import SWEEP_AT_LEAST, Limits, TokenBucket
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Feedback
from aieng_monitoring import Monitor, MonitorOptions

from aieng_core.testing import HashEmbedder, isolated_kernel
from aieng_core.testing.steady import ameasure_growth, measure_growth

pytestmark = pytest.mark.anyio

#: The most bytes a request may leave behind on average, once what is bounded has filled
#: (one retained entry of a dict keyed per request costs 100-400 bytes; the kernel's and
#: the libraries' bounded windows and caches still move by a couple of hundred kilobytes
#: in all, whatever the number of requests).
PER_REQUEST = 64
WARMUP, CALLS = 600, 2_000


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Backend(FlakyBackend):
    """FlakyBackend that keeps no record of its requests (the double's own list would be
    counted as the gateway's growth)."""

    @hookimpl
    async def aieng_generate(self, request: Any) -> Any:
        self.requests.clear()
        return await super().aieng_generate(request)

    @hookimpl
    def aieng_stream(self, request: Any) -> Any:
        self.requests.clear()
        return self._flaky_stream(request)


def _keys(path: Path, count: int, *, rpm: int | None = 600, tpm: int | None = 100_000
          ) -> list[str]:
    """``count`` keys written to a real key file in one transaction (``KeyStore.create``
    opens the file once per key: minutes for thousands)."""
    store = KeyStore(path)
    first, _ = store.create("first", rpm=rpm, tpm=tpm)
    keys = [first]
    rows = []
    for i in range(count - 1):
        key_id = f"{i:08x}"
        key = f"aieng-{key_id}-{'k' * 38}{i:05d}"
        keys.append(key)
        rows.append((key_id, f"user-{i}", hash_key(key), rpm, tpm, time.time()))
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO api_keys (id, name, hash, rpm, tpm, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.close()
    return keys


class CountingSink:
    """A feedback sink that counts the signals (the ``feedback-sqlite`` store's own long
    run is its plugin's test; its writes would take most of this one's time)."""

    def __init__(self) -> None:
        self.recorded = 0

    @hookimpl
    async def aieng_feedback_record(self, feedback: Feedback) -> None:
        self.recorded += 1


def _gateway(tmp: Path, sink: Any = None, **settings: Any) -> Gateway:
    """A gateway over :class:`Backend`, a monitor with a small window and few label
    values, and a feedback sink (``sink``, else a :class:`CountingSink`)."""
    monitor = Monitor(MonitorOptions(window=10, max_label_values=20))
    feedback = sink or CountingSink()

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": Backend(), "embed": HashEmbedder(16),
                               "monitor": monitor, "feedback": feedback},
                              name="test", timeout=60.0)  # a busy machine: no timeouts

    # Read once for the test: a reload replaces the copy, which would count as retained.
    return Gateway(build, keys=KeyStore(tmp / "keys.sqlite3", refresh_s=3_600),
                   settings=GatewaySettings(**settings),
                   kernel=lambda: isolated_kernel(loop_block_threshold=None))


async def asgi(app: Any, path: str, key: str, body: Any = None, *, method: str = "POST",
               cut_after: int | None = None, headers: dict[str, str] | None = None
               ) -> list[dict[str, Any]]:
    """One request to ``app``; the messages it sent. With ``cut_after``, the client goes
    away once that many body messages came (the next send fails, a disconnect is
    received)."""
    data = b"" if body is None else json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    gone = anyio.Event()
    read = False
    raw = [(b"host", b"gw"), (b"authorization", f"Bearer {key}".encode()),
           (b"content-type", b"application/json"),
           (b"content-length", str(len(data)).encode()),
           *((name.encode(), value.encode()) for name, value in (headers or {}).items())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("gw", 80),
             "client": ("127.0.0.1", 1), "headers": raw}

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": data, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            raise OSError("the client is gone")
        sent.append(message)
        bodies = sum(m["type"] == "http.response.body" for m in sent)
        if cut_after is not None and bodies >= cut_after:
            gone.set()

    await app(scope, receive, send)
    return sent


def _status(sent: list[dict[str, Any]]) -> int:
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    return int(starts[0]) if starts else 0


# -- per-key state ------------------------------------------------------------------------


def test_idle_keys_leave_no_buckets() -> None:
    """10,000 keys, each used once a minute apart from the next: the buckets of keys
    gone quiet (full again) are dropped, so memory holds those of the last minute or two,
    not one pair per key ever seen (about 400 bytes a key before)."""
    clock = Clock()
    limits = Limits(clock=clock)

    def request(i: int) -> None:
        clock.now += 0.05
        key = f"{i:08x}"
        assert limits.admit(key, 60, 10_000, 100) == 0
        limits.reconcile(key, 10_000, 100, 40)

    growth = measure_growth(request, warmup=2_000, calls=10_000)
    assert growth.per_call < 8, growth.report()
    # 2,400 keys a minute: the buckets of about two minutes of them at most, two a key.
    assert len(limits) <= 2 * 2 * 60 / 0.05 + SWEEP_AT_LEAST, len(limits)


def test_sweeps_look_at_each_bucket_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cost flat: 20,000 keys all active within one minute (no bucket idle, nothing to
    drop) are swept as the buckets double, so each bucket is looked at a few times in
    all, not at every request."""
    looked = 0
    idle = TokenBucket.idle

    def counted(self: TokenBucket) -> bool:
        nonlocal looked
        looked += 1
        return idle(self)

    monkeypatch.setattr(TokenBucket, "idle", counted)
    clock = Clock()
    limits = Limits(clock=clock)
    for i in range(20_000):
        clock.now += 0.001
        assert limits.admit(f"{i:08x}", 2, None, 0) == 0  # not full for 30 s
    assert len(limits) == 20_000
    assert looked <= 2 * 20_000, looked


def test_a_dropped_bucket_limits_as_the_kept_one_would() -> None:
    """Dropping a full bucket changes no answer: a key at its rpm still waits, one quiet
    for a minute gets its full rpm back, and a debt left by a run that outlasted the
    refill (its bucket dropped meanwhile) is still charged."""
    clock = Clock()
    limits = Limits(clock=clock)
    assert [limits.admit("a", 2, None, 0) for _ in range(3)] == [0, 0, 30]
    clock.now += 61
    limits.admit("other", 2, None, 0)  # a sweep is due: "a" is full again, dropped
    assert len(limits) == 1
    assert [limits.admit("a", 2, None, 0) for _ in range(3)] == [0, 0, 30]
    # A long agent run: reserved 100 of 600 tpm, its bucket full and dropped by the end.
    assert limits.admit("b", None, 600, 100) == 0
    clock.now += 120
    limits.admit("other", 2, None, 0)
    limits.reconcile("b", 600, reserved=100, used=1_100)  # 1,000 over: in debt
    assert limits.admit("b", None, 600, 100) > 0


async def test_thousands_of_keys_models_and_users_leave_nothing_behind(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """2,000 requests past a warm-up, each from another key, with another `user`, another
    conversation and another client-chosen model name; streamed and not, failing
    upstream, cut mid-stream, over the rate limit (429), with a random invalid key,
    and feedback with a fresh Idempotency-Key: once the bounded state has filled, the
    requests retain almost nothing, hold no task or descriptor, the rate-limit buckets
    are those of the last minutes' keys, the regenerate memory that of the window, and
    ``/metrics`` stays the same size."""
    caplog.set_level(logging.ERROR)  # pytest keeps every record it sees: not the gateway's
    keys = _keys(tmp_path / "keys.sqlite3", WARMUP + CALLS + 1, rpm=1)  # again: 429
    gateway = _gateway(tmp_path)
    clock = Clock()
    gateway.limits = Limits(clock=clock)
    gateway._now = clock
    app = gateway.app

    async def request(i: int) -> None:
        clock.now += 1.0
        key = keys[i]
        kind = i % 8
        text = f"question {i}" + (" FAIL" if kind == 1 else " BREAK" if kind == 2 else "")
        body = {"model": "test", "user": f"user-{i}", "stream": kind in (0, 2, 3),
                "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
        if kind == 3:
            await asgi(app, "/v1/chat/completions", key, body, cut_after=1)
        elif kind == 4:  # over the key's rpm: a second request at once
            body["model"] = f"model-{i}"  # the client's own name: 404, no series
            await asgi(app, "/v1/chat/completions", key, body)
            await asgi(app, "/v1/chat/completions", key, body)
        elif kind == 5:
            sent = await asgi(app, "/v1/chat/completions", f"aieng-{i:08x}-{'x' * 43}", body)
            assert _status(sent) == 401
        elif kind == 6:
            await asgi(app, "/v1/feedback", key, {"run_id": f"chatcmpl-{i}", "kind": "thumbs",
                                                  "value": 1},
                       headers={"idempotency-key": f"retry-{i}"})
        elif kind == 7:
            await asgi(app, f"/v1/models/model-{i}", key, method="GET")
        else:
            await asgi(app, "/v1/chat/completions", key, body)

    metrics: list[int] = []

    async def scrape() -> None:
        sent = await asgi(app, "/metrics", keys[0], method="GET")
        metrics.append(sent[1]["body"].count(b"\n"))

    async def measured(i: int) -> None:
        await request(i + 1)
        if i == WARMUP - 1:  # the monitor's label sets have filled
            await scrape()

    async with gateway.running():
        growth = await ameasure_growth(measured, warmup=WARMUP, calls=CALLS)
        await scrape()
        assert growth.per_call < PER_REQUEST, growth.report()
        assert not growth.held, growth.report()
        assert len(gateway.limits) <= 2 * 2 * 60 + SWEEP_AT_LEAST
        assert len(gateway._recent) <= gateway.settings.regenerate_window + 1
        assert not gateway._inflight
        statuses = {status for _, status in gateway.requests}
        assert {200, 401, 404, 429, 499, 502} <= statuses, gateway.requests
        assert len(gateway.requests) <= 7 * 8  # routes x statuses, never per name
    assert metrics[1] <= metrics[0] + 50, metrics  # the same series, counted further


def test_a_key_file_refreshed_again_and_again_is_held_once(tmp_path: Path) -> None:
    """The key store's reload (every ``refresh_s``, for weeks) replaces its copy: 500
    reloads of the file hold one copy of its keys, and no connection or descriptor."""
    path = tmp_path / "keys.sqlite3"
    _keys(path, 100)
    store = KeyStore(path)

    def reload(i: int) -> None:
        store.refresh(force=True)

    growth = measure_growth(reload, warmup=20, calls=500)
    assert growth.per_call < 32, growth.report()
    assert not growth.held, growth.report()
    assert store.live == 100


# -- per-request state --------------------------------------------------------------------


class SlowSink:
    """A feedback sink that holds every signal until :attr:`open` is set."""

    def __init__(self) -> None:
        self.open = anyio.Event()
        self.waiting = 0
        self.most = 0
        self.recorded = 0

    @hookimpl
    async def aieng_feedback_record(self, feedback: Feedback) -> None:
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        self.recorded += 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_slow_feedback_sink_holds_a_bounded_backlog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of streams cut by their clients, each an ``early_stop`` signal, against a
    sink that cannot keep up: at most ``MAX_PENDING_FEEDBACK`` signals wait (a task each),
    the rest are dropped and counted, and every request is answered."""
    monkeypatch.setattr(gateway_app, "MAX_PENDING_FEEDBACK", 50, raising=False)
    (key,) = _keys(tmp_path / "keys.sqlite3", 1, rpm=None, tpm=None)
    sink = SlowSink()
    gateway = _gateway(tmp_path, sink=sink)
    body = {"model": "test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with gateway.running():
        for _ in range(200):
            sent = await asgi(gateway.app, "/v1/chat/completions", key, body, cut_after=1)
            assert _status(sent) == 200
        await anyio.sleep(0.05)
        assert sink.most <= 50, sink.most
        assert getattr(gateway, "feedback_dropped", 0) == 150
        sink.open.set()
        with anyio.fail_after(10):
            while sink.waiting or getattr(gateway, "feedback_pending", 0):
                await anyio.sleep(0.01)
    assert sink.recorded == 50
