"""The event bus: ordered, bounded, never in a request's way, nothing lost silently."""

from __future__ import annotations

import threading
from functools import partial

import anyio
import anyio.lowlevel
import pytest

from aieng_core import EventBus, Kernel
from aieng_core.testing._kit import isolated_kernel, registered, settle
from aieng_core.testing.doubles import ScriptedBackend
from aieng_hookspecs import ComponentRegistry, blocking, hookimpl
from aieng_hookspecs.types import (
    BusDropped,
    Event,
    Hit,
    ModelCall,
    RunFinished,
    StageFinished,
)

pytestmark = pytest.mark.anyio


def _event(i: int) -> Event:
    return StageFinished(stage=f"s{i}", status="ok", duration_s=0.0)


async def test_callback_subscriber_gets_events_in_order(aieng_kernel: Kernel) -> None:
    """A callback subscriber receives every event in publication order."""
    seen: list[str] = []
    aieng_kernel.bus.add_callback(lambda e: seen.append(e.stage), name="t",  # type: ignore[attr-defined]
                                  pattern="stage.*")
    for i in range(100):
        aieng_kernel.bus.publish(_event(i))
    await settle(lambda: len(seen) == 100)
    assert seen == [f"s{i}" for i in range(100)]


async def test_pattern_and_pipeline_filters(aieng_kernel: Kernel) -> None:
    """Subscribers see only events matching their name pattern and pipeline."""
    async with aieng_kernel.bus.subscribe("run.*", pipeline="p1") as sub:
        aieng_kernel.bus.publish(RunFinished(pipeline="p1", status="ok", duration_s=0.0))
        aieng_kernel.bus.publish(RunFinished(pipeline="p2", status="ok", duration_s=0.0))
        aieng_kernel.bus.publish(_event(1))
        events = sub.pending()
    assert [(e.name, e.pipeline) for e in events] == [("run.finished", "p1")]


async def test_slow_subscriber_never_stalls_a_request() -> None:
    """A subscriber stuck in its first event does not hold runs up; it drops what does
    not fit its queue, and the drops are counted and reported."""
    async with isolated_kernel(bus_buffer=8) as kernel:
        async def stuck(event: Event) -> None:
            await anyio.Event().wait()  # never returns: runs that waited on it never end

        kernel.bus.add_callback(stuck, name="slowpoke")
        reports: list[BusDropped] = []
        kernel.bus.add_callback(lambda e: reports.append(e), name="watcher",  # type: ignore[arg-type,func-returns-value]
                                pattern="bus.dropped")
        pipeline = kernel.compose({"llm": ScriptedBackend()}, stages=["generate"])
        with anyio.fail_after(60):  # a bound on a hang, not a speed check
            for _ in range(50):
                await pipeline.run("hi")
        stats = {s.name: s for s in kernel.bus.stats()}
        assert stats["slowpoke"].dropped > 0
        assert stats["watcher"].dropped == 0
        kernel.drain_timeout = 0.1
    # the drop was reported as an event once the slow subscriber woke up, or at shutdown


async def test_drops_are_reported_as_an_event() -> None:
    """When a subscriber's queue overflows, a bus.dropped event with the count follows."""
    async with isolated_kernel(bus_buffer=4) as kernel:
        got: list[Event] = []

        async def sleepy(event: Event) -> None:
            got.append(event)
            await anyio.sleep(0.01)

        reports: list[Event] = []
        kernel.bus.add_callback(sleepy, name="sleepy", pattern="stage.*")
        kernel.bus.add_callback(reports.append, name="reports", pattern="bus.dropped")
        for i in range(20):
            kernel.bus.publish(_event(i))

        def dropped() -> int:
            return sum(e.dropped for e in reports if isinstance(e, BusDropped))

        # until every event is either taken or reported dropped
        await settle(lambda: dropped() > 0 and dropped() == 20 - len(got))
        drops = [e for e in reports if isinstance(e, BusDropped)]
        assert drops and drops[0].subscriber == "sleepy"
        assert sum(d.dropped for d in drops) == 20 - len(got)
        assert {s.name: s.dropped for s in kernel.bus.stats()}["sleepy"] == 20 - len(got)


async def test_raising_subscriber_never_fails_a_request(aieng_kernel: Kernel) -> None:
    """A subscriber that raises is counted as failed; runs go on and others still receive."""
    def explode(event: Event) -> None:
        raise ValueError("subscriber bug")

    seen: list[str] = []
    aieng_kernel.bus.add_callback(explode, name="exploder")
    aieng_kernel.bus.add_callback(lambda e: seen.append(e.name), name="fine")  # type: ignore[func-returns-value]
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["ok"])}, stages=["generate"])
    result = await pipeline.run("hi")
    await settle(lambda: len(seen) == len(result.events))
    assert result.answer == "ok"
    stats = {s.name: s for s in aieng_kernel.bus.stats()}
    assert stats["exploder"].failed == len(result.events)
    assert seen == [e.name for e in result.events]


