"""Time in the kernel: deadlines a host sets around a call end it and what it left running,
timeouts are validated and name the setting to raise, the loop watchdog does not take a
busy machine for a blocked loop, a wall clock that jumps changes no duration and fires no
deadline, SQLite and the build lock wait no longer than their caller."""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import pytest
import structlog
from aieng_hookspecs import (
    PipelineContext,
    blocking,
    build_lock,
    enable_wal,
    hookimpl,
    lock_path,
    open_read_only,
)
from aieng_hookspecs.types import (
    AgentFinished,
    Completion,
    Delta,
    Document,
    Event,
    Hit,
    LoopBlocked,
    Request,
    RunFinished,
    StageFinished,
)
from structlog.testing import capture_logs

from aieng_core import ConfigError, HookError, Kernel
from aieng_core import watchdog as watchdog_module
from aieng_core.agent import Agent, AgentOptions
from aieng_core.dispatch import StagePolicy
from aieng_core.logs import configure_logging
from aieng_core.testing import EventCapture, isolated_kernel, settle

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


def _hit(doc_id: str) -> Hit:
    return Hit(document=Document(id=doc_id, text=f"text {doc_id}"), score=1.0, rank=1)


# -- options are validated, naming themselves and their unit ---------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("loop_block_threshold", "0.25"), ("loop_block_threshold", 0),
    ("loop_block_threshold", -1), ("loop_block_threshold", math.nan),
    ("loop_block_threshold", math.inf), ("loop_block_threshold", True),
    ("worker_threads", 0), ("worker_threads", 2.5), ("worker_threads", "8"),
    ("worker_threads", True), ("bus_buffer", 0), ("bus_buffer", "64"),
])
def test_kernel_options_are_checked_when_the_kernel_is_made(option: str, value: Any) -> None:
    """A bad watchdog threshold, thread or buffer count is refused by ``Kernel(...)`` with
    an error naming the option (and the unit of a duration): a string threshold crashed
    the host's ``async with`` later with an exception group from the watchdog's task, and
    0, a negative number or NaN published a ``loop.blocked`` event every 10 ms."""
    with pytest.raises(ValueError, match=rf"Kernel\({option}=\.\.\.\) takes ") as caught:
        Kernel(env={}, entry_points=[], **{option: value})
    assert repr(value) in str(caught.value)
    if option == "loop_block_threshold":
        assert "seconds" in str(caught.value) and "None for no watchdog" in str(caught.value)


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "5s", True])
def test_drain_timeout_is_checked_when_set(value: Any) -> None:
    """``kernel.drain_timeout`` takes finite seconds >= 0 (0: no wait); anything else is
    refused when set, naming it, not when the kernel exits."""
    kernel = Kernel(env={}, entry_points=[])
    kernel.drain_timeout = 0
    with pytest.raises(ValueError, match=r"Kernel\.drain_timeout takes a finite number of "
                                         r"seconds >= 0"):
        kernel.drain_timeout = value
    assert kernel.drain_timeout == 0


def test_a_stage_policy_takes_no_bool_for_a_timeout() -> None:
    """``StagePolicy(timeout=True)`` was a one-second timeout; it is refused."""
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        StagePolicy(timeout=True)


@pytest.mark.parametrize(("written", "seconds"), [("30s", "30"), ("500ms", "0.5"),
                                                  ("2m", "120"), ("1.5 h", "5400")])
async def test_a_timeout_written_with_a_unit_says_what_to_write(
        aieng_kernel: Kernel, written: str, seconds: str) -> None:
    """Durations are numbers of seconds (TOML has no unit): ``timeout = "30s"`` is refused
    naming the key and saying what to write instead."""
    with pytest.raises(ConfigError) as caught:
        aieng_kernel.pipeline({"pipeline": {"name": "p"}, "stage": {"generate": {
            "timeout": written}}, "components": {"llm": {"use": "extractive"}}})
    message = str(caught.value)
    assert "stage.generate.timeout" in message
    assert f"without unit: write {seconds})" in message and "seconds" in message


