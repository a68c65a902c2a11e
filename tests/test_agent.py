"""The agent runner on a real kernel with doubles: tool use fed back to the model, errors as
results, budgets, loop and stall detection, policies, memory, cancellation and events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio.testing
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentAction,
    AgentFinished,
    AgentState,
    AgentStepped,
    ErrorEvent,
    MemoryItem,
    Message,
    Query,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

from aieng_core import Kernel
from aieng_core._errors import HookError
from aieng_core.agent import Agent, AgentOptions, AgentStep
from aieng_core.testing import EventCapture, ScriptedBackend, settle

pytestmark = pytest.mark.anyio



def call(name: str, cid: str = "c1", **arguments: Any) -> ToolCall:
    """A tool call of ``name`` with ``arguments``."""
    return ToolCall(id=cid, name=name, arguments=arguments)




class Tools:
    """Tool doubles: ``add`` adds, ``echo`` echoes, ``boom`` raises, ``slow`` sleeps."""

    def __init__(self, slow: float = 0.05) -> None:
        self.slow = slow
        self.calls: list[ToolCall] = []
        self.running = 0
        self.most = 0
        self.cancelled = 0

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name=n, description=f"the {n} tool") for n in
                ("add", "echo", "boom", "slow")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name not in ("add", "echo", "boom", "slow"):
            return None
        self.calls.append(call)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if call.name == "boom":
                raise RuntimeError("kaboom")
            if call.name == "slow":
                await anyio.sleep(float(call.arguments.get("s", self.slow)))
                return ToolResult(call.id, f"slept {call.arguments.get('tag', '')}")
            if call.name == "add":
                return ToolResult(call.id, str(call.arguments["a"] + call.arguments["b"]))
            return ToolResult(call.id, str(call.arguments.get("text", "")))
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def compose(kernel: Kernel, **components: object) -> Any:
    return kernel.compose(components, name="agent-test", timeout=5.0)


async def test_answer_without_tools() -> None:
    """A model that answers at once ends the run ``answered`` in one step, with the answer
    in the transcript and the step's tokens counted."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(["Paris is the capital."])
        result = await Agent(compose(kernel, llm=llm)).run("Capital of France?")
    assert result.status == "answered" and result.answer == "Paris is the capital."
    assert [s.action.kind for s in result.steps] == ["answer"]
    assert [m.role for m in result.messages] == ["user", "assistant"]
    assert result.tokens == result.steps[0].usage.total_tokens > 0
    assert llm.requests[0].tools == ()


async def test_two_step_tool_use_feeds_results_back() -> None:
    """A tool call's result reaches the model as a ``tool`` message answering the call,
    after the assistant message carrying the call; the tools offered are the components'."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("add", "c1", a=2, b=3)], "The sum is 5."])
        tools = Tools()
        result = await Agent(compose(kernel, llm=model, tools=tools)).run("What is 2+3?")
    assert result.status == "answered" and result.answer == "The sum is 5."
    first, second = model.requests
    assert [t.name for t in first.tools] == ["add", "echo", "boom", "slow"]
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    assistant, tool = second.messages[1:]
    assert assistant.tool_calls == (call("add", "c1", a=2, b=3),)
    assert tool.tool_call_id == "c1" and tool.content == "5"
    assert result.steps[0].results == (ToolResult("c1", "5"),)
    assert result.usage == Usage(20, 10) and len(result.steps) == 2


async def test_unknown_tool_is_an_error_result_and_the_model_recovers() -> None:
    """A call no component answers gets an error result naming it and the known tools; the
    model sees it and goes on."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("mul", a=2, b=3)], [call("add", "c2", a=2, b=3)], "5"])
        result = await Agent(compose(kernel, llm=model, tools=Tools())).run("2*3?")
    [error] = result.steps[0].results
    assert error.is_error and "unknown tool 'mul'" in error.content
    assert "add, boom, echo, slow" in error.content
    assert model.requests[1].messages[-1].content == error.content
    assert result.status == "answered" and result.steps[1].results[0].content == "5"


