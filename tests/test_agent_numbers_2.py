"""The numbers an agent run reports, when a step ends the run before it is recorded: every
model call that finished counts in the run's usage and cost (a timeout, a cancellation, an
error), and a step's duration covers all it did, its memory store included."""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import trio.testing
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import (
    AgentFinished,
    AgentState,
    AgentStepped,
    Completion,
    MemoryItem,
    Message,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions, _runner
from aieng_core.testing import EventCapture, ScriptedBackend

pytestmark = pytest.mark.anyio


def mock_clock() -> pytest.MarkDecorator:
    """trio with a clock of its own that jumps to the next deadline whenever every task
    waits: a run's timeout (or a host's deadline) passes after all the work before it
    however busy the machine is (a real 0.2 s raced that work on a loaded CI box)."""
    return pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})],
        ids=["trio-mock-clock"])

#: Prices that make the cost of 10 prompt and 5 completion tokens exact in binary: 0.5.
PRICES = {"input_price_per_1k": 25.0, "output_price_per_1k": 50.0}


class Hang:
    """One tool, ``hang``, that never returns (the run's timeout or a cancel ends it)."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="hang", description="never returns")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "hang":
            return None
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class ConsultThenHang:
    """A policy that asks the model (``context.generate``), then never decides."""

    def __init__(self) -> None:
        self.context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.context = context

    @hookimpl
    async def aieng_agent_step(self, state: AgentState) -> None:
        assert self.context is not None
        await self.context.generate(Request(messages=(Message("user", "what now?"),)))
        await anyio.sleep_forever()


class HangAt:
    """A backend whose ``n``-th call never returns; the others answer ``answer`` with 10 +
    5 tokens."""

    def __init__(self, n: int, answer: str = "42") -> None:
        self.n, self.answer, self.calls = n, answer, 0

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        self.calls += 1
        if self.calls == self.n:
            await anyio.sleep_forever()
        return Completion(text=self.answer, usage=Usage(10, 5))


def _compose(kernel: Kernel, **components: object) -> Any:
    return kernel.compose(components, name="numbers2", timeout=30.0)


def _finished(events: Sequence[object]) -> AgentFinished:
    [end] = [e for e in events if isinstance(e, AgentFinished)]
    return end


@mock_clock()
async def test_a_step_cut_by_the_timeout_counts_its_model_call() -> None:
    """The model asked for a tool (10 + 5 tokens spent), the tool outlived the run's
    timeout: the step is not recorded, its tokens and their cost are."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend([[ToolCall("c1", "hang", {})]], usage=Usage(10, 5))
        agent = Agent(_compose(kernel, llm=llm, tools=Hang()),
                      AgentOptions(timeout=0.2, **PRICES))
        result = await agent.run("go")
    assert result.status == "timeout" and result.steps == () and len(llm.requests) == 1
    assert result.usage == Usage(10, 5) and result.cost == 0.5
    end = _finished(result.events)
    assert (end.usage, end.cost, end.steps) == (Usage(10, 5), 0.5, 0)


@mock_clock()
@pytest.mark.parametrize("options", [{"plan": True}, {"reflect": True}])
async def test_a_call_cut_by_the_timeout_leaves_the_finished_ones_counted(
        options: dict[str, bool]) -> None:
    """The step's first model call finished (the plan, or the decision "42"), its second
    (the decision, or the review of "42") outlived the timeout: the finished call counts."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = HangAt(2)
        agent = Agent(_compose(kernel, llm=llm), AgentOptions(timeout=0.2, **options, **PRICES))
        result = await agent.run("what is 6 * 7?")
    assert result.status == "timeout" and result.steps == () and llm.calls == 2
    assert result.usage == Usage(10, 5) and result.cost == 0.5
    end = _finished(result.events)
    assert (end.usage, end.cost) == (Usage(10, 5), 0.5)


@mock_clock()
async def test_a_cut_step_counts_after_the_recorded_ones() -> None:
    """Two recorded steps and one cut: the run's usage is all three model calls, the
    steps' usages the two recorded ones."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend([[ToolCall("a", "count", {})], [ToolCall("b", "count", {})],
                               [ToolCall("c", "hang", {})]], usage=Usage(10, 5))

        class Count:
            @hookimpl
            def aieng_tools(self) -> list[ToolSpec]:
                return [ToolSpec(name="count", description="a new number")]

            @hookimpl
            def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
                return ToolResult(call.id, call.id) if call.name == "count" else None

        agent = Agent(_compose(kernel, llm=llm, tools=Hang(), counter=Count()),
                      AgentOptions(timeout=0.3))
        result = await agent.run("go")
    assert result.status == "timeout" and len(result.steps) == 2 and len(llm.requests) == 3
    assert [s.usage for s in result.steps] == [Usage(10, 5)] * 2
    assert result.usage == Usage(30, 15) == _finished(result.events).usage