# -- a timeout names the setting to raise -----------------------------------------------------


class Waits:
    """A retriever, backend, stream and index that wait for ever (until cancelled)."""

    @hookimpl
    async def aieng_retrieve(self) -> list[Hit]:
        await anyio.Event().wait()
        return []

    @hookimpl
    async def aieng_index(self) -> int:
        await anyio.Event().wait()
        return 0


class Stalls:
    """A stream that gives one delta, then none."""

    @hookimpl
    def aieng_stream(self) -> AsyncIterator[Delta]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[Delta]:
        yield Delta("a", 0)
        await anyio.Event().wait()


async def test_a_timeout_names_the_setting_it_came_from(aieng_kernel: Kernel) -> None:
    """A stage's timeout names ``[stage.NAME] timeout`` when that set it, else both that
    and ``[pipeline] timeout``; indexing (no stage) names ``[pipeline] timeout``; a stream
    that stalls names the generate stage's. The hint said "raise the stage's timeout"."""
    own = aieng_kernel.compose({"w": Waits()}, name="own", stages=["retrieve"],
                               stage={"retrieve": {"timeout": 0.05}})
    with pytest.raises(HookError, match="timed out after 0.05 s") as caught:
        await own.run("q")
    assert caught.value.hint.startswith("raise [stage.retrieve] timeout (seconds; inf for no "
                                        "limit)")
    inherited = aieng_kernel.compose({"w": Waits()}, name="inherited", stages=["retrieve"],
                                     timeout=0.05)
    with pytest.raises(HookError) as caught:
        await inherited.run("q")
    assert "raise [stage.retrieve] timeout or [pipeline] timeout" in caught.value.hint
    with pytest.raises(HookError) as caught:
        await inherited.index([Document(id="d", text="t")])
    assert caught.value.hint.startswith("raise [pipeline] timeout (seconds")
    stalled = aieng_kernel.compose({"llm": Stalls()}, name="stalled",
                                   stage={"generate": {"timeout": 0.05}})
    with pytest.raises(HookError, match="no delta for 0.05 s") as caught:
        await stalled.run("q", on_delta=lambda delta: None)
    assert caught.value.hint.startswith("raise [stage.generate] timeout (seconds")


# -- a host's deadline ends the call and what it left running ----------------------------------