async def test_hot_loop_of_runs_does_not_starve_subscribers() -> None:
    """Back-to-back fast runs still let a subscriber keep up: zero drops, all delivered."""
    async with isolated_kernel(bus_buffer=64) as kernel:
        count = 0

        def counter(event: Event) -> None:
            nonlocal count
            count += 1

        kernel.bus.add_callback(counter, name="counter")
        pipeline = kernel.compose({"llm": ScriptedBackend()}, stages=["generate"])
        total = 0
        for _ in range(500):
            total += len((await pipeline.run("hi")).events)
        await settle(lambda: count >= total)
        assert count == total
        assert {s.name: s.dropped for s in kernel.bus.stats()}["counter"] == 0


async def test_plugin_and_component_subscribers(aieng_kernel: Kernel, register_plugin) -> None:  # type: ignore[no-untyped-def]
    """aieng_on_event on a component receives its pipeline's events."""
    received: list[str] = []

    class Monitor:
        @hookimpl
        def aieng_on_event(self, event: Event) -> None:
            received.append(event.name)

    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(), "monitor": Monitor()},
                                    stages=["generate"])
    result = await pipeline.run("hi")
    await settle(lambda: len(received) >= len(result.events))
    assert received == [e.name for e in result.events]


async def test_model_call_event_carries_prompt_parameters_and_raw_output(
        aieng_kernel: Kernel) -> None:
    """Every model call's event has the exact rendered messages, parameters and raw output."""
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["raw text"])}, stages=["generate"])
    result = await pipeline.run("the question")
    (call,) = [e for e in result.events if isinstance(e, ModelCall)]
    assert call.messages == result.request.messages
    assert call.messages[-1].content == "the question"
    assert call.parameters["temperature"] == 0.0 and call.parameters["max_tokens"] == 256
    assert call.raw_output == "raw text" and call.component == "llm"
    assert call.run_id == result.run_id


def test_bus_rejects_a_zero_buffer() -> None:
    """A bus needs room for at least one event per subscriber."""
    with pytest.raises(ValueError):
        EventBus(buffer=0)


async def test_drops_of_a_stuck_subscriber_are_reported_while_it_is_stuck() -> None:
    """A callback stuck forever still has its drops published as bus.dropped by the bus's
    reporter, not only at shutdown."""
    async with isolated_kernel(bus_buffer=2) as kernel:
        stuck = anyio.Event()

        async def never_returns(event: Event) -> None:
            await stuck.wait()

        reports: list[Event] = []
        kernel.bus.add_callback(never_returns, name="stuck", pattern="stage.*")
        kernel.bus.add_callback(reports.append, name="reports", pattern="bus.dropped")
        for i in range(10):
            kernel.bus.publish(_event(i))
        await settle(lambda: bool(reports))  # the reporter's, while the callback is stuck
        assert [(e.subscriber, e.dropped) for e in reports  # type: ignore[attr-defined]
                ] == [("stuck", 10 - 2)]  # two fit the queue; the callback then takes one
        stuck.set()


async def test_drops_of_an_unread_subscription_are_reported(aieng_kernel: Kernel) -> None:
    """An iterator subscription nobody reads reports its drops as a bus.dropped event too."""
    reports: list[Event] = []
    aieng_kernel.bus.add_callback(reports.append, name="reports", pattern="bus.dropped")
    async with aieng_kernel.bus.subscribe("stage.*", name="lazy") as sub:
        for i in range(aieng_kernel.bus._buffer + 5):
            aieng_kernel.bus.publish(_event(i))
        await settle(lambda: bool(reports))
        assert sub.dropped == 5
    assert [(e.subscriber, e.dropped) for e in reports] == [("lazy", 5)]  # type: ignore[attr-defined]


async def test_plugin_registered_while_running_receives_events(aieng_kernel: Kernel,
                                                              register_plugin) -> None:  # type: ignore[no-untyped-def]
    """A plugin module registered on a running kernel gets its aieng_on_event subscribed,
    and unregistering it stops delivery."""
    import types

    seen: list[str] = []
    module = types.ModuleType("listener")

    @hookimpl
    def aieng_on_event(event: Event) -> None:
        seen.append(event.name)

    module.aieng_on_event = aieng_on_event  # type: ignore[attr-defined]
    with register_plugin(module, "listener"):
        aieng_kernel.bus.publish(_event(1))
        await settle(lambda: bool(seen))
    aieng_kernel.bus.publish(_event(2))
    await anyio.sleep(0.05)  # (nothing to wait for: delivery must not happen)
    assert seen == ["stage.finished"]


