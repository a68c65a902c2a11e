"""The conformance suites' release check: a component that keeps a file descriptor, a thread
or a task after its pipeline closed fails it; one that gives everything back passes."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Document

from aieng_core._scope import RunScope
from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.kernel import Kernel
from aieng_core.pipeline import Pipeline
from aieng_core.testing.conformance import DEFAULT_CORPUS, RetrieverSuite
from aieng_core.testing.conformance._base import RoleSuite
from aieng_core.testing.conformance._resources import Resources, leaks, released, snapshot

pytestmark = pytest.mark.anyio

class Fixtures:
    """Stands in for pytest's ``request`` where a test calls the suite's test itself."""

    @staticmethod
    def getfixturevalue(name: str) -> object:
        return {"corpus": list(DEFAULT_CORPUS)}[name]


linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                                reason="file descriptors are read from /proc/self/fd (Linux)")


class Holder(MemoryRetriever):
    """A retriever that opens a file, starts a thread and a task when its pipeline opens;
    ``tidy`` ones give each back on close, the others keep what ``keeps`` names."""

    def __init__(self, path: Path, keeps: str = "", tidy: bool = False) -> None:
        super().__init__(MemoryOptions())
        self.path, self.keeps, self.tidy = path, keeps, tidy
        self.fd: int | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[Any] | None = None

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.fd = os.open(self.path / "held.lock", os.O_CREAT | os.O_WRONLY)
        self.thread = threading.Thread(target=self.stop.wait, name="holder-flusher",
                                       daemon=True)
        self.thread.start()
        self.task = asyncio.get_running_loop().create_task(asyncio.sleep(3600),
                                                           name="holder-refresh")

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        if self.fd is not None and (self.tidy or self.keeps != "fd"):
            os.close(self.fd)
            self.fd = None
        if self.tidy or self.keeps != "thread":
            self.stop.set()  # the thread ends a moment later: the check waits for it
        if self.task is not None and (self.tidy or self.keeps != "task"):
            self.task.cancel()

    def release(self) -> None:
        """Give back what the test made it keep (so the test itself leaks nothing)."""
        self.stop.set()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.task is not None:
            self.task.cancel()


# Holder keeps an asyncio task (trio's task check is tests/test_host_kit.py's).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("keeps", "message"), [
    pytest.param("fd", r"file descriptor \d+ -> .*held\.lock", marks=linux_only),
    ("thread", r"thread 'holder-flusher' \(Thread running Event\.wait\)"),
    ("task", r"task 'holder-refresh'"),
])
async def test_the_release_check_catches_what_a_component_keeps(
    aieng_kernel: Kernel, tmp_path: Path, keeps: str, message: str
) -> None:
    """A retriever that keeps its lock file, its flushing thread or its refreshing task
    open after ``aieng_pipeline_close`` fails the suite's release check, which names it."""
    suite = RetrieverSuite()
    suite.release_grace = 0.2  # type: ignore[misc]  # what it keeps, it keeps for good
    before = snapshot()
    component = Holder(tmp_path, keeps=keeps)
    pipeline = suite.compose(aieng_kernel, component)
    try:
        with pytest.raises(AssertionError, match=f"Holder still holds .*{message}"):
            await suite.test_releases_what_it_opened(before, component, pipeline,
                                             Fixtures())  # type: ignore[arg-type]
    finally:
        component.release()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Holder's task is asyncio's
async def test_the_release_check_passes_a_component_that_gives_everything_back(
    aieng_kernel: Kernel, tmp_path: Path
) -> None:
    """Closing the file, stopping the thread (it ends a moment after the close returned)
    and cancelling the task passes, and the suite's own test reports no leak."""
    suite = RetrieverSuite()
    before = snapshot()
    component = Holder(tmp_path, tidy=True)
    pipeline = suite.compose(aieng_kernel, component)
    await suite.test_releases_what_it_opened(before, component, pipeline,
                                             Fixtures())  # type: ignore[arg-type]
    assert component.thread is not None and not component.thread.is_alive()


async def test_what_the_kernel_runs_and_pools_is_no_leak(aieng_kernel: Kernel) -> None:
    """The kernel's worker threads (anyio's pool, kept idle a while) and the snapshot's
    own listing descriptor are not a component's: a ``@blocking``-style call in a worker
    thread leaves nothing to report."""
    import anyio

    before = snapshot()
    await anyio.to_thread.run_sync(lambda: None)
    assert await released(before, grace=0.5) == []


