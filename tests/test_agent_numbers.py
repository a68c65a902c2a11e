"""The numbers an agent run reports are true: its usage is the sum of every model call the
backend answered (planning, reviews and a policy's own calls included), its step count
keeps ``max_steps``, its durations agree, and ``context_chars`` bounds the planning call
too. A scripted run gives the same result in processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import (
    AgentFinished,
    AgentState,
    AgentStepped,
    Message,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


class Count:
    """One tool, ``count``: each call answers a new number (never a stall)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="count", description="the next number")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "count":
            return None
        self.calls += 1
        return ToolResult(call.id, f"number {self.calls}")


class Consulting:
    """A policy that asks the model (``context.generate``) before each step, then lets the
    runner decide (returns ``None``)."""

    def __init__(self) -> None:
        self.context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.context = context

    @hookimpl
    async def aieng_agent_step(self, state: AgentState) -> None:
        assert self.context is not None
        await self.context.generate(Request(messages=(Message("user", "should I decide?"),)))


def _compose(kernel: Kernel, **components: object) -> Any:
    return kernel.compose(components, name="numbers", timeout=5.0)


async def test_a_policys_model_call_counts_when_the_policy_lets_the_model_decide() -> None:
    """Tokens a policy spent through ``context.generate`` count in its step's usage even
    when it then declines to decide (they were spent): 2 calls of 10 + 5 tokens."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(["the answer"], usage=Usage(10, 5))
        result = await Agent(_compose(kernel, policy=Consulting(), llm=llm)).run("hi")
    assert len(llm.requests) == 2
    assert result.usage == Usage(20, 10) == result.steps[0].usage
    finished = next(e for e in result.events if isinstance(e, AgentFinished))
    assert finished.usage == Usage(20, 10)


async def test_the_planning_call_keeps_context_chars() -> None:
    """``context_chars`` bounds every call of a run: a long chat with ``plan=True`` sends
    a planning request within the bound, as the decisions are."""
    chat = [Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * 500)
            for i in range(20)] + [Message("user", "go on")]
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend(["1. answer", "done"])
        result = await Agent(_compose(kernel, llm=llm),
                             AgentOptions(plan=True, context_chars=3000)).run(chat)
    assert result.status == "answered" and result.plan == "1. answer"
    assert [sum(len(m.content) for m in r.messages) <= 3000 for r in llm.requests] \
        == [True, True]
    planning = llm.requests[0].messages
    assert planning[-1].content == "go on" and "turn 0 " in planning[1].content


async def test_the_result_and_the_finished_event_give_one_duration() -> None:
    """``AgentResult.duration_s`` is the ``agent.finished`` event's, not a second reading
    of the clock."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend([[ToolCall("c1", "count", {})], "done"])
        result = await Agent(_compose(kernel, llm=llm, tools=Count())).run("count")
    finished = next(e for e in result.events if isinstance(e, AgentFinished))
    assert result.duration_s == finished.duration_s > 0
    assert result.duration_s >= sum(s.duration_s for s in result.steps)


_replies = st.lists(st.one_of(st.just("answer"), st.just("tool"), st.just("OK"),
                              st.just("not quite")), min_size=1, max_size=8)


@settings(max_examples=30, deadline=None)
@given(replies=_replies, max_steps=st.integers(1, 4), plan=st.booleans(),
       reflect=st.booleans(), prompt=st.integers(0, 50), completion=st.integers(0, 50))
def test_usage_is_the_sum_of_every_call_the_backend_answered(
        replies: list[str], max_steps: int, plan: bool, reflect: bool, prompt: int,
        completion: int) -> None:
    """For any script: the run's usage is the backend's call count times each call's usage
    (plans and reviews included), the steps' usages add up to it, the events say the same,
    and there are at most ``max_steps`` steps (exactly that many when none answered)."""
    script = [[ToolCall(f"c{n}", "count", {})] if r == "tool" else r
              for n, r in enumerate(replies)]

    async def main() -> None:
        async with Kernel(env={}, entry_points=[]) as kernel:
            llm = ScriptedBackend(script, usage=Usage(prompt, completion))
            options = AgentOptions(max_steps=max_steps, plan=plan, reflect=reflect,
                                   loop_repeats=100, stall_steps=100)
            result = await Agent(_compose(kernel, llm=llm, tools=Count()), options).run("go")
        calls = len(llm.requests)
        assert result.usage == Usage(calls * prompt, calls * completion)
        assert Usage(sum(s.usage.prompt_tokens for s in result.steps),
                     sum(s.usage.completion_tokens for s in result.steps)) == result.usage
        stepped = [e for e in result.events if isinstance(e, AgentStepped)]
        assert [e.usage for e in stepped] == [s.usage for s in result.steps]
        assert [e.step for e in stepped] == list(range(1, len(result.steps) + 1))
        finished = next(e for e in result.events if isinstance(e, AgentFinished))
        assert finished.usage == result.usage and finished.steps == len(result.steps)
        assert 1 <= len(result.steps) <= max_steps
        if result.status == "max_steps":
            assert len(result.steps) == max_steps

    anyio.run(main)


