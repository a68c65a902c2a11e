"""The kernel in the long run: one process serving runs for weeks keeps nothing of each run
(whatever its ending), nothing of the pipelines it built and closed, nothing of the kernels
it entered and left; its in-memory index holds what its corpus needs, not the history of
its re-indexings; a slow subscriber's drops are reported once a tick. Each measure counts
the bytes the measured calls retained (``ameasure_growth``), objects alive or lines
logged, never time."""

from __future__ import annotations

import contextlib
import gc
import logging
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import structlog
import trio
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Delta,
    Document,
    Event,
    Request,
    RunStarted,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from structlog.testing import capture_logs
from trio.testing import MockClock

from aieng_core import Kernel
from aieng_core._errors import HookError
from aieng_core.agent import Agent
from aieng_core.builtins import MemoryOptions, MemoryRetriever, PromptBuilder, PromptOptions
from aieng_core.testing.conformance._resources import leaks, snapshot
from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

#: The most bytes a call may retain: a retained object costs 50-200 B, so a leak of one
#: per call shows; bounded noise (a dict resized once) divides down over the calls.
PER_CALL = 32


def bound(backend: str, asyncio_bound: int = PER_CALL) -> int:
    """The most bytes a run may retain on ``backend``. trio keeps up to 1,000 cancel scopes
    whose deadlines no longer count in its deadline heap, and prunes them all at once:
    where a measure starts and ends in that cycle moves the total by up to a few hundred
    kB, so trio's bound only catches a run's whole state kept (its scope, trace and
    context: kilobytes); asyncio's, the smaller leaks of the same code."""
    return 16 * PER_CALL if backend == "trio" else asyncio_bound

@pytest.fixture
def quiet() -> Iterator[None]:
    """The kernel's warnings (a failed run's ``hook.failed``) not written: pytest keeps
    what a test writes, which a measure would count as the runs' (the kit's fixture
    restores structlog's configuration after the test)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    yield


@contextlib.contextmanager
def traced() -> Iterator[None]:
    """Memory traced from here (a warm-up before :func:`ameasure_growth`: an object made
    untraced and replaced in a bounded structure during the measure counts as growth)."""
    tracemalloc.start(1)
    try:
        yield
    finally:
        tracemalloc.stop()


def quiet_kernel() -> Kernel:
    """A kernel without the loop watchdog: a measure's full collections stall the loop,
    and its reports would be counted."""
    return Kernel(env={}, entry_points=[], loop_block_threshold=None)


DOCS = [Document(id=f"d{n}", text=f"document {n} on topic {n % 7} and the bus") for n in
        range(30)]


class Answers:
    """A backend double that keeps nothing of its requests (the kit's ScriptedBackend
    records them): it answers, streams, raises, or waits until it is cancelled; with tools
    offered, it first asks for the ``echo`` tool."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        #: the host's scope, cancelled by the impl once it runs ("cancel" mode)
        self.host: anyio.CancelScope | None = None

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        await self._wait()
        if request.tools and len(request.messages) < 3:
            call = ToolCall(id="c1", name="echo", arguments={"text": "x"})
            return Completion(text="", finish_reason="tool_calls", tool_calls=(call,),
                              model="m")
        return Completion(text=f"answer to {request.messages[-1].content[:12]}",
                          finish_reason="stop", model="m")

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[Delta]:
        await self._wait()
        for index in range(4):
            await anyio.lowlevel.checkpoint()
            yield Delta(text=f" word{index}", index=index)
        yield Delta(text="", index=4, finish_reason="stop", model="m")

    async def _wait(self) -> None:
        if self.mode == "fail":
            raise RuntimeError("the backend failed")
        if self.mode == "cancel" and self.host is not None:
            self.host.cancel()  # the host leaves once the impl runs
        if self.mode in ("slow", "cancel"):
            await anyio.sleep(3600)
        await anyio.lowlevel.checkpoint()


class Echo:
    """A tool double: ``echo``."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="echo", description="echoes")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult:
        return ToolResult(call.id, "echoed")


class Listener:
    """A component subscribed to its pipeline's events (``aieng_on_event``)."""

    def __init__(self) -> None:
        self.seen = 0

    @hookimpl
    def aieng_on_event(self, event: Event) -> None:
        self.seen += 1


def rag(kernel: Kernel) -> Any:
    """A pipeline of the built-ins and :class:`Answers`; no stage timeout (a deadline
    leaves a cancelled timer that the loop prunes later: bounded, but noise for a short
    measure)."""
    return kernel.compose({"docs": MemoryRetriever(MemoryOptions()),
                           "prompt": PromptBuilder(PromptOptions()), "llm": Answers()},
                          name="rag", timeout=None)


