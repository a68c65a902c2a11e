"""Closing a pipeline while an agent runs on it: the step in flight ends before the
components close (no tool or memory meets a closed component), and the run ends at the next
step boundary with :class:`AgentClosedError`, naming the pipeline, its partial result kept."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentFinished,
    Completion,
    MemoryItem,
    Query,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentClosedError, AgentOptions, AgentStep

pytestmark = pytest.mark.anyio


class Looping:
    """A backend double that always calls ``slow``."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.calls += 1
        return Completion("", finish_reason="tool_calls", usage=Usage(3, 2),
                          tool_calls=(ToolCall(f"c{self.calls}", "slow", {"n": self.calls}),))


class Slow:
    """A tool (and a memory) that records whether it was used after its close."""

    def __init__(self) -> None:
        self.closed = False
        self.used_closed: list[str] = []
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.wait = False

    def _use(self, what: str) -> None:
        if self.closed:
            self.used_closed.append(what)

    @hookimpl
    def aieng_pipeline_close(self) -> None:
        self.closed = True

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="slow", description="Slow.", parameters={"type": "object"})]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        self._use("tool")
        if self.wait:
            self.started.set()
            await self.release.wait()
        self._use("tool (after its wait)")
        return ToolResult(call.id, f"result {call.arguments['n']}")

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem]:
        self._use("recall")
        return []

    @hookimpl
    def aieng_memory_store(self, items: list[MemoryItem]) -> None:
        self._use("store")


async def test_closing_between_steps_ends_the_run_with_a_typed_error() -> None:
    async with Kernel(env={}, entry_points=[]) as kernel:
        slow = Slow()
        pipeline = kernel.compose({"llm": Looping(), "slow": slow}, name="closing")
        seen: list[AgentFinished] = []
        kernel.bus.add_callback(lambda e: seen.append(e) if isinstance(e, AgentFinished)
                                else None, name="probe")

        async def close_after_first(step: AgentStep) -> None:
            if step.index == 1:
                await pipeline.aclose()

        agent = Agent(pipeline, AgentOptions(max_steps=5, stall_steps=10))
        with pytest.raises(AgentClosedError) as raised:
            await agent.run("go", on_step=close_after_first)
        error = raised.value
        assert isinstance(error, RuntimeError)  # what a closed pipeline raised before
        assert error.pipeline == "closing"
        assert "'closing'" in str(error) and "closed" in str(error)
        assert "after step 1" in str(error)
        result = error.result
        assert result.status == "closed" and result.pipeline == "closing"
        assert [s.index for s in result.steps] == [1]
        assert [r.content for r in result.steps[0].results] == ["result 1"]
        assert [m.role for m in result.messages] == ["user", "assistant", "tool"]
        assert result.usage == Usage(3, 2)
        assert any(isinstance(e, AgentFinished) and e.status == "closed"
                   for e in result.events)
        assert slow.used_closed == []  # recall of step 2 never reached a closed memory
        await anyio.lowlevel.checkpoint()
    assert [e.status for e in seen] == ["closed"]


async def test_closing_during_a_step_waits_for_its_tools_then_ends_the_run() -> None:
    async with Kernel(env={}, entry_points=[]) as kernel:
        slow = Slow()
        slow.wait = True
        pipeline = kernel.compose({"llm": Looping(), "slow": slow}, name="closing")
        agent = Agent(pipeline, AgentOptions(max_steps=5, stall_steps=10))
        raised: list[BaseException] = []

        async def run() -> None:
            try:
                await agent.run("go")
            except AgentClosedError as exc:
                raised.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(10):  # fails instead of hanging
                await slow.started.wait()
                tg.start_soon(pipeline.aclose)
                await anyio.sleep(0.01)
                assert not slow.closed  # the close waits for the tool in flight
                slow.release.set()
        assert slow.closed
        assert slow.used_closed == []  # neither the tool nor the step's store met it closed
        (error,) = raised
        assert isinstance(error, AgentClosedError)
        assert [len(s.results) for s in error.result.steps] == [1]


async def test_a_run_on_a_closed_pipeline_names_it() -> None:
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": Looping(), "slow": Slow()}, name="gone")
        await pipeline.aclose()
        with pytest.raises(AgentClosedError, match="'gone'") as raised:
            await Agent(pipeline).run("go")
        assert raised.value.result.steps == ()


class Planning:
    """A backend double: a plan naming the user's address, then the same call three
    times (a loop note), then an answer; its reviews reject once."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.calls += 1
        system = request.messages[0].content if request.messages else ""
        if not request.tools:  # the plan or the review
            return Completion("1. mail <EMAIL_1>" if "plan" in system
                              else "Wrong: mail <EMAIL_1> first", usage=Usage(1, 1))
        if sum(m.role == "tool" for m in request.messages) < 3:
            return Completion("", finish_reason="tool_calls", usage=Usage(1, 1), tool_calls=(
                ToolCall(f"c{self.calls}", "slow", {"n": "<EMAIL_1>"}),))
        return Completion("done", usage=Usage(1, 1))


async def test_logs_hold_no_text_of_the_run() -> None:
    """The ``agent.planned``, ``agent.reviewed`` and ``agent.loop_noted`` log lines held
    the plan, the review and the repeated call's arguments: with ``pii``'s restore, the
    user's own values (an address, a key) in clear in the logs. They now hold sizes and the
    tool's name; the texts stay in the result and its events."""
    from aieng_guardrails import PIIGuard, PIIOptions
    from structlog.testing import capture_logs

    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"pii": PIIGuard(PIIOptions(restore=True)),
                                   "llm": Planning(), "slow": Slow()}, name="private")
        agent = Agent(pipeline, AgentOptions(plan=True, reflect=True, replan="every_step",
                                             stall_steps=10, max_steps=8))
        with capture_logs() as logs:
            result = await agent.run("mail bob@example.org the report")
    assert "bob@example.org" in result.plan  # restored for the run itself
    names = {entry["event"] for entry in logs}
    assert {"agent.planned", "agent.reviewed", "agent.loop_noted"} <= names, names
    assert not [e for e in logs if "bob@example.org" in repr(e)]