async def test_a_raising_tool_becomes_an_error_result() -> None:
    """A tool that raises gives the model an error result with the exception, and the
    failure is published as an error event of the agent run."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        capture = EventCapture(kernel)
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("boom")], "sorry"])
        result = await Agent(compose(kernel, llm=model, tools=Tools())).run("go")
    [error] = result.steps[0].results
    assert error.is_error and "RuntimeError: kaboom" in error.content
    assert result.status == "answered"
    [event] = [e for e in capture.of(ErrorEvent) if e.hook == "aieng_call_tool"]
    assert event.run_id == result.run_id and event in result.events


async def test_concurrent_calls_keep_their_order_under_the_bound() -> None:
    """Calls of one step run concurrently, at most ``tool_concurrency`` at once, and their
    results come back in call order, whatever order they finish in."""
    slow = [call("slow", f"s{i}", s=0.05 - i * 0.01, tag=str(i)) for i in range(5)]
    async with Kernel(env={}, entry_points=[]) as kernel:
        tools = Tools()
        model = ScriptedBackend(usage=Usage(10, 5), replies=[slow, "done"])
        agent = Agent(compose(kernel, llm=model, tools=tools), AgentOptions(tool_concurrency=2))
        result = await agent.run("sleep")
    assert [r.call_id for r in result.steps[0].results] == [f"s{i}" for i in range(5)]
    assert [r.content for r in result.steps[0].results] == [f"slept {i}" for i in range(5)]
    assert tools.most == 2
    tool_messages = [m for m in model.requests[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == [f"s{i}" for i in range(5)]


async def test_duplicate_call_ids_in_a_step_are_made_unique() -> None:
    """Two calls of one step with the same id get distinct ids, so each tool message
    answers exactly one call."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("echo", "x", text="a"), call("echo", "x", text="b")], "ok"])
        result = await Agent(compose(kernel, llm=model, tools=Tools())).run("echo")
    ids = [c.id for c in result.steps[0].tool_calls]
    assert ids == ["x", "x-2"]
    assert [r.call_id for r in result.steps[0].results] == ids


async def test_max_steps_stops_the_run() -> None:
    """A model that never answers is stopped after ``max_steps`` steps."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        n = iter(range(100))
        model = ScriptedBackend(usage=Usage(10, 5), replies=[lambda r: [call("echo", "c", text=f"new {next(n)}")]])
        agent = Agent(compose(kernel, llm=model, tools=Tools()), AgentOptions(max_steps=3))
        result = await agent.run("loop forever")
    assert result.status == "max_steps" and len(result.steps) == 3 and result.answer == ""
    assert "3 steps" in result.reason


async def test_token_budget_stops_before_running_tools() -> None:
    """Once the steps used ``max_tokens``, the run ends ``budget`` without running the tool
    calls of the step that spent it."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        n = iter(range(100))
        tools = Tools()
        model = ScriptedBackend(usage=Usage(10, 5), replies=[lambda r: [call("echo", "c", text=f"v{next(n)}")]])
        agent = Agent(compose(kernel, llm=model, tools=tools),
                      AgentOptions(max_tokens=30, max_steps=10))
        result = await agent.run("spend")
    assert result.status == "budget" and "30" in result.reason
    assert len(result.steps) == 2 and result.tokens == 30
    assert result.steps[-1].results == () and len(tools.calls) == 1