async def warm(pipeline: Any, runs: int) -> None:
    """Fill a pipeline's bounded state (its dispatcher's 1,024 latest calls): a pipeline
    whose run makes one call fills it in 1,024 runs."""
    for i in range(runs):
        with contextlib.suppress(HookError):
            await pipeline.run(f"warm-up {i}")


@BOTH
async def test_runs_streams_and_failures_keep_nothing_of_each_run(quiet: None,
                                                                 anyio_backend: str) -> None:
    """Runs with distinct questions, run ids and metadata, streams read to their end and
    abandoned after one delta, and failing runs retain nothing per run: no trace, scope,
    in-flight entry, stream or task."""
    async with quiet_kernel() as kernel:
        pipeline = rag(kernel)
        await pipeline.index(DOCS)
        failing = kernel.compose({"llm": Answers("fail")}, name="failing", timeout=None)

        async def serve(i: int) -> None:
            result = await pipeline.run(f"question {i} on topic {i % 7}", run_id=f"run-{i}",
                                        metadata={"user": f"u{i}"})
            assert result.status == "ok" and result.hits
            async with pipeline.stream(f"streamed {i}") as deltas:
                assert "".join([d.text async for d in deltas]).strip()
            async with pipeline.stream(f"abandoned {i}") as deltas:
                async for _ in deltas:
                    break
            with pytest.raises(HookError):
                await failing.run(f"failing {i}")

        with traced():
            await warm(failing, 1_100)
            growth = await ameasure_growth(serve, warmup=100, calls=500)
    # asyncio keeps up to about a hundred cancelled timers, each with the context it was
    # armed in (a stream's close waits at most 10 s, in the run's context), until it prunes
    # them: tens of kB, against the kilobytes of a run's state kept.
    assert growth.per_call < bound(anyio_backend, 4 * PER_CALL), growth.report()
    assert not growth.held, growth.report()


@BOTH
async def test_agent_runs_keep_nothing_of_each_run(anyio_backend: str) -> None:
    """Agent runs (a tool call, then the answer) with distinct tasks and run ids retain
    nothing per run."""
    async with quiet_kernel() as kernel:
        agent = Agent(kernel.compose({"llm": Answers(), "tools": Echo()}, name="agent",
                                     timeout=None))

        async def task(i: int) -> None:
            result = await agent.run(f"task {i}", run_id=f"agent-{i}")
            assert result.status == "answered"

        growth = await ameasure_growth(task, warmup=400, calls=600)
    assert growth.per_call < bound(anyio_backend), growth.report()
    assert not growth.held, growth.report()


async def test_a_subscription_per_request_keeps_nothing() -> None:
    """A host that subscribes to the bus per request keeps the stats of the latest
    ``REMOVED_KEPT`` subscriptions, no more."""
    async with quiet_kernel() as kernel:

        async def request(i: int) -> None:
            async with kernel.bus.subscribe("run.*", pipeline=f"p{i}",
                                            name=f"request-{i}") as events:
                kernel.publish(RunStarted(run_id=f"r{i}", pipeline=f"p{i}", input="x" * 500))
            assert len(events.pending()) == 1

        growth = await ameasure_growth(request, warmup=kernel.bus.REMOVED_KEPT + 50,
                                       calls=2_000)
    assert growth.per_call < PER_CALL, growth.report()


async def turns(done: Any, most: int = 10_000) -> None:
    """Let the loop run until ``done()`` holds (``settle`` sleeps, and the mock clock
    below stands still)."""
    for _ in range(most):
        if done():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"not done after {most} turns of the loop")


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock()})])
async def test_a_slow_subscribers_drops_are_reported_once_a_tick() -> None:
    """A subscriber slower than the events (its buffer of 1 full at each wake-up) has its
    drops logged and published once a reporter tick, with their count, not once per batch
    it takes (a warning for nearly every event it took). The clock stands still until the
    test moves it: no tick passes while 2,000 events are published."""
    async with Kernel(env={}, entry_points=[], bus_buffer=1,
                      loop_block_threshold=None) as kernel:
        taken = []

        async def slow(event: Event) -> None:
            taken.append(event)
            await anyio.lowlevel.checkpoint()

        kernel.bus.add_callback(slow, name="slow", pattern="run.*")

        def dropped() -> int:
            return {s.name: s.dropped for s in kernel.bus.stats()}["slow"]

        with capture_logs() as logs:
            for i in range(1_000):
                for n in range(2):
                    kernel.publish(RunStarted(run_id=f"r{i}-{n}", pipeline="p", input="x"))
                await anyio.lowlevel.checkpoint()
            await turns(lambda: len(taken) + dropped() == 2_000)
            during = [log for log in logs if log["event"] == "bus.dropped"]
            trio.lowlevel.current_clock().jump(0.3)  # type: ignore[attr-defined]
            await turns(lambda: any(log["event"] == "bus.dropped" for log in logs))
            total = dropped()
    reports = [log for log in logs if log["event"] == "bus.dropped"]
    assert not during
    assert total > 500
    assert [(r["subscriber"], r["dropped"]) for r in reports] == [("slow", total)]


