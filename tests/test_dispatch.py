"""The dispatcher: call modes, pluggy order, timeouts, error policies, cancellation."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Generator, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import HookError, Kernel
from aieng_core.testing import EventCapture, HookRecorder
from aieng_core.testing._kit import isolated_kernel, settle
from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Delta, Document, ErrorEvent, Hit, LoopBlocked, Query

pytestmark = pytest.mark.anyio


def _hit(doc_id: str, score: float = 1.0, rank: int = 1) -> Hit:
    return Hit(document=Document(id=doc_id, text=f"text {doc_id}"), score=score, rank=rank)


class Retriever:
    """A retriever returning one fixed hit; sync or async, optionally slow or failing."""

    def __init__(self, doc_id: str, *, delay: float = 0.0, fail: bool = False) -> None:
        self.doc_id = doc_id
        self.delay = delay
        self.fail = fail

    @hookimpl
    async def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail:
            raise RuntimeError(f"{self.doc_id} broke")
        return [_hit(self.doc_id)]


class SyncRetriever:
    """A plain-function retriever (runs inline on the loop)."""

    @hookimpl
    def aieng_retrieve(self, k: int) -> list[Hit]:  # declares only the argument it uses
        return [_hit("sync")]


class Ordered:
    """A reranker that appends its name to the hits' trail, with optional ordering markers."""

    def __init__(self, name: str, trail: list[str]) -> None:
        self.name = name
        self.trail = trail


def make_ordered(name: str, marker: str, trail: list[str]) -> object:
    opts = {"tryfirst": marker == "tryfirst", "trylast": marker == "trylast"}

    class Component:
        @hookimpl(**opts)
        def aieng_rerank(self, hits: Sequence[Hit], k: int) -> list[Hit]:
            trail.append(name)
            return list(hits)

    return Component()


async def test_gather_runs_sync_and_async_impls_and_collects_every_run(
        aieng_kernel: Kernel) -> None:
    """gather collects every retriever's run; sync impls get only the arguments they declare."""
    pipeline = aieng_kernel.compose({"a": Retriever("a"), "b": SyncRetriever(),
                                     "c": Retriever("c")}, stages=["retrieve"])
    result = await pipeline.run("q")
    assert set(result.runs) == {"a", "b", "c"}
    assert {h.document.id for h in result.retrieved} == {"a", "sync", "c"}


async def test_gather_is_concurrent(aieng_kernel: Kernel) -> None:
    """Three retrievers that each wait until all three have started finish: run one
    after another, the first would wait for the others forever (fail_after ends it)."""
    started: list[str] = []
    everyone = anyio.Event()

    class Rendezvous:
        def __init__(self, doc_id: str) -> None:
            self.doc_id = doc_id

        @hookimpl
        async def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
            started.append(self.doc_id)
            if len(started) == 3:
                everyone.set()
            await everyone.wait()
            return [_hit(self.doc_id)]

    pipeline = aieng_kernel.compose({n: Rendezvous(n) for n in "abc"}, stages=["retrieve"])
    with anyio.fail_after(10):
        await pipeline.run("q")
    assert sorted(started) == ["a", "b", "c"]


async def test_file_order_is_call_order(aieng_kernel: Kernel,
                                        hook_recorder: HookRecorder) -> None:
    """Components listed first are called first (pluggy's LIFO, registered in reverse)."""
    trail: list[str] = []
    pipeline = aieng_kernel.compose(
        {"r": Retriever("r"), **{n: make_ordered(n, "", trail) for n in ("x", "y", "z")}},
        stages=["retrieve", "rerank"])
    await pipeline.run("q")
    assert trail == ["x", "y", "z"]
    assert hook_recorder.order("aieng_rerank") == ["x", "y", "z"]