async def test_cost_budget_uses_the_prices() -> None:
    """The cost of a step is its prompt and completion tokens at the per-1k prices; the run
    ends ``budget`` when it reaches ``max_cost``."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        n = iter(range(100))
        model = ScriptedBackend(usage=Usage(10, 5), replies=[lambda r: [call("echo", "c", text=f"v{next(n)}")]])
        options = AgentOptions(input_price_per_1k=1.0, output_price_per_1k=2.0, max_cost=0.05)
        result = await Agent(compose(kernel, llm=model, tools=Tools()), options).run("spend")
    assert result.steps[0].cost == pytest.approx(0.02)  # 10/1000 * 1 + 5/1000 * 2
    assert result.status == "budget" and len(result.steps) == 3
    assert result.cost == pytest.approx(0.06) and "cost budget" in result.reason


async def test_loop_is_noted_then_stopped() -> None:
    """The same call (arguments in any key order) repeated ``loop_repeats`` times first gets
    a note to the model (a user turn: templates refuse system text mid-conversation);
    repeated again, the run stops ``loop``."""
    same = [[call("add", "c", a=1, b=2)], [call("add", "c", b=2, a=1)]]
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(10, 5), replies=[same[0], same[1], same[0], same[1]])
        agent = Agent(compose(kernel, llm=model, tools=Tools()),
                      AgentOptions(loop_repeats=3, stall_steps=10))
        result = await agent.run("add")
    assert [bool(s.note) for s in result.steps] == [False, False, True, False]
    assert result.status == "loop" and len(result.steps) == 4
    note = model.requests[3].messages[-1]
    assert note.role == "user" and "repeating" in note.content and "add(" in note.content
    assert result.steps[-1].results == ()  # the looping call was not run again


async def test_a_note_heeded_is_no_loop() -> None:
    """After the note, a different call continues the run and an answer ends it."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        same = [call("add", "c", a=1, b=2)]
        model = ScriptedBackend(usage=Usage(10, 5), replies=[same, same, same, [call("echo", "e", text="hi")], "3"])
        result = await Agent(compose(kernel, llm=model, tools=Tools())).run("add")
    assert result.status == "answered" and result.answer == "3"


async def test_stall_on_errors_in_a_row() -> None:
    """``stall_steps`` steps in a row whose results are all errors stop the run ``stalled``."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        n = iter(range(100))
        model = ScriptedBackend(usage=Usage(10, 5), replies=[lambda r: [call("nope", "c", i=next(n))]])
        agent = Agent(compose(kernel, llm=model, tools=Tools()), AgentOptions(stall_steps=2))
        result = await agent.run("fail")
    assert result.status == "stalled" and len(result.steps) == 2


async def test_stall_on_nothing_new() -> None:
    """Steps whose observations were all seen before count as stalled, even with different
    arguments; one new observation resets the count."""
    texts = iter(["a", "a", "b", "a", "b", "a"])
    async with Kernel(env={}, entry_points=[]) as kernel:
        n = iter(range(100))
        model = ScriptedBackend(usage=Usage(10, 5), replies=[lambda r: [call("echo", "c", text=next(texts), i=next(n))]])
        agent = Agent(compose(kernel, llm=model, tools=Tools()), AgentOptions(stall_steps=3))
        result = await agent.run("echo")
    # a (new) a (1) b (new) a (1) b (2) a (3: stalled)
    assert result.status == "stalled" and len(result.steps) == 6


class Policy:
    """A policy double: answers from a list of actions (``None``: no opinion)."""

    def __init__(self, actions: Sequence[AgentAction | None]) -> None:
        self.actions = list(actions)
        self.states: list[AgentState] = []

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        self.states.append(state)
        return self.actions[min(len(self.states), len(self.actions)) - 1]


async def test_a_policy_decides_before_the_model() -> None:
    """A policy's action is used and the model is never asked; the policy sees the tools,
    the step count and the budgets."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(["model answer"])
        policy = Policy([AgentAction("tool_calls", tool_calls=(call("echo", text="x"),)),
                         AgentAction("answer", text="policy answer")])
        result = await Agent(compose(kernel, plan=policy, llm=llm, tools=Tools()),
                             AgentOptions(max_steps=4)).run("go")
    assert result.answer == "policy answer" and llm.requests == []
    assert [s.source for s in result.steps] == ["plan", "plan"]
    first, second = policy.states
    assert [t.name for t in first.tools] == ["add", "echo", "boom", "slow"]
    assert (first.step, second.step, first.max_steps) == (0, 1, 4)
    assert second.messages[-1] == Message("tool", "x", tool_call_id="c1")