async def test_pipeline_built_before_start_subscribes_its_components() -> None:
    """Components' aieng_on_event work even when the pipeline is built before the kernel
    starts."""
    from aieng_core import Kernel as K

    received: list[str] = []

    class Monitor:
        @hookimpl
        def aieng_on_event(self, event: Event) -> None:
            received.append(event.name)

    kernel = K(env={}, entry_points=[])
    pipeline = kernel.compose({"llm": ScriptedBackend(), "monitor": Monitor()})
    async with kernel:
        result = await pipeline.run("hi")
        await settle(lambda: len(received) >= len(result.events))
    assert received == [e.name for e in result.events]


async def test_subscription_keeps_what_was_queued_when_its_block_ended(
        aieng_kernel: Kernel) -> None:
    """After the subscribe block ends, pending() returns the events still queued then (once,
    counted as delivered) instead of raising, and async for yields them and stops; events
    published later do not reach it."""
    async with aieng_kernel.bus.subscribe("stage.*") as sub:
        aieng_kernel.bus.publish(_event(0))
        aieng_kernel.bus.publish(_event(1))
    aieng_kernel.bus.publish(_event(2))
    assert [e.stage for e in sub.pending()] == ["s0", "s1"]  # type: ignore[attr-defined]
    assert sub.pending() == []
    async with aieng_kernel.bus.subscribe("stage.*") as iterated:
        aieng_kernel.bus.publish(_event(3))
    assert [e.stage async for e in iterated] == ["s3"]  # type: ignore[attr-defined]
    assert [e.stage async for e in iterated] == []  # type: ignore[attr-defined]
    stats = aieng_kernel.bus.stats()
    assert [s.delivered for s in stats if s.name == "subscription"] == [2, 1]


async def test_add_callback_after_the_kernel_exits_is_a_clear_error() -> None:
    """A callback added once the kernel has exited fails with a message saying the bus is not
    running, and leaves no subscriber behind."""
    async with isolated_kernel() as kernel:
        pass
    with pytest.raises(RuntimeError, match="the bus is not running"):
        kernel.bus.add_callback(lambda event: None, name="late")
    assert [s.name for s in kernel.bus.stats()] == []


async def test_drop_reports_that_do_not_fit_are_not_counted_as_drops() -> None:
    """Two stuck subscribers of every event get their real drops reported, and the reports
    stop there: a bus.dropped event that finds a full queue is not counted as a drop, or
    each report would be reported in turn, forever (a warning and an event every tick)."""
    bus = EventBus(buffer=2)
    stuck = anyio.Event()

    async def never_returns(event: Event) -> None:
        await stuck.wait()

    reports: list[BusDropped] = []
    async with anyio.create_task_group() as tg:
        await bus.start(tg, report_every=0.01)
        bus.add_callback(never_returns, name="a")
        bus.add_callback(never_returns, name="b")
        bus.add_callback(reports.append, name="reports", pattern="bus.dropped")  # type: ignore[arg-type]
        for expected in (2, 4):
            for i in range(10):
                bus.publish(_event(i))
            await settle(partial(_at_least, reports, expected))
        await anyio.sleep(0.2)  # twenty reporter ticks with nothing new to report
        stats = {s.name: s.dropped for s in bus.stats()}
        stuck.set()
        bus.close()
    assert [e.subscriber for e in reports] == ["a", "b", "a", "b"]
    for name in ("a", "b"):
        assert sum(e.dropped for e in reports if e.subscriber == name) == stats[name]
        assert stats[name] <= 20 - 2  # stage events only: at least two fit the queue


def _at_least(items: list[BusDropped], n: int) -> bool:
    return len(items) >= n


class _AsyncCall:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        self.seen.append(event.name)


async def test_a_callback_returning_an_awaitable_has_it_awaited(aieng_kernel: Kernel) -> None:
    """A callback that is not an ``async def`` function but returns an awaitable (an object
    with an async ``__call__``, a lambda calling a coroutine function) has the awaitable
    awaited: its events are delivered, not dropped as never-awaited coroutines."""
    target = _AsyncCall()
    other = _AsyncCall()
    aieng_kernel.bus.add_callback(target, name="object", pattern="stage.*")
    aieng_kernel.bus.add_callback(lambda e: other(e), name="lambda", pattern="stage.*")
    for i in range(3):
        aieng_kernel.bus.publish(_event(i))
    await settle(lambda: len(target.seen) == 3 and len(other.seen) == 3)
    assert target.seen == other.seen == ["stage.finished"] * 3


