"""Agent metrics: runs by status, steps per run, tool calls and errors by tool, tokens and
cost, from the ``agent.step`` and ``agent.finished`` events of the agent runner."""

from __future__ import annotations

from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentFinished,
    AgentStepped,
    ErrorEvent,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from aieng_monitoring import Monitor, MonitorOptions
from aieng_monitoring._monitor import OTHER, UNATTRIBUTED
from prometheus_client.parser import text_string_to_metric_families

from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import ScriptedBackend, isolated_kernel

pytestmark = pytest.mark.anyio

NO_USAGE = Usage()


class Tools:
    """A tool double: ``add`` answers, ``boom`` raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name=name, description=f"{name} tool",
                         parameters={"type": "object"}) for name in ("add", "boom")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name not in ("add", "boom"):
            return None
        self.calls.append(call.name)
        if call.name == "boom":
            raise RuntimeError("the tool broke")
        return ToolResult(call.id, f"result {call.arguments['n']}")


def _call(name: str, n: int) -> ToolCall:
    return ToolCall(id=f"c{n}", name=name, arguments={"n": n})


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_agent_runs_are_counted_through_a_real_kernel() -> None:
    """Two agent runs over a ScriptedBackend with a fixed usage: the scrape shows the runs
    by status, the steps per run, the tool calls and errors by tool (a step mixing tools
    with one error counts it as unattributed), and the agents' tokens and cost."""
    replies: list[Any] = [[_call("add", 1), _call("add", 2)],       # both answer
                          [_call("add", 3), _call("boom", 4)],      # one error, mixed
                          [_call("boom", 5)],                       # one error, one tool
                          [_call("nope", 6)],                       # unknown tool: error
                          "The answer is 42."]
    options = AgentOptions(max_steps=8, input_price_per_1k=1.0, output_price_per_1k=2.0)
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        monitor = Monitor(MonitorOptions(log_runs=False))
        tools = Tools()
        backend = ScriptedBackend(replies, usage=Usage(10, 5))
        pipe = kernel.compose({"llm": backend, "tools": tools, "monitor": monitor},
                              name="agentic")
        first = await Agent(pipe, options).run("What is 40 + 2?")
        looping = ScriptedBackend([[_call("add", 7)]], usage=Usage(1, 1))
        other = kernel.compose({"llm": looping, "tools": Tools(), "monitor": monitor},
                               name="looping")
        second = await Agent(other, AgentOptions(max_steps=2)).run("Add forever")
    assert (first.status, len(first.steps)) == ("answered", 5)
    assert (second.status, len(second.steps)) == ("max_steps", 2)
    samples = _samples(monitor.prometheus_text())
    runs = samples["aieng_agent_runs_total"]
    assert runs == {(("pipeline", "agentic"), ("status", "answered")): 1.0,
                    (("pipeline", "looping"), ("status", "max_steps")): 1.0}
    steps = samples["aieng_agent_steps_count"]
    assert steps == {(("pipeline", "agentic"),): 1.0, (("pipeline", "looping"),): 1.0}
    assert samples["aieng_agent_steps_sum"][(("pipeline", "agentic"),)] == 5.0
    buckets = samples["aieng_agent_steps_bucket"]
    assert buckets[(("le", "4.0"), ("pipeline", "agentic"))] == 0.0
    assert buckets[(("le", "5.0"), ("pipeline", "agentic"))] == 1.0
    assert buckets[(("le", "2.0"), ("pipeline", "looping"))] == 1.0
    calls = samples["aieng_agent_tool_calls_total"]
    assert calls == {(("pipeline", "agentic"), ("tool", "add")): 3.0,
                     (("pipeline", "agentic"), ("tool", "boom")): 2.0,
                     (("pipeline", "agentic"), ("tool", "nope")): 1.0,
                     (("pipeline", "looping"), ("tool", "add")): 2.0}
    errors = samples["aieng_agent_tool_errors_total"]
    assert errors == {(("pipeline", "agentic"), ("tool", UNATTRIBUTED)): 1.0,
                      (("pipeline", "agentic"), ("tool", "boom")): 1.0,
                      (("pipeline", "agentic"), ("tool", "nope")): 1.0}
    assert sum(errors.values()) == sum(sum(r.is_error for r in s.results) for s in first.steps)
    tokens = samples["aieng_agent_tokens_total"]
    assert tokens[(("direction", "input"), ("pipeline", "agentic"))] == 50.0
    assert tokens[(("direction", "output"), ("pipeline", "agentic"))] == 25.0
    assert tokens[(("direction", "input"), ("pipeline", "looping"))] == 2.0
    cost = samples["aieng_agent_cost_total"]
    assert cost[(("pipeline", "agentic"),)] == pytest.approx(first.cost)
    assert first.cost == pytest.approx((50 * 1.0 + 25 * 2.0) / 1000)
    assert cost[(("pipeline", "looping"),)] == 0.0
    assert samples["aieng_agent_run_duration_seconds_count"][(("pipeline", "agentic"),)] == 1
    # The agent's model calls are pipeline runs: counted by the pipeline metrics as well.
    assert samples["aieng_runs_total"][(("pipeline", "agentic"), ("status", "ok"))] == 5.0
    assert monitor.snapshot()["agent_runs"] == {"pipeline=agentic,status=answered": 1,
                                                "pipeline=looping,status=max_steps": 1}