async def test_a_policy_returning_none_falls_through_to_the_model() -> None:
    """A policy with no opinion lets the model decide; a stop action ends ``stopped``."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(usage=Usage(10, 5), replies=[[call("echo", text="x")]])
        policy = Policy([None, AgentAction("stop", text="enough")])
        result = await Agent(compose(kernel, plan=policy, llm=llm, tools=Tools())).run("go")
    assert [s.source for s in result.steps] == ["model", "plan"]
    assert result.status == "stopped" and "enough" in result.reason
    assert len(llm.requests) == 1


class Memory:
    """A memory double: recalls fixed items and records what it is asked to store."""

    def __init__(self, items: Sequence[MemoryItem]) -> None:
        self.items = list(items)
        self.queries: list[tuple[Query, int]] = []
        self.stored: list[MemoryItem] = []

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem]:
        self.queries.append((query, k))
        return self.items[:k]

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        self.stored.extend(items)


async def test_memory_is_recalled_before_each_step_and_stored_after() -> None:
    """Recalled items reach the model in its system message, after the system prompt, best
    first and bounded; observations are stored short, the answer long with its task."""
    items = [MemoryItem("low", score=0.1), MemoryItem("user likes tea", score=0.9),
             MemoryItem("x" * 500, score=0.5)]
    async with Kernel(env={}, entry_points=[]) as kernel:
        memory = Memory(items)
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("echo", text="obs")], "tea"])
        options = AgentOptions(recall_k=3, memory_chars=120, system="Be brief.")
        result = await Agent(compose(kernel, llm=model, mem=memory, tools=Tools()),
                             options).run("What do I like?")
    assert [(q.text, k) for q, k in memory.queries] == [("What do I like?", 3)] * 2
    system, user = model.requests[0].messages[:2]
    assert system.role == "system" and user == Message("user", "What do I like?")
    assert system.content.startswith("Be brief.\n\nRelevant memory:\n")
    recalled = system.content.removeprefix("Be brief.\n\n")
    assert len(recalled) <= 120
    lines = recalled.splitlines()
    assert lines[1] == "- user likes tea" and lines[2].endswith("…") and len(lines) == 3
    # Recalled memory is not part of the transcript.
    assert result.messages[0] == Message("system", "Be brief.")
    assert result.steps[0].recalled[0].text == "user likes tea"
    short, long = memory.stored
    assert (short.kind, short.text, short.metadata["tool"]) == ("short", "obs", "echo")
    assert long.kind == "long" and long.text == "What do I like?\ntea"


async def test_cancellation_leaves_nothing_running() -> None:
    """Cancelling a run while its tools run cancels them all and publishes the end of the
    run as ``cancelled``."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        capture = EventCapture(kernel)
        tools = Tools()
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("slow", f"s{i}", s=30) for i in range(3)]])
        agent = Agent(compose(kernel, llm=model, tools=tools))
        # Cancelled once the three tools run (a fixed delay could pass before they all
        # started on a busy machine).
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, "sleep")
            await settle(lambda: tools.running == 3)
            tg.cancel_scope.cancel()
        assert tools.running == 0 and tools.cancelled == 3
        [end] = capture.of(AgentFinished)
    assert end.status == "cancelled" and end.steps == 0


#: trio with a clock that jumps to the next deadline whenever every task waits: a timeout
#: passes after the work before it however busy the machine is, and without waiting.
MOCK_CLOCK = pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})],
    ids=["trio-mock-clock"])


