"""Pipelines opening and closing: components closed once, after the runs in flight;
builds that fail; cancellation at the edges of a run and of the kernel."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aieng_core import ConfigError, Kernel, RunResult
from aieng_core.testing import EventCapture, settle
from aieng_core.testing.doubles import ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Hit,
    Request,
    RunFinished,
    Sample,
    Score,
)

pytestmark = pytest.mark.anyio


class ClosesInto:
    """A retriever that appends its name to ``closed`` when its pipeline closes, after an
    await (a real close awaits its I/O)."""

    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self.closed = name, closed

    @hookimpl
    def aieng_retrieve(self) -> list[Hit]:
        return []

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.closed.append(self.name)


async def test_closed_pipeline_refuses_runs(aieng_kernel: Kernel) -> None:
    """Closing calls aieng_pipeline_close once per component; a closed pipeline says so
    instead of running half-torn-down components."""
    closed: list[str] = []

    class Closable(ScriptedBackend):
        @hookimpl
        def aieng_pipeline_close(self) -> None:
            closed.append("yes")

    pipeline = aieng_kernel.compose({"llm": Closable()})
    await pipeline.aclose()
    await pipeline.aclose()
    assert closed == ["yes"]
    with pytest.raises(RuntimeError, match="closed"):
        await pipeline.run("x")


async def test_cancelled_kernel_exit_still_closes_every_component() -> None:
    """Leaving the kernel under cancellation (a deadline around it) still runs every
    component's async aieng_pipeline_close to its end: closing writes what components hold
    (a vector index's snapshot), and a cancelled caller must not lose it."""
    from aieng_core.testing import isolated_kernel

    closed: list[str] = []

    # Cancelled once the pipelines exist (a deadline of a few ms would fire before that on
    # a loaded machine, and the test would prove nothing or fail).
    with anyio.CancelScope() as deadline:
        async with isolated_kernel() as kernel:
            kernel.compose({"a": ClosesInto("a", closed), "b": ClosesInto("b", closed)},
                           stages=["retrieve"])
            kernel.compose({"c": ClosesInto("c", closed)}, name="other", stages=["retrieve"])
            deadline.cancel()
            await anyio.sleep_forever()
    assert deadline.cancelled_caught
    assert sorted(closed) == ["a", "b", "c"]


LEAKY = {"pipeline": {"name": "leaky"},
         "components": {"a": {"use": "holder"}, "b": {"use": "explodes"}}}


def _leaky_plugin(closed: list[str]) -> object:
    """A plugin offering ``holder`` (holds a resource until aieng_pipeline_close) and
    ``explodes`` (whose constructor raises)."""
    import types

    from aieng_hookspecs import ComponentRegistry

    class Holder(ClosesInto):
        """Holds a resource (a file, a client) from its constructor on."""

        def __init__(self) -> None:
            super().__init__("holder", closed)

    class Explodes:
        """Cannot start."""

        def __init__(self) -> None:
            raise OSError("no such folder")

    module = types.ModuleType("leaky_plugin")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("holder", Holder)
        registry.add("explodes", Explodes)

    module.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    return module


async def test_failed_build_closes_the_components_already_built(aieng_kernel: Kernel) -> None:
    """When a later component's constructor fails, the components already built are closed
    (aieng_pipeline_close), since no pipeline exists to close them."""
    from aieng_core.testing import registered, settle

    closed: list[str] = []
    with registered(aieng_kernel, _leaky_plugin(closed), "leaky"):
        with pytest.raises(ConfigError, match="components.b.*no such folder"):
            aieng_kernel.pipeline(LEAKY)
        await settle(lambda: closed == ["holder"])


async def test_failed_build_before_the_kernel_starts_closes_when_it_starts() -> None:
    """A build that fails before the kernel is entered closes what it built once the kernel
    runs (closing may be async)."""
    from aieng_core.testing import registered

    closed: list[str] = []
    kernel = Kernel(env={}, entry_points=[], loop_block_threshold=None)
    with registered(kernel, _leaky_plugin(closed), "leaky"):
        with pytest.raises(ConfigError, match="no such folder"):
            kernel.pipeline(LEAKY)
        assert closed == []
        async with kernel:
            pass
    assert closed == ["holder"]


async def test_closed_pipelines_are_released_by_the_kernel() -> None:
    """The kernel keeps a pipeline only until it is closed: a closed, dropped pipeline is
    garbage (no growth in a server that builds one per request), while an unclosed one is
    still closed when the kernel exits."""
    import gc
    import weakref

    from aieng_core.testing import isolated_kernel

    closed: list[str] = []

    async with isolated_kernel() as kernel:
        done = kernel.compose({"a": ClosesInto("done", closed)}, name="done")
        await done.run("q")
        await done.aclose()
        released = weakref.ref(done)
        del done
        kernel.compose({"b": ClosesInto("kept", closed)}, name="kept")
        gc.collect()
        assert released() is None
        assert closed == ["done"]
    assert closed == ["done", "kept"]


async def test_a_run_cancelled_as_it_finishes_ends_as_the_bus_says(aieng_kernel: Kernel) -> None:
    """A cancellation that arrives once the last stage is done does not take the finished
    run from its caller: the bus said ``run.finished`` with ``ok``, so the caller gets the
    result (the cancellation reaches it at its next await), not a Cancelled with no answer
    while telemetry counts a success."""
    capture = EventCapture(aieng_kernel)
    result: RunResult | None = None
    with anyio.CancelScope() as scope:
        class CancelsTheCaller:
            @hookimpl
            def aieng_judge(self, sample: Sample) -> list[Score]:
                scope.cancel()  # a sync impl: the run itself awaits nothing more
                return [Score(name="len", value=len(sample.output))]

        pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["done"]),
                                         "judge": CancelsTheCaller()})
        result = await pipeline.run("q")
        await anyio.sleep_forever()  # where the caller's cancellation belongs
    capture.close()
    assert scope.cancelled_caught
    assert result is not None and result.status == "ok" and result.answer == "done"
    assert [e.status for e in capture.of(RunFinished)] == ["ok"]