class Steps:
    """``@blocking`` impls (a retriever, a backend, an index) that work in steps until their
    caller is cancelled, checking between steps, as a model's decoding loop would."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.ended = threading.Event()

    def _work(self) -> None:
        self.started.set()
        try:
            while True:
                anyio.from_thread.check_cancelled()
                time.sleep(0.001)  # one step of work
        finally:
            self.ended.set()

    @hookimpl
    @blocking
    def aieng_retrieve(self) -> list[Hit]:
        self._work()
        return []

    @hookimpl
    @blocking
    def aieng_generate(self) -> Completion:
        self._work()
        return Completion(text="never")

    @hookimpl
    @blocking
    def aieng_index(self) -> int:
        self._work()
        return 0


async def _stream(pipeline: Any) -> None:
    async with pipeline.stream("q") as deltas:
        async for _ in deltas:
            pass


CALLS: dict[str, Callable[[Any], Awaitable[object]]] = {
    "run": lambda pipeline: pipeline.run("q"),
    "stream": _stream,
    "index": lambda pipeline: pipeline.index([Document(id="d", text="t")]),
    "agent": lambda pipeline: Agent(pipeline).run("q"),
}


@BOTH
@pytest.mark.parametrize("entry", list(CALLS))
async def test_a_hosts_deadline_ends_the_call_and_its_thread(entry: str) -> None:
    """A host's ``fail_after`` whose deadline passes while a ``@blocking`` impl works in its
    thread (``run``, ``stream``, ``index``, an agent's model call) ends the call with the
    host's ``TimeoutError``; the impl's thread ends at its next step, the worker slot comes
    back, and the run published nothing after its end."""
    async with isolated_kernel(default_embedder=None) as kernel:
        capture = EventCapture(kernel)
        steps = Steps()
        stages = {"run": ["retrieve"], "stream": ["generate"], "agent": ["generate"]}
        pipeline = kernel.compose({"steps": steps}, stages=stages.get(entry), timeout=None)
        scopes: list[anyio.CancelScope] = []

        async def expire() -> None:  # the deadline passes once the impl works
            await settle(steps.started.is_set)
            scopes[0].deadline = anyio.current_time()

        async with anyio.create_task_group() as tg:
            tg.start_soon(expire)
            with pytest.raises(TimeoutError):
                with anyio.fail_after(3600) as scope:
                    scopes.append(scope)
                    await CALLS[entry](pipeline)
        await settle(steps.ended.is_set)
        limiter = kernel.thread_limiter
        assert limiter is not None
        await settle(lambda: limiter.borrowed_tokens == 0)
        ends = [e for e in capture.events if isinstance(e, (RunFinished, AgentFinished))]
        if entry != "index":
            assert ends and {e.status for e in ends} == {"cancelled"}
            last = capture.events.index(ends[-1])
            assert [e.name for e in capture.events[last + 1:] if e.run_id] == []


class LateEmitter:
    """A ``@blocking`` retriever whose thread, once its caller has left, emits an event
    through its context (and then a marker outside any run)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.context: PipelineContext | None = None
        self.started = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.context = context

    @hookimpl
    @blocking
    def aieng_retrieve(self) -> list[Hit]:
        assert self.context is not None
        self.started.set()
        try:
            self.go.wait(30)
            self.context.emit(Late())
            return []
        finally:
            self.done.set()


class Late(Event):
    name: ClassVar[str] = "test.late"


@BOTH
async def test_a_thread_left_behind_publishes_nothing_for_the_ended_run() -> None:
    """A worker thread still running after its run was cancelled (its impl does not check
    for the cancellation) emits through its context: the event is dropped, not published
    for a run whose ``run.finished`` subscribers already had."""
    async with isolated_kernel() as kernel:
        capture = EventCapture(kernel)
        late = LateEmitter(kernel)
        pipeline = kernel.compose({"late": late}, stages=["retrieve"], timeout=None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.run, "q")
            await settle(late.started.is_set)
            tg.cancel_scope.cancel()
        [finished] = capture.of(RunFinished)
        assert finished.status == "cancelled"
        late.go.set()
        await settle(late.done.is_set)
        assert not capture.of(Late), capture.names()
        await pipeline.aclose()


@BOTH
async def test_closing_waits_for_a_thread_its_run_left_behind() -> None:
    """A pipeline closed after a host's deadline cut a run short waits for the ``@blocking``
    thread still running in a component before closing it (a model or an index freed
    under a thread still using it); past ``drain_timeout`` it closes anyway, warning with
    the impl's name."""
    trail: list[str] = []

    class Lingers:
        def __init__(self) -> None:
            self.started = threading.Event()
            self.release = threading.Event()

        @hookimpl
        @blocking
        def aieng_retrieve(self) -> list[Hit]:
            self.started.set()
            self.release.wait(30)
            trail.append("thread ended")
            return []

        @hookimpl
        def aieng_pipeline_close(self) -> None:
            trail.append("closed")

    async with isolated_kernel() as kernel:
        for patient in (True, False):
            trail.clear()
            lingers = Lingers()
            pipeline = kernel.compose({"lingers": lingers}, stages=["retrieve"], timeout=None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipeline.run, "q")
                await settle(lingers.started.is_set)
                tg.cancel_scope.cancel()
            kernel.drain_timeout = 3600 if patient else 0
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pipeline.aclose)
                    if patient:
                        await anyio.wait_all_tasks_blocked()
                        assert trail == []  # not closed under the running thread
                        lingers.release.set()
            lingers.release.set()
            await settle(lambda: "thread ended" in trail)
            if patient:
                assert trail == ["thread ended", "closed"]
            else:
                assert trail[0] == "closed"
                [warning] = [e for e in logs if e["event"] == "pipeline.closing_under_threads"]
                assert warning["threads"] == {"lingers.aieng_retrieve": 1}
                assert "check_cancelled" in warning["hint"]