@MOCK_CLOCK
async def test_timeout_ends_the_run_with_its_steps() -> None:
    """The run's timeout (elapsed seconds on the loop's clock) ends the run ``timeout``,
    keeping the steps that finished (the first step's work takes no time on the mock
    clock, so it always finishes within the 0.3 s; a real clock made that a race)."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        tools = Tools()
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("echo", text="x")], [call("slow", s=30)]])
        agent = Agent(compose(kernel, llm=model, tools=tools), AgentOptions(timeout=0.3))
        result = await agent.run("sleep")
    assert result.status == "timeout" and len(result.steps) == 1 and tools.running == 0
    assert result.messages[-1].role == "tool"  # the cut step left nothing half-written


async def test_events_per_step_and_at_the_end() -> None:
    """Each step publishes ``agent.step`` and the run ``agent.finished``, with the agent
    run's id, the pipeline's name, tools, errors and usage; on_step sees each step."""
    seen: list[AgentStep] = []
    async with Kernel(env={}, entry_points=[]) as kernel:
        capture = EventCapture(kernel)
        model = ScriptedBackend(usage=Usage(10, 5), replies=[[call("boom"), call("echo", "c2", text="x")], "ok"])
        result = await Agent(compose(kernel, llm=model, tools=Tools())).run(
            "go", on_step=seen.append)
    steps = capture.of(AgentStepped)
    assert [(e.step, e.kind, e.tools, e.errors) for e in steps] == [
        (1, "tool_calls", ("boom", "echo"), 1), (2, "answer", (), 0)]
    [end] = capture.of(AgentFinished)
    assert (end.status, end.steps, end.usage) == ("answered", 2, Usage(20, 10))
    assert {e.run_id for e in [*steps, end]} == {result.run_id}
    assert {e.pipeline for e in [*steps, end]} == {"agent-test"}
    assert seen == list(result.steps)
    assert [e for e in result.events if isinstance(e, AgentStepped)] == steps


async def test_async_on_step_is_awaited() -> None:
    """An async ``on_step`` callback is awaited."""
    seen: list[int] = []

    async def on_step(step: AgentStep) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(step.index)

    async with Kernel(env={}, entry_points=[]) as kernel:
        await Agent(compose(kernel, llm=ScriptedBackend(["hi"]))).run("x", on_step=on_step)
    assert seen == [1]


class MoreTools:
    """A second tool component that lists a tool named like one of :class:`Tools`."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="echo")]


async def test_duplicate_tool_names_name_both_components() -> None:
    """Two components listing the same tool name is an error naming both."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, llm=ScriptedBackend(), tools=Tools(), more=MoreTools())
        with pytest.raises(HookError, match=r"'echo' is listed by both 'tools' and 'more'"):
            await Agent(pipeline).run("x")


async def test_no_backend_and_no_policy_says_so() -> None:
    """A pipeline with neither a backend nor a policy fails with what to add."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        with pytest.raises(LookupError, match="no backend"):
            await Agent(compose(kernel, tools=Tools())).run("x")


def test_options_are_validated() -> None:
    """Options refuse zero or negative limits, bools, NaN prices and a loop of one."""
    for bad in ({"max_steps": 0}, {"max_steps": True}, {"max_tokens": 0},
                {"max_cost": float("nan")}, {"input_price_per_1k": -1.0},
                {"timeout": 0}, {"loop_repeats": 1}, {"tool_concurrency": 0}):
        with pytest.raises(ValueError):
            AgentOptions(**bad)
    assert AgentOptions(max_cost=1, timeout=2.5).cost_of(1000, 1000) == 0.0


async def test_memories_are_merged_by_score_once_per_text() -> None:
    """Items of several memories are merged best score first, ties in the memories' order,
    the same text once, at most ``recall_k``."""
    one = Memory([MemoryItem("a", score=0.5), MemoryItem("b", score=0.9)])
    two = Memory([MemoryItem("b", score=0.2), MemoryItem("c", score=0.5),
                  MemoryItem("d", score=0.1)])
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, m1=one, m2=two, llm=ScriptedBackend(["ok"]))
        result = await Agent(pipeline, AgentOptions(recall_k=3)).run("q")
    assert [i.text for i in result.steps[0].recalled] == ["b", "a", "c"]