async def test_entering_a_running_kernel_again_is_a_clear_error() -> None:
    """``async with kernel`` on a kernel that is already running fails at once, saying so,
    and the running kernel goes on (a second entry replaced its task group and bus, and
    leaving the outer block then failed with a bare AssertionError); entering it again
    after it exits works."""
    kernel = Kernel(env={}, entry_points=[], loop_block_threshold=None)
    async with kernel:
        with pytest.raises(RuntimeError, match="already running"):
            async with kernel:
                pass
        seen: list[str] = []
        kernel.bus.add_callback(lambda e: seen.append(e.name), name="after")
        pipeline = kernel.compose({"llm": ScriptedBackend(["ok"])}, stages=["generate"])
        result = await pipeline.run("hi")
        await settle(lambda: len(seen) == len(result.events))
    async with kernel:
        assert (await kernel.compose({"llm": ScriptedBackend(["again"])},
                                     stages=["generate"]).run("hi")).answer == "again"


async def test_a_kernel_entered_while_cancelled_leaves_nothing_started() -> None:
    """Entering a kernel inside a scope already cancelled (a server shutting down as a
    request starts one) raises the cancellation and leaves the kernel stopped: its task
    group was left entered, so leaving the caller's scope failed with 'Attempted to exit a
    cancel scope that isn't the current task's' and the kernel stayed 'already running'."""
    kernel = Kernel(env={}, entry_points=[])
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with kernel:
            pytest.fail("the body of a cancelled entry ran")
    assert scope.cancelled_caught
    async with kernel:
        result = await kernel.compose({"llm": ScriptedBackend(["ok"])},
                                      stages=["generate"]).run("hi")
    assert result.answer == "ok"


async def test_default_embedder_works_again_when_the_kernel_is_entered_again() -> None:
    """The default embedder's pipeline, closed when the kernel exits, is built afresh when
    the kernel is entered again (it raised 'pipeline is closed' for good)."""
    import types

    class Embedder:
        @hookimpl
        async def aieng_embed(self, texts: list[str]) -> list[list[float]]:
            return [[float(len(t))] for t in texts]

    plugin = types.ModuleType("reentry_embedding_plugin")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("minilm", Embedder)

    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    kernel = Kernel(env={}, entry_points=[], loop_block_threshold=None)
    with registered(kernel, plugin, "fake-minilm"):
        for _ in range(2):
            async with kernel:
                embedder = await kernel.default_embedder()
                assert embedder is not None
                found = await embedder.dispatcher.first(
                    "aieng_embed", {"texts": ["abc"], "model": None})
                assert found == ([[3.0]], "minilm")


@pytest.mark.parametrize("anyio_backend", [("asyncio", {"debug": True})])
async def test_publish_from_worker_threads_reaches_subscribers(aieng_kernel: Kernel) -> None:
    """Publishing from a thread other than the loop's (a ``@blocking`` impl, a thread of the
    user's) is handed to the loop: it never raises (asyncio's debug mode refused the
    foreign thread's wake-up of a waiting subscriber, failing the impl and losing the
    event) and every event arrives, in each thread's order."""
    seen: list[str] = []
    aieng_kernel.bus.add_callback(lambda e: seen.append(e.stage), name="t",  # type: ignore[attr-defined]
                                  pattern="stage.*", pipeline="")  # not the run's own
    await anyio.sleep(0.01)  # the subscriber now waits for its next event

    class Reporter:
        @hookimpl
        @blocking
        def aieng_retrieve(self) -> list[Hit]:
            aieng_kernel.publish(_event(0))
            return []

    pipeline = aieng_kernel.compose({"reporter": Reporter()}, stages=["retrieve"])
    assert (await pipeline.run("q")).status == "ok"
    thread = threading.Thread(target=lambda: [aieng_kernel.bus.publish(_event(i))
                                              for i in range(1, 4)])
    thread.start()
    await anyio.to_thread.run_sync(thread.join)
    await settle(lambda: len(seen) == 4)
    assert seen == ["s0", "s1", "s2", "s3"]


async def test_a_component_gets_its_pipelines_events_before_it_closes(
        aieng_kernel: Kernel) -> None:
    """A component subscribed with aieng_on_event receives every event of its pipeline's
    runs before its aieng_pipeline_close, never after: what it does with an event (write it,
    embed its text through the pipeline) must not meet a closed component."""
    trail: list[str] = []

    class Watcher:
        @hookimpl
        async def aieng_on_event(self, event: Event) -> None:
            await anyio.sleep(0.01)  # a subscriber slower than the run
            trail.append(event.name)

        @hookimpl
        def aieng_pipeline_close(self) -> None:
            trail.append("closed")

    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(), "watcher": Watcher()})
    result = await pipeline.run("hi")
    await pipeline.aclose()
    assert trail == [e.name for e in result.events] + ["closed"]