@linux_only
async def test_a_descriptor_reused_for_another_file_is_a_leak(tmp_path: Path) -> None:
    """A descriptor number that was open before and now refers to another file is new."""
    first = os.open(tmp_path / "a", os.O_CREAT | os.O_WRONLY)
    before = snapshot()
    os.close(first)
    second = os.open(tmp_path / "b", os.O_CREAT | os.O_WRONLY)
    try:
        assert second == first
        assert any(str(tmp_path / "b") in leak for leak in leaks(before, snapshot()))
    finally:
        os.close(second)


async def test_unobserved_parts_are_named() -> None:
    """Under asyncio on Linux everything is seen; the snapshot says what it could not."""
    unobserved = snapshot().unobserved
    if sys.platform.startswith("linux"):
        assert unobserved == ()
    else:
        assert any("file descriptors" in u for u in unobserved)


class OpensWhenBuilt(MemoryRetriever):
    """A retriever that opens its lock file when built and never closes it itself."""

    def __init__(self, path: Path) -> None:
        super().__init__(MemoryOptions())
        self.fd = os.open(path / "built.lock", os.O_CREAT | os.O_WRONLY)


@linux_only
class TestWhatABuiltComponentOpens(RoleSuite):
    """Through pytest's own fixture set-up: the suite's snapshot is taken before the
    ``component`` fixture builds the component, so what its constructor opens counts."""

    role = "retriever"
    required_hooks = ("aieng_retrieve",)
    role_hooks = ("aieng_retrieve",)
    release_grace = 0.2

    @pytest.fixture
    def component(self, tmp_path: Path) -> Iterator[OpensWhenBuilt]:
        built = OpensWhenBuilt(tmp_path)
        yield built
        os.close(built.fd)

    async def test_releases_what_it_opened(self, resources_before: Resources,
                                           component: object, conformance_pipeline: Pipeline,
                                           request: pytest.FixtureRequest) -> None:
        """The inherited check fails, naming the file the constructor opened."""
        with pytest.raises(AssertionError, match=r"OpensWhenBuilt still holds .*built\.lock"):
            await super().test_releases_what_it_opened(resources_before, component,
                                                       conformance_pipeline, request)


class Suspending(MemoryRetriever):
    """A retriever that suspends once per call, so the kernel arms the stage's deadline."""

    @hookimpl
    async def aieng_retrieve(self, query: Any, k: int) -> Any:
        await asyncio.sleep(0)
        return super().aieng_retrieve(query=query, k=k)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_finished_run_keeps_no_trace_alive(aieng_kernel: Kernel) -> None:
    """asyncio keeps a cancelled timer (a deadline that did not fire) with the context it
    was armed in until it prunes them (after 100): a finished run's events must not stay
    reachable from there once its result is dropped."""
    component = Suspending(MemoryOptions())
    pipeline = aieng_kernel.compose({"memory": component}, name="traced", timeout=30.0)
    async with pipeline:
        await pipeline.index([Document(id=f"d{i}", text=f"text {i}") for i in range(3)])
        for _ in range(20):
            result = await pipeline.run("text")
            assert result.events  # the result itself has its trace
        del result
    gc.collect()
    kept = [s for s in gc.get_objects() if isinstance(s, RunScope) and s.trace]
    assert kept == []


class Answering:
    """A backend double that answers at once (an agent's one-step run)."""

    @hookimpl
    async def aieng_generate(self, request: Any) -> Any:
        from aieng_hookspecs.types import Completion, Usage

        await asyncio.sleep(0)
        return Completion("done", usage=Usage(3, 1))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_finished_agent_run_keeps_no_trace_alive(aieng_kernel: Kernel) -> None:
    """The same for an agent run: its time budget is a deadline that did not fire."""
    from aieng_core.agent import Agent

    pipeline = aieng_kernel.compose({"llm": Answering()}, name="agent-traced")
    async with pipeline:
        agent = Agent(pipeline)
        for _ in range(10):
            result = await agent.run("task")
            assert result.status == "answered" and result.events
        del result
    gc.collect()
    kept = [s for s in gc.get_objects() if isinstance(s, RunScope) and s.trace]
    assert kept == []