_REPLAY = textwrap.dedent("""
    import json, anyio
    from aieng_hookspecs import hookimpl
    from aieng_hookspecs.types import ToolCall, ToolResult, ToolSpec
    from aieng_core import Kernel
    from aieng_core.agent import Agent, AgentOptions
    from aieng_core.testing import ScriptedBackend

    class Tools:
        @hookimpl
        def aieng_tools(self):
            schema = {"type": "object", "properties": {
                name: {"type": "string"} for name in ("zeta", "alpha", "mu", "beta")}}
            return [ToolSpec(name=n, description=f"tool {n}", parameters=schema)
                    for n in ("zulu", "alpha", "kilo", "bravo")]

        @hookimpl
        def aieng_call_tool(self, call):
            return ToolResult(call.id, json.dumps(call.arguments, sort_keys=True) + call.name)

    async def main():
        async with Kernel(env={}, entry_points=[]) as kernel:
            llm = ScriptedBackend(["1. use the tools", [ToolCall("a", "kilo", {"mu": "1", "alpha": "2"}),
                                    ToolCall("a", "zulu", {"zeta": "é"})],
                                   [ToolCall("b", "bravo", {"beta": "中"})], "done"])
            pipeline = kernel.compose({"llm": llm, "tools": Tools()}, name="replay")
            result = await Agent(pipeline, AgentOptions(plan=True)).run("go", run_id="r")
        data = result.to_json()
        for key in ("duration_s", "events"):
            data.pop(key)
        for step in data["steps"]:
            step.pop("duration_s"); step.pop("run_id")
        seen = [[[m.role, m.content, [[c.id, c.name, c.arguments] for c in m.tool_calls]]
                 for m in r.messages] + [[t.name, t.parameters] for t in r.tools]
                for r in llm.requests]
        print(json.dumps([data, seen], ensure_ascii=False))

    anyio.run(main)
""")


def test_a_scripted_run_is_the_same_across_hash_seeds(tmp_path: Path) -> None:
    """The same scripted run in two processes with different ``PYTHONHASHSEED``: the same
    requests (tool order, schema key order) and the same result, byte for byte."""
    script = tmp_path / "replay.py"
    script.write_text(_REPLAY, encoding="utf-8")
    runs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": seed,
                                  "OMP_NUM_THREADS": "1"})
            for seed in ("1", "2")]  # at once: each spends its time importing
    outputs = set()
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        outputs.add(out)
    assert len(outputs) == 1
    data, seen = json.loads(outputs.pop())
    assert data["status"] == "answered" and data["steps"][0]["plan"] == "1. use the tools"
    assert len(seen) == 4
    assert [t[0] for t in seen[1][-4:]] == ["zulu", "alpha", "kilo", "bravo"]


class Long:
    """One tool, ``read``: a 5,000-character page."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="read", description="a page")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        return ToolResult(call.id, "word " * 1000) if call.name == "read" else None


async def test_the_review_call_keeps_context_chars() -> None:
    """``context_chars`` bounds the review of an answer too: the run's tool results in it
    are cut to what the task, the answer and the instruction leave."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        llm = ScriptedBackend([[ToolCall("c1", "read", {})], "the page says word", "OK"])
        result = await Agent(_compose(kernel, llm=llm, tools=Long()),
                             AgentOptions(reflect=True, context_chars=3000)).run("read it")
    assert result.status == "answered" and result.steps[-1].review == "OK"
    assert [sum(len(m.content) for m in r.messages) <= 3000 for r in llm.requests] \
        == [True, True, True]
    review = llm.requests[-1].messages[-1].content
    assert "earlier results left out" in review and review.endswith("the page says word")