@BOTH
async def test_a_build_lock_wait_ends_with_its_callers_deadline(tmp_path: Path) -> None:
    """A ``@blocking`` impl waiting in :func:`build_lock` for another process's build (here
    another open file's lock) stops waiting when its caller's deadline passes: its thread
    ends at once instead of waiting out the other build (minutes of a conversion)."""
    import fcntl

    entry = tmp_path / "model"
    holder = os.open(lock_path(entry), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another build holds the entry
    waiting, ended = threading.Event(), threading.Event()

    class Log:
        def info(self, event: str, **fields: Any) -> None:
            if event == "cache.build_waiting":
                waiting.set()

        def debug(self, event: str, **fields: Any) -> None:
            pass

    def build() -> None:
        try:
            with build_lock(entry, log=Log()):
                pass
        finally:
            ended.set()

    try:
        async with anyio.create_task_group() as tg:
            async def deadline() -> None:  # the caller's deadline passes while it waits
                await settle(waiting.is_set)
                tg.cancel_scope.cancel()

            tg.start_soon(deadline)
            await anyio.to_thread.run_sync(build, abandon_on_cancel=True)
        # Old: the thread stayed blocked until the other build released the lock.
        assert await anyio.to_thread.run_sync(ended.wait, 10)
    finally:
        os.close(holder)  # releases the lock: a thread of the old code ends too
        await anyio.to_thread.run_sync(ended.wait, 10)


# -- the watchdog on a busy machine ------------------------------------------------------------


class AllCpuWait:
    """A fake :class:`~aieng_core.watchdog.CpuWait`: the system says the loop's thread
    spent all its time waiting for a CPU (a machine busy with other processes)."""

    def __call__(self) -> float:
        return time.perf_counter()

    def close(self) -> None:
        pass


async def test_a_stall_the_wait_for_a_cpu_explains_is_no_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A late wake-up that the system says was spent waiting for a CPU (a loaded CI box)
    is logged at debug as ``loop.starved``, with no ``loop.blocked`` event or warning
    blaming the impl that happened to be running: a conformance suite failed on that."""
    monkeypatch.setattr(watchdog_module, "CpuWait", AllCpuWait, raising=False)

    class Descheduled:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            time.sleep(0.3)  # noqa: ASYNC251 - the loop's thread does not run for 0.3 s
            return [_hit("d")]

    with capture_logs() as logs:
        async with isolated_kernel() as kernel:
            capture = EventCapture(kernel)
            await kernel.compose({"d": Descheduled()}, stages=["retrieve"]).run("q")
            await settle(lambda: bool(capture.of(LoopBlocked)) or any(
                e["event"] == "loop.starved" for e in logs))
    assert not capture.of(LoopBlocked)
    starved = [e for e in logs if e["event"] == "loop.starved"]
    assert starved and starved[0]["cpu_wait_s"] >= starved[0]["duration_s"] >= 0.2
    assert not [e for e in logs if e["event"] == "loop.blocked"]


def test_the_cpu_wait_is_read_where_the_system_says_it() -> None:
    """On Linux the loop's thread's wait for a CPU is read from its schedstat (it never
    goes back); elsewhere, or once closed, it is 0 and nothing is taken out of a stall."""
    wait = watchdog_module.CpuWait()
    first = wait()
    assert first >= 0.0
    if Path("/proc/thread-self/schedstat").exists():
        assert wait() >= first
    wait.close()
    assert wait() == 0.0


# -- a wall clock that jumps -----------------------------------------------------------------


class WallClock:
    """A fake ``time.time``: the real one plus an offset the test moves (an NTP step, a
    laptop woken, a VM resumed)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.real = time.time

    def __call__(self) -> float:
        return self.real() + self.offset


@BOTH
async def test_a_wall_clock_jumping_mid_run_changes_no_duration_and_fires_no_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall clock stepping back an hour during one stage and forward a day during the
    next: no negative or day-long duration in the run, its stages or an agent's run, no
    timeout (every deadline is on the monotonic clock), no crash."""
    clock = WallClock()
    monkeypatch.setattr(time, "time", clock)

    class Jumps:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            clock.offset -= 3600.0
            await anyio.lowlevel.checkpoint()
            return [_hit("a")]

        @hookimpl
        async def aieng_generate(self, request: Request) -> Completion:
            clock.offset += 86400.0
            await anyio.lowlevel.checkpoint()
            return Completion(text="answer")

    async with isolated_kernel() as kernel:
        capture = EventCapture(kernel)
        pipeline = kernel.compose({"j": Jumps()}, timeout=5)
        result = await pipeline.run("q")
        agent = await Agent(pipeline, AgentOptions(timeout=60)).run("q")
    assert result.status == "ok" and agent.status == "answered"
    durations = [result.stages[i].duration_s for i in range(len(result.stages))]
    durations += [e.duration_s for e in capture.of(StageFinished)]
    durations += [e.duration_s for e in capture.of(RunFinished)]
    durations += [agent.duration_s, *(s.duration_s for s in agent.steps)]
    assert all(0 <= d < 3600 for d in durations), durations


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/St_Johns"])
def test_log_lines_carry_utc_times_whatever_the_zone(monkeypatch: pytest.MonkeyPatch,
                                                     zone: str) -> None:
    """The kernel's JSON log lines write their time in UTC with its zone (``Z``) under an
    exotic local zone (+14:00, -03:30): it reads back as the moment it was written (a
    local time taken for UTC would be hours off)."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    stream = io.StringIO()
    try:
        configure_logging(stream=stream, level="INFO", json=True)
        structlog.get_logger("t").info("thing.happened")
    finally:
        structlog.reset_defaults()
        monkeypatch.undo()
        time.tzset()
    stamp = json.loads(stream.getvalue())["timestamp"]
    assert stamp.endswith("Z")
    written = datetime.fromisoformat(stamp)
    assert written.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - written) < timedelta(hours=1)