def _step(run: str, step: int, *, tools: tuple[str, ...] = (), errors: int = 0,
          usage: Usage = NO_USAGE, cost: float = 0.0) -> AgentStepped:
    return AgentStepped(run_id=run, pipeline="p", step=step, source="model",
                        kind="tool_calls" if tools else "answer", tools=tools, errors=errors,
                        usage=usage, cost=cost, duration_s=0.1)


def _finished(run: str, status: str, steps: int, usage: Usage = NO_USAGE,
              cost: float = 0.0) -> AgentFinished:
    return AgentFinished(run_id=run, pipeline="p", status=status, steps=steps, usage=usage,
                         cost=cost, duration_s=1.0)


def test_tokens_of_a_step_cut_short_are_counted_when_the_run_ends() -> None:
    """A run cancelled (or timed out) during a step's tool calls used that step's tokens
    but published no agent.step: agent.finished's totals bring the difference, so the
    counters end equal to the run's usage and cost, never counted twice."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(_step("a", 1, tools=("add",), usage=Usage(10, 2), cost=0.5))
    assert monitor.snapshot()["agent_tokens"] == {"pipeline=p,direction=input": 10,
                                                  "pipeline=p,direction=output": 2}
    monitor.aieng_on_event(_finished("a", "cancelled", 1, Usage(25, 4), cost=1.25))
    monitor.aieng_on_event(_step("b", 1, usage=Usage(3, 3), cost=0.25))
    monitor.aieng_on_event(_finished("b", "answered", 1, Usage(3, 3), cost=0.25))
    snap = monitor.snapshot()
    assert snap["agent_tokens"] == {"pipeline=p,direction=input": 28,
                                    "pipeline=p,direction=output": 7}
    assert snap["agent_cost"]["pipeline=p"] == pytest.approx(1.5)
    assert snap["agent_runs"] == {"pipeline=p,status=cancelled": 1,
                                  "pipeline=p,status=answered": 1}
    assert not monitor._open_agents


def test_an_agent_run_leaves_no_open_tally() -> None:
    """Error events of tools carry the agent run's id, which never gets a run.finished:
    the run's tally is dropped at agent.finished instead of staying until 10,000 others
    push it out (and push out unfinished pipeline runs' tallies with it)."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    for i in range(50):
        run = f"agent-{i}"
        monitor.aieng_on_event(ErrorEvent(run_id=run, pipeline="p", stage="tool",
                                          hook="aieng_call_tool", plugin="tools",
                                          error_type="RuntimeError", message="broke",
                                          policy="skip"))
        monitor.aieng_on_event(_step(run, 1, tools=("boom",), errors=1))
        monitor.aieng_on_event(_finished(run, "stalled", 1))
    assert monitor._open == {} and monitor._open_agents == {}
    snap = monitor.snapshot()
    assert snap["agent_tool_errors"] == {"pipeline=p,tool=boom": 50}
    assert snap["errors"] == {"pipeline=p,stage=tool,plugin=tools,policy=skip": 50}


def test_tool_names_chosen_by_a_model_are_bounded() -> None:
    """A model may call tools that do not exist, with any name: past max_label_values
    distinct names, later ones count as ``other``; the totals stay right."""
    monitor = Monitor(MonitorOptions(log_runs=False, max_label_values=3))
    for i in range(10):
        monitor.aieng_on_event(_step("a", i + 1, tools=(f"t{i}", f"t{i}"), errors=2))
    snap = monitor.snapshot()
    assert snap["agent_tool_calls"] == {"pipeline=p,tool=t0": 2, "pipeline=p,tool=t1": 2,
                                        "pipeline=p,tool=t2": 2,
                                        f"pipeline=p,tool={OTHER}": 14}
    assert sum(snap["agent_tool_errors"].values()) == 20


def test_step_buckets_are_an_option() -> None:
    """``step_buckets`` shape the steps histogram; they are checked like the others."""
    monitor = Monitor(MonitorOptions(log_runs=False, step_buckets=[2, 50]))
    for steps in (0, 2, 3, 60):
        monitor.aieng_on_event(_finished("x", "max_steps", steps))
    series = monitor._agent_steps[(("pipeline", "p"),)]
    assert series.counts == [2, 1, 1]
    with pytest.raises(ValueError, match="step_buckets must hold finite positive step"):
        MonitorOptions(step_buckets=[0])