async def test_closing_waits_for_the_runs_in_flight(aieng_kernel: Kernel) -> None:
    """``aclose`` while a run is in flight lets the run end before any component closes:
    a run's later stages never call a closed component (a freed model, a closed database),
    and a run started once closing began is refused."""
    trail: list[str] = []
    release = anyio.Event()

    class Slow:
        @hookimpl
        async def aieng_generate(self, request: Request) -> Completion:
            trail.append("generate")
            await release.wait()
            return Completion(text="late")

        @hookimpl
        def aieng_judge(self, sample: Sample) -> list[Score]:
            trail.append(f"judge {sample.output}")
            return []

        @hookimpl
        async def aieng_pipeline_close(self) -> None:
            await anyio.lowlevel.checkpoint()
            trail.append("close")

    pipeline = aieng_kernel.compose({"slow": Slow()}, timeout=None)
    answers: list[str] = []

    async def run() -> None:
        answers.append((await pipeline.run("q")).answer)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await settle(lambda: trail == ["generate"])
        tg.start_soon(pipeline.aclose)
        await anyio.wait_all_tasks_blocked()  # aclose has closed, or waits for the run
        with pytest.raises(RuntimeError, match="is closed"):
            await pipeline.run("another")
        release.set()
    assert answers == ["late"]
    assert trail == ["generate", "judge late", "close"]


@pytest.mark.anyio
async def test_closing_from_inside_a_run_or_past_a_hung_one_ends(aieng_kernel: Kernel) -> None:
    """The wait for runs in flight has two ends besides the runs ending: a run that closes
    its own pipeline (a component, an ``on_delta``) does not wait for itself, and a caller
    that cancels ``aclose`` (a second Ctrl-C over a hung run) stops the wait; in both the
    components are closed."""
    closed: list[str] = []
    hang = anyio.Event()

    class Closer:
        pipeline: Any = None

        @hookimpl
        async def aieng_generate(self, request: Request) -> Completion:
            if request.messages[-1].content == "hang":
                await hang.wait()
            else:
                await self.pipeline.aclose()  # from inside its own run
            return Completion(text="done")

        @hookimpl
        async def aieng_pipeline_close(self) -> None:
            closed.append("close")

    closer = Closer()
    closer.pipeline = aieng_kernel.compose({"c": closer}, timeout=None)
    with anyio.fail_after(5):
        assert (await closer.pipeline.run("q")).answer == "done"
    assert closed == ["close"]

    hung = Closer()
    hung.pipeline = aieng_kernel.compose({"c": hung}, timeout=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hung.pipeline.run, "hang")
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.2) as waited:  # the caller gives up on the hung run
            await hung.pipeline.aclose()
        assert waited.cancelled_caught and closed == ["close", "close"]
        hang.set()


async def test_a_cancelled_kernel_exit_past_a_hung_run_closes_every_pipeline() -> None:
    """Leaving the kernel under cancellation while a run of one pipeline hangs (in a task
    outside the kernel's block: a server's request) stops the wait for that run; that
    pipeline's components close, and so do every other pipeline's: the first pipeline's
    cancelled wait used to end the kernel's closing loop, leaving the rest open."""
    from aieng_core.testing import isolated_kernel

    closed: list[str] = []
    hang = anyio.Event()

    class Hangs(ClosesInto):
        @hookimpl
        async def aieng_retrieve(self) -> list[Hit]:
            await hang.wait()
            return []

    async with anyio.create_task_group() as requests:
        with anyio.CancelScope() as deadline:
            async with isolated_kernel() as kernel:
                hung = kernel.compose({"a": Hangs("a", closed)}, stages=["retrieve"],
                                      timeout=None)
                kernel.compose({"b": ClosesInto("b", closed)}, name="other",
                               stages=["retrieve"])
                requests.start_soon(hung.run, "q")
                await anyio.wait_all_tasks_blocked()
                deadline.cancel()
                await anyio.sleep_forever()
        assert sorted(closed) == ["a", "b"]
        requests.cancel_scope.cancel()
    assert deadline.cancelled_caught


async def test_a_constructor_calling_sys_exit_is_a_config_error(aieng_kernel: Kernel) -> None:
    """A component whose constructor calls sys.exit (a library parsing sys.argv, one that
    exits when no GPU is found) is a ConfigError naming the component, as a raise is (the
    registry treats a plugin's SystemExit alike): the process ended without a word."""
    import types

    from aieng_hookspecs import ComponentRegistry

    from aieng_core.testing import registered

    class Exits:
        def __init__(self) -> None:
            raise SystemExit("no CUDA device")

    plugin = types.ModuleType("exits_plugin")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("exits", Exits)

    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    with registered(aieng_kernel, plugin, "exits"), pytest.raises(
            ConfigError, match="components.gpu.*SystemExit: no CUDA device"):
        aieng_kernel.pipeline({"pipeline": {"name": "p"}, "components": {"gpu": {"use": "exits"}}})