@mock_clock()
async def test_a_policys_model_call_counts_when_the_timeout_cuts_the_policy() -> None:
    """A policy consulted the model (10 + 5 tokens) and was still deciding at the timeout:
    the call it made counts."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(["unused"], usage=Usage(10, 5))
        agent = Agent(_compose(kernel, llm=llm, policy=ConsultThenHang()),
                      AgentOptions(timeout=0.2, **PRICES))
        result = await agent.run("go")
    assert result.status == "timeout" and len(llm.requests) == 1
    assert result.usage == Usage(10, 5) and result.cost == 0.5
    assert _finished(result.events).usage == Usage(10, 5)


@mock_clock()
async def test_a_cancelled_run_reports_its_spent_tokens() -> None:
    """Cancelling ``agent.run`` while the tools run: ``agent.finished`` (``cancelled``)
    counts the model call that asked for them."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        capture = EventCapture(kernel)
        llm = ScriptedBackend([[ToolCall("c1", "hang", {})]], usage=Usage(10, 5))
        agent = Agent(_compose(kernel, llm=llm, tools=Hang()), AgentOptions(**PRICES))
        with anyio.move_on_after(0.2):
            await agent.run("go")
        [end] = capture.of(AgentFinished)
    assert (end.status, end.steps, end.usage, end.cost) == ("cancelled", 0, Usage(10, 5), 0.5)


async def test_a_failing_call_after_a_finished_one_reports_the_finished_one() -> None:
    """The decision finished (10 + 5 tokens), then the review call failed and ended the run
    with an error: ``agent.finished`` (``error``) counts the decision."""

    asked: list[Request] = []

    def reply(request: Request) -> str:
        asked.append(request)
        if len(asked) == 2:  # the review of the answer "42"
            raise RuntimeError("the reviewer is down")
        return "42"

    async with Kernel(env={}, entry_points=[]) as kernel:
        capture = EventCapture(kernel)
        llm = ScriptedBackend(reply, usage=Usage(10, 5))
        agent = Agent(_compose(kernel, llm=llm), AgentOptions(reflect=True, **PRICES))
        with pytest.raises(Exception, match="reviewer is down"):
            await agent.run("what is 6 * 7?")
        [end] = capture.of(AgentFinished)
    assert len(asked) == 2 and asked[1].messages[-1].content.endswith("42")
    assert (end.status, end.steps, end.usage, end.cost) == ("error", 0, Usage(10, 5), 0.5)


class SlowStore:
    """A memory whose store takes 100 s on the test's clock."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    @hookimpl
    def aieng_memory_recall(self, query: object, k: int) -> list[MemoryItem]:
        return []

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        self.clock[0] += 100.0


async def test_a_steps_duration_covers_its_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's ``duration_s`` is all it did, the memory store at its end included: a store
    of 100 s (on a test clock that moves only there) makes a step of 100 s, and the
    ``agent.step`` event and the run say the same."""
    clock = [0.0]
    monkeypatch.setattr(_runner, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(["the answer"])
        result = await Agent(_compose(kernel, llm=llm, memory=SlowStore(clock))).run("go")
    assert result.status == "answered" and [s.duration_s for s in result.steps] == [100.0]
    stepped = [e for e in result.events if isinstance(e, AgentStepped)]
    assert [e.duration_s for e in stepped] == [100.0]
    assert result.duration_s == 100.0