@given(st.lists(st.sampled_from(["tryfirst", "", "trylast"]), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_tryfirst_trylast_under_any_registration_order(markers: list[str], rnd: object) -> None:
    """Whatever the order components are listed in, tryfirst impls run before plain ones and
    trylast impls after them."""
    async def main() -> list[str]:
        trail: list[str] = []
        names = [f"c{i}" for i in range(len(markers))]
        order = list(zip(names, markers))
        rnd.shuffle(order)  # type: ignore[attr-defined]
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            components = {"r": Retriever("r"),
                          **{n: make_ordered(f"{m}:{n}", m, trail) for n, m in order}}
            pipeline = kernel.compose(components, stages=["retrieve", "rerank"])
            await pipeline.run("q")
        return trail

    trail = anyio.run(main)
    rank = {"tryfirst": 0, "": 1, "trylast": 2}
    groups = [rank[entry.split(":")[0]] for entry in trail]
    assert groups == sorted(groups)
    assert len(trail) == len(markers)


async def test_first_mode_stops_at_first_answer(aieng_kernel: Kernel,
                                                hook_recorder: HookRecorder) -> None:
    """first stops at the first non-None result; a None result passes to the next impl."""
    class Declines:
        @hookimpl
        async def aieng_generate(self) -> None:
            return None

    from aieng_core.testing.doubles import ScriptedBackend

    a, b = ScriptedBackend(["from a"]), ScriptedBackend(["from b"])
    pipeline = aieng_kernel.compose({"no": Declines(), "a": a, "b": b}, stages=["generate"])
    result = await pipeline.run("hi")
    assert result.answer == "from a"
    assert hook_recorder.order("aieng_generate") == ["no", "a"]
    assert not b.requests


async def test_timeout_raises_hook_error_naming_everything(aieng_kernel: Kernel) -> None:
    """A timed-out impl raises HookError naming hook, component, stage and the timeout."""
    pipeline = aieng_kernel.compose({"slow": Retriever("slow", delay=5)}, stages=["retrieve"],
                                    stage={"retrieve": {"timeout": 0.05}})
    with pytest.raises(HookError) as caught:
        await pipeline.run("q")
    error = caught.value
    assert (error.hook, error.plugin, error.stage) == ("aieng_retrieve", "slow", "retrieve")
    assert "timed out after 0.05 s" in str(error)
    assert isinstance(error.cause, TimeoutError)


async def test_impls_own_timeout_error_is_an_error_not_a_kernel_timeout(
    aieng_kernel: Kernel, hook_recorder: HookRecorder, captured_events: EventCapture
) -> None:
    """A TimeoutError the impl raises itself (its own anyio.fail_after) is reported as the
    impl's error, not as the stage's timeout firing: the message says so, the call's outcome
    is "error", and the cause is the impl's own exception."""
    class OwnDeadline:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            with anyio.fail_after(0.01):
                await anyio.sleep(5)
            return [_hit("never")]

    pipeline = aieng_kernel.compose({"own": OwnDeadline()}, stages=["retrieve"],
                                    stage={"retrieve": {"timeout": 30}})
    with pytest.raises(HookError) as caught:
        await pipeline.run("q")
    error = caught.value
    assert "timed out after" not in str(error)
    assert "TimeoutError raised by the impl itself, not the stage's 30.0 s timeout" in str(error)
    assert isinstance(error.cause, TimeoutError) and error.cause is error.__cause__
    assert [c.outcome for c in hook_recorder.calls("aieng_retrieve")] == ["error"]
    event = captured_events.of(ErrorEvent)[0]
    assert event.error_type == "TimeoutError" and "impl itself" in event.message


async def test_kernel_timeout_of_a_plain_awaitable_is_a_timeout(
    aieng_kernel: Kernel, hook_recorder: HookRecorder
) -> None:
    """A sync impl returning a non-coroutine awaitable that never finishes times out with the
    stage's timeout (outcome "timeout"), like an async impl."""
    class Pending:
        @hookimpl
        def aieng_retrieve(self) -> object:
            return _Never()

    pipeline = aieng_kernel.compose({"pending": Pending()}, stages=["retrieve"],
                                    stage={"retrieve": {"timeout": 0.05}})
    with pytest.raises(HookError, match="timed out after 0.05 s"):
        await pipeline.run("q")
    assert [c.outcome for c in hook_recorder.calls("aieng_retrieve")] == ["timeout"]


class _Never:
    """An awaitable that is not a coroutine and waits forever."""

    def __await__(self) -> Generator[Any, Any, None]:
        return anyio.sleep_forever().__await__()


async def test_fail_policy_wraps_the_cause(aieng_kernel: Kernel) -> None:
    """Under fail, an impl's exception becomes one HookError with the original as cause."""
    pipeline = aieng_kernel.compose({"bad": Retriever("bad", fail=True)}, stages=["retrieve"])
    with pytest.raises(HookError) as caught:
        await pipeline.run("q")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "bad broke" in str(caught.value) and "'bad'" in str(caught.value)


async def test_skip_policy_skips_the_stage_with_an_error_event(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """Under skip, the run goes on without the stage and an error event says why."""
    from aieng_core.testing.doubles import ScriptedBackend

    pipeline = aieng_kernel.compose(
        {"bad": Retriever("bad", fail=True), "llm": ScriptedBackend(["ok"])},
        stages=["retrieve", "generate"], stage={"retrieve": {"on_error": "skip"}})
    result = await pipeline.run("q")
    assert result.answer == "ok"
    assert [(s.name, s.status) for s in result.stages] == [("retrieve", "skipped"),
                                                           ("generate", "ok")]
    errors = captured_events.of(ErrorEvent)
    assert len(errors) == 1 and errors[0].policy == "skip" and errors[0].plugin == "bad"
    assert errors[0].run_id == result.run_id


async def test_fallback_policy_moves_to_the_next_candidate(aieng_kernel: Kernel) -> None:
    """Under fallback, a failing backend hands over to the next; a failing retriever is
    dropped from the gather while the others' runs are kept."""
    from aieng_core.testing.doubles import ScriptedBackend

    pipeline = aieng_kernel.compose(
        {"ok": Retriever("ok"), "bad": Retriever("bad", fail=True),
         "broken": ScriptedBackend(fail_with=ConnectionError("down")),
         "spare": ScriptedBackend(["spare answer"])},
        stages=["retrieve", "generate"], on_error="fallback")
    result = await pipeline.run("q")
    assert result.answer == "spare answer"
    assert set(result.runs) == {"ok"}
    assert {e.plugin for e in result.events if isinstance(e, ErrorEvent)} == {"bad", "broken"}


async def test_fallback_when_every_candidate_fails_raises(aieng_kernel: Kernel) -> None:
    """fallback with no working candidate still fails loudly."""
    from aieng_core.testing.doubles import ScriptedBackend

    pipeline = aieng_kernel.compose(
        {"x": ScriptedBackend(fail_with=ValueError("x")),
         "y": ScriptedBackend(fail_with=ValueError("y"))},
        stages=["generate"], on_error="fallback")
    with pytest.raises(HookError):
        await pipeline.run("q")


async def test_wrong_return_type_is_a_hook_error(aieng_kernel: Kernel) -> None:
    """An impl returning the wrong type fails with a HookError saying what was expected."""
    class Sloppy:
        @hookimpl
        def aieng_retrieve(self) -> list[str]:
            return ["not a hit"]

    pipeline = aieng_kernel.compose({"sloppy": Sloppy()}, stages=["retrieve"])
    with pytest.raises(HookError, match="expected Hit"):
        await pipeline.run("q")


async def test_wrong_return_type_falls_back_like_any_failure(
    aieng_kernel: Kernel, captured_events: EventCapture
) -> None:
    """Under fallback an impl returning the wrong type is a failed candidate like any other:
    the next backend answers, a gather keeps the other impls' results, and an error event
    names the sloppy impl and what was expected."""
    from aieng_core.testing.doubles import ScriptedBackend

    class Sloppy:
        @hookimpl
        def aieng_generate(self) -> str:
            return "not a completion"

        @hookimpl
        def aieng_retrieve(self) -> list[str]:
            return ["not a hit"]

    pipeline = aieng_kernel.compose(
        {"sloppy": Sloppy(), "docs": Retriever("good"), "llm": ScriptedBackend(["fine"])},
        stages=["retrieve", "generate"], on_error="fallback")
    result = await pipeline.run("q")
    assert result.answer == "fine"
    assert [h.document.id for h in result.hits] == ["good"]
    errors = captured_events.of(ErrorEvent)
    assert sorted((e.plugin, e.hook) for e in errors) == [
        ("sloppy", "aieng_generate"), ("sloppy", "aieng_retrieve")]
    assert all("expected" in e.message for e in errors)


async def test_a_plain_generator_as_stream_names_the_plugin(aieng_kernel: Kernel) -> None:
    """A sync generator as ``aieng_stream`` is a HookError naming the plugin and what to
    write, not a bare ``TypeError: 'generator' object is not an async iterable``."""
    from aieng_hookspecs.types import Delta, Request

    class SyncStream:
        @hookimpl
        def aieng_stream(self, request: Request) -> Any:
            yield Delta("a", 0)

    pipeline = aieng_kernel.compose({"llm": SyncStream()}, stages=["generate"])
    with pytest.raises(HookError, match="returned generator, not an async iterator") as caught:
        await pipeline.run("q", on_delta=lambda delta: None)
    assert caught.value.plugin == "llm" and "async generator" in caught.value.hint


async def test_blocking_impl_runs_in_a_worker_thread(aieng_kernel: Kernel) -> None:
    """An impl marked @blocking runs off the event loop's thread."""
    seen: list[int] = []

    class Heavy:
        @hookimpl
        @blocking
        def aieng_retrieve(self) -> list[Hit]:
            seen.append(threading.get_ident())
            time.sleep(0.01)
            return [_hit("heavy")]

    pipeline = aieng_kernel.compose({"heavy": Heavy()}, stages=["retrieve"])
    result = await pipeline.run("q")
    assert result.retrieved[0].document.id == "heavy"
    assert seen and seen[0] != threading.get_ident()


async def test_a_blocking_impl_returning_an_awaitable_is_awaited(aieng_kernel: Kernel) -> None:
    """A @blocking impl that does its heavy part in the thread and returns a coroutine for
    the rest is awaited, as a plain impl's is (it failed as "returned coroutine")."""

    class Heavy:
        @hookimpl
        @blocking
        def aieng_retrieve(self) -> Any:
            time.sleep(0.01)

            async def rest() -> list[Hit]:
                return [_hit("awaited")]

            return rest()

    pipeline = aieng_kernel.compose({"heavy": Heavy()}, stages=["retrieve"])
    result = await pipeline.run("q")
    assert result.retrieved[0].document.id == "awaited"


async def test_watchdog_names_an_impl_that_blocks_the_loop(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """An async impl that calls time.sleep is reported in a loop.blocked event by name."""
    class Blocker:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            time.sleep(0.3)  # the bug under test: blocking inside async code
            return [_hit("b")]

    pipeline = aieng_kernel.compose({"blocker": Blocker()}, stages=["retrieve"])
    await pipeline.run("q")
    await settle(lambda: bool(captured_events.of(LoopBlocked)))  # the watchdog woke late
    blocked = captured_events.of(LoopBlocked)
    assert "blocker.aieng_retrieve" in blocked[0].active
    assert blocked[0].duration_s >= 0.2


async def test_watchdog_quiet_for_well_behaved_impls(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """Awaiting impls, even slow ones, never trigger the watchdog."""
    pipeline = aieng_kernel.compose({"a": Retriever("a", delay=0.3)}, stages=["retrieve"])
    await pipeline.run("q")
    await anyio.sleep(0.05)
    assert not captured_events.of(LoopBlocked)


@given(st.floats(0.0, 0.05), st.integers(1, 4))
def test_cancellation_leaves_no_task_running(cancel_after: float, n: int) -> None:
    """Cancelling a run mid-gather leaves none of its impl tasks running."""
    state = {"running": 0, "started": 0}

    class Tracked:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            state["running"] += 1
            state["started"] += 1
            try:
                await anyio.sleep(10)
            finally:
                state["running"] -= 1
            return []

    async def main() -> None:
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            pipeline = kernel.compose({f"t{i}": Tracked() for i in range(n)},
                                      stages=["retrieve"])
            with anyio.move_on_after(cancel_after):
                await pipeline.run("q")
            assert state["running"] == 0

    anyio.run(main)
    assert state["running"] == 0


async def test_timeout_counts_from_the_start_of_the_call(aieng_kernel: Kernel) -> None:
    """The deadline covers the impl's whole call: time spent before its first suspension
    counts, so 0.08 s of work then a 0.05 s wait breaks a 0.1 s timeout."""
    class LateSleeper:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            time.sleep(0.08)  # work before the first await
            await anyio.sleep(0.05)
            return [_hit("late")]

    pipeline = aieng_kernel.compose({"late": LateSleeper()}, stages=["retrieve"],
                                    stage={"retrieve": {"timeout": 0.1}})
    with pytest.raises(HookError, match="timed out"):
        await pipeline.run("q")


async def test_async_impl_without_suspension_returns_its_value(aieng_kernel: Kernel) -> None:
    """An async impl that never suspends returns its value (the eager first step), and one
    that raises before suspending raises a HookError with its cause."""
    class Instant:
        @hookimpl
        async def aieng_retrieve(self, query: Query) -> list[Hit]:
            if query.text == "boom":
                raise KeyError("instant failure")
            return [_hit("instant")]

    pipeline = aieng_kernel.compose({"instant": Instant()}, stages=["retrieve"])
    assert (await pipeline.run("q")).retrieved[0].document.id == "instant"
    with pytest.raises(HookError) as caught:
        await pipeline.run("boom")
    assert isinstance(caught.value.__cause__, KeyError)


async def test_impls_opening_their_own_scopes_nest_under_the_timeout(
        aieng_kernel: Kernel) -> None:
    """An impl that opens a cancel scope or task group before its first suspension works
    under a timeout, and its own nested waits still time out (regression: scopes must
    nest in order)."""
    class Nested:
        def __init__(self, wait: float) -> None:
            self.wait = wait

        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            with anyio.CancelScope():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.sleep, self.wait)
            return [_hit("nested")]

    quick = aieng_kernel.compose({"n": Nested(0.01)}, stages=["retrieve"],
                                 stage={"retrieve": {"timeout": 5}})
    assert (await quick.run("q")).retrieved[0].document.id == "nested"
    slow = aieng_kernel.compose({"n": Nested(5)}, stages=["retrieve"],
                                stage={"retrieve": {"timeout": 0.05}})
    with pytest.raises(HookError, match="timed out"):
        await slow.run("q")


async def test_watchdog_blames_no_stream_that_was_only_waiting() -> None:
    """A streaming backend waiting for its next token while something else holds the loop
    is not named in the loop.blocked event; one that blocks while producing a delta is."""
    class Waits:
        @hookimpl
        async def aieng_stream(self) -> AsyncIterator[Delta]:
            yield Delta("a")
            await anyio.sleep(0.6)
            yield Delta("b", finish_reason="stop")

    class Blocks:
        @hookimpl
        async def aieng_stream(self) -> AsyncIterator[Delta]:
            yield Delta("a")
            await anyio.lowlevel.checkpoint()
            time.sleep(0.3)  # blocking inside the stream, between deltas
            yield Delta("b", finish_reason="stop")

    async with isolated_kernel() as kernel:
        stalls: list[LoopBlocked] = []
        kernel.bus.add_callback(stalls.append, name="w", pattern="loop.blocked")  # type: ignore[arg-type]
        waits = kernel.compose({"waits": Waits()}, stages=["generate"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(waits.run, "q", on_delta=lambda delta: None))
            await anyio.sleep(0.1)
            time.sleep(0.3)  # not the stream: the caller's own code holds the loop
        await settle(lambda: bool(stalls))
        assert all(not e.active for e in stalls), [e.active for e in stalls]
        stalls.clear()
        blocks = kernel.compose({"blocks": Blocks()}, stages=["generate"])
        await blocks.run("q", on_delta=lambda delta: None)
        await settle(lambda: bool(stalls))
        assert "blocks.aieng_stream" in stalls[0].active


@pytest.mark.parametrize("timeout", [5.0, None])
async def test_watchdog_blames_no_async_impl_that_was_only_waiting(
        timeout: float | None) -> None:
    """An async impl suspended in an await while something else holds the loop is not
    named in the loop.blocked event (it was, for every stall during its call); one that
    blocks after a suspension still is."""
    class Patient:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            await anyio.sleep(0.6)
            return [_hit("patient")]

    class LateBlocker:
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            await anyio.lowlevel.checkpoint()
            time.sleep(0.3)  # blocking inside async code, after its first suspension
            return [_hit("late")]

    async with isolated_kernel() as kernel:
        stalls: list[LoopBlocked] = []
        kernel.bus.add_callback(stalls.append, name="w", pattern="loop.blocked")  # type: ignore[arg-type]
        policy = {"retrieve": {"timeout": timeout or math.inf}}
        patient = kernel.compose({"patient": Patient()}, stages=["retrieve"], stage=policy)
        async with anyio.create_task_group() as tg:
            tg.start_soon(patient.run, "q")
            await anyio.sleep(0.05)
            time.sleep(0.3)  # not an impl: the caller's own code holds the loop
        await settle(lambda: bool(stalls))
        assert all(not e.active for e in stalls), [e.active for e in stalls]
        stalls.clear()
        late = kernel.compose({"late": LateBlocker()}, stages=["retrieve"], stage=policy)
        await late.run("q")
        await settle(lambda: bool(stalls))
        assert "late.aieng_retrieve" in stalls[0].active