@BOTH
async def test_runs_timed_out_or_cancelled_by_the_host_keep_nothing(quiet: None,
                                                                   anyio_backend: str) -> None:
    """A run whose stage times out and one the host cancels while its impl waits leave
    nothing behind. asyncio's bound is looser: it keeps up to about a hundred cancelled
    timers, each with the context it was armed in (the run's scope), until it prunes them
    (tens of kB); a run's state kept (its scope, trace and context) is over a kilobyte a
    run."""
    async with quiet_kernel() as kernel:
        slow = kernel.compose({"llm": Answers("slow")}, name="slow", timeout=0.001)
        leaving = Answers("cancel")
        cancelled = kernel.compose({"llm": leaving}, name="cancelled")

        async def serve(i: int) -> None:
            with pytest.raises(HookError, match="timed out"):
                await slow.run(f"slow {i}")
            with anyio.CancelScope() as host:
                leaving.host = host
                await cancelled.run(f"cancelled {i}")
            assert host.cancelled_caught

        growth = await ameasure_growth(serve, warmup=1_100, calls=600)
        assert not cancelled._in_use.count and not cancelled.dispatcher.active
    assert growth.per_call < bound(anyio_backend, 4 * PER_CALL), growth.report()
    assert not growth.held, growth.report()


@BOTH
async def test_closed_pipelines_are_released() -> None:
    """A host that builds, opens, runs and closes a pipeline per tenant in one kernel keeps
    none of them: not in the kernel, not in the bus's stats of removed subscribers (they
    held the pipeline object, and with it its components, for the latest 256)."""
    async with quiet_kernel() as kernel:
        kept: list[weakref.ref[MemoryRetriever]] = []
        for i in range(300):
            retriever = MemoryRetriever(MemoryOptions())
            async with kernel.compose({"docs": retriever, "llm": Answers(),
                                       "listener": Listener()}, name=f"tenant-{i}") as tenant:
                await tenant.index(DOCS[:3])
                assert (await tenant.run(f"hello {i}")).status == "ok"
            kept.append(weakref.ref(retriever))
        del retriever, tenant
        gc.collect()
        assert not kernel._pipelines
        assert len(kernel.bus.stats()) == kernel.bus.REMOVED_KEPT  # the stats are kept
        alive = sum(ref() is not None for ref in kept)
    assert alive == 0, f"the components of {alive} closed pipelines are still alive"


async def test_a_kernel_entered_and_left_many_times_keeps_nothing() -> None:
    """Kernels made, entered and left in one process (a test suite, a host per job) leave
    no kernel, task, thread nor descriptor (the watchdog's schedstat file) behind."""
    before = snapshot()
    kept: list[weakref.ref[Kernel]] = []
    for i in range(100):
        async with Kernel(env={}, entry_points=[]) as kernel:
            await kernel.compose({"llm": Answers()}).run(f"q {i}")
        kept.append(weakref.ref(kernel))
    del kernel
    gc.collect()
    assert not [ref for ref in kept if ref() is not None]
    assert not leaks(before, snapshot())


async def test_reindexing_keeps_the_memory_index_to_its_corpus() -> None:
    """Re-indexing the same 100 documents again and again, each time with new words,
    keeps the ``memory`` retriever's index to what the 100 documents hold: a word no
    document holds any more leaves the index (its posting list was kept, empty, for
    ever)."""
    async with quiet_kernel() as kernel:
        retriever = MemoryRetriever(MemoryOptions())
        pipeline = kernel.compose({"docs": retriever})

        async def reindex(i: int) -> None:
            n = i % 100
            await pipeline.index([Document(id=f"d{n}", text=f"document {n} version v{i}")])

        # The dispatcher's 1,024 latest calls: one a call.
        growth = await ameasure_growth(reindex, warmup=1_100, calls=2_000)
        assert len(retriever) == 100
        # "document", "version", the 100 numbers and the 100 versions in force
        assert len(retriever._postings) == 202
        hits = (await pipeline.run("v3099")).hits
        assert [h.document.id for h in hits] == ["d99"]
        assert not (await pipeline.run("v2999")).hits  # replaced since: gone
    assert growth.per_call < PER_CALL, growth.report()