# -- SQLite's waits for a lock -------------------------------------------------------------------


def _locked(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (v)")
    holder.execute("BEGIN EXCLUSIVE")
    return holder


@pytest.mark.parametrize("timeout", [math.nan, -1.0, math.inf, "5s", True])
def test_a_lock_wait_takes_finite_seconds(tmp_path: Path, timeout: Any) -> None:
    """``enable_wal`` and ``open_read_only`` refuse a timeout that is not finite seconds
    >= 0, naming it: a NaN retried for ever while another connection held the lock."""
    path = tmp_path / "x.db"
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(ValueError, match="timeout takes a finite number of seconds >= 0"):
        enable_wal(conn, timeout=timeout)
    with pytest.raises(ValueError, match="timeout takes a finite number of seconds >= 0"):
        open_read_only(path, timeout=timeout)
    conn.close()


def test_a_lock_held_past_the_wait_names_the_timeout(tmp_path: Path) -> None:
    """"database is locked" past the timeout says how long was waited and which setting
    to raise; it stays an ``OperationalError`` with SQLite's busy code."""
    path = tmp_path / "x.db"
    holder = _locked(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as caught:
            enable_wal(conn, timeout=0)
        assert "timeout=0 s" in str(caught.value) and "raise the timeout" in str(caught.value)
        assert caught.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
        conn.close()
        with pytest.raises(sqlite3.OperationalError, match=r"timeout=0\.01 s"):
            open_read_only(path, timeout=0.01)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
