"""Re-planning (``AgentOptions.replan``): after a step with a failed tool call, or before
every step, the model revises its plan, seeing the conversation so far; the revision
replaces the plan in the system text. On a real kernel with named test doubles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    GuardVerdict,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from click.testing import CliRunner

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentDelta, AgentOptions, AgentResult
from aieng_core.agent._reflect import PLAN_HEADER, PLAN_PROMPT, REPLAN_PROMPT
from aieng_core.cli import _agent, cli
from aieng_core.testing import ScriptedBackend, kernel_with
from aieng_core.testing.reference import AddTool

pytestmark = pytest.mark.anyio

FIRST, REVISED = "1. divide 84 by 2", "1. add 40 and 2 instead"


class Divider:
    """A tool double whose ``divide`` always fails."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="divide", description="Divide a by b.")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "divide":
            return None
        raise ZeroDivisionError("the divider is broken")


def kind(request: Request) -> str:
    system = request.messages[0].content if request.messages[0].role == "system" else ""
    if PLAN_PROMPT in system:
        return "plan"
    if request.messages[-1].role == "user" and REPLAN_PROMPT in request.messages[-1].content:
        return "replan"
    return "decide"


def model(request: Request) -> Any:
    """Plans to divide, calls divide; once the plan says add, calls add; then answers."""
    asked = kind(request)
    if asked == "plan":
        return FIRST
    if asked == "replan":
        return REVISED
    tools = [m for m in request.messages if m.role == "tool"]
    if not tools:
        return [ToolCall(id="c1", name="divide", arguments={"a": 84, "b": 2})]
    if REVISED in request.messages[0].content and not tools[-1].content.isdigit():
        return [ToolCall(id="c2", name="add", arguments={"a": 40, "b": 2})]
    return f"It is {tools[-1].content}."


async def run(options: AgentOptions, **extra: object
              ) -> tuple[AgentResult, ScriptedBackend, list[AgentDelta]]:
    llm = ScriptedBackend(model, usage=Usage(10, 5))
    pieces: list[AgentDelta] = []
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": llm, "div": Divider(), "add": AddTool(), **extra},
                                  name="replan", timeout=5.0)
        result = await Agent(pipeline, options).run("What is 84 / 2?",
                                                    on_delta=pieces.append)
    return result, llm, pieces


async def test_a_failed_call_brings_a_revised_plan_that_replaces_the_old() -> None:
    """on_error: step 1's divide fails; before step 2 the model sees the failure named and
    revises the plan (no tools offered); the decisions after it see only the new plan."""
    result, llm, pieces = await run(AgentOptions(plan=True, replan="on_error"))
    assert result.answered and result.answer == "It is 42."
    assert result.plans == (FIRST, REVISED) and result.plan == FIRST
    assert [s.plan for s in result.steps] == [FIRST, REVISED, ""]
    replans = [r for r in llm.requests if kind(r) == "replan"]
    assert len(replans) == 1 and replans[0].tools == ()
    asked = replans[0].messages[-1].content
    assert asked.startswith("These tool calls of the last step failed:\n- divide:")
    assert "the divider is broken" in asked and asked.endswith(REPLAN_PROMPT)
    assert "- divide: Divide a by b." in replans[0].messages[0].content  # the tool list
    later = [r for r in llm.requests if kind(r) == "decide"][1:]
    for request in later:
        assert f"{PLAN_HEADER}\n{REVISED}" in request.messages[0].content
        assert FIRST not in request.messages[0].content
    assert result.messages[0].content == f"{PLAN_HEADER}\n{REVISED}"
    assert result.steps[1].usage == Usage(20, 10)  # the revision counts in its step
    assert [(p.step, p.text) for p in pieces if p.purpose == "plan" and p.text] == \
        [(1, FIRST.split(" ")[0])] + [(1, f" {w}") for w in FIRST.split(" ")[1:]] + \
        [(2, REVISED.split(" ")[0])] + [(2, f" {w}") for w in REVISED.split(" ")[1:]]


async def test_without_a_failure_on_error_keeps_the_plan() -> None:
    """on_error: steps whose calls all worked bring no revision."""
    def adds(request: Request) -> Any:
        if kind(request) == "plan":
            return FIRST
        if not any(m.role == "tool" for m in request.messages):
            return [ToolCall(id="c1", name="add", arguments={"a": 40, "b": 2})]
        return "42"

    llm = ScriptedBackend(adds)
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": llm, "add": AddTool()}, name="r")
        result = await Agent(pipeline, AgentOptions(plan=True, replan="on_error")).run("?")
    assert result.plans == (FIRST,) and all(kind(r) != "replan" for r in llm.requests)


async def test_every_step_revises_up_to_max_replans() -> None:
    """every_step: a revision before each step after the first, at most max_replans."""
    result, llm, _ = await run(AgentOptions(plan=True, replan="every_step", max_replans=1))
    assert [kind(r) for r in llm.requests].count("replan") == 1
    assert result.plans == (FIRST, REVISED)
    result, llm, _ = await run(AgentOptions(plan=True, replan="every_step", max_replans=5))
    assert [kind(r) for r in llm.requests].count("replan") == len(result.steps) - 1 == 2


class NoReplanning:
    """An input guard double blocking the revising call."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        if REPLAN_PROMPT in request.messages[-1].content:
            return GuardVerdict("block", "")
        return GuardVerdict("allow", request.prompt)


async def test_a_blocked_revision_ends_the_run_blocked() -> None:
    result, _, _ = await run(AgentOptions(plan=True, replan="on_error"),
                             guard=NoReplanning())
    assert result.status == "blocked" and "planning call" in result.reason
    assert len(result.steps) == 2 and result.steps[1].action.kind == "stop"


def test_replan_needs_a_plan() -> None:
    with pytest.raises(ValueError, match="set plan=True"):
        AgentOptions(replan="on_error")
    with pytest.raises(ValueError):
        AgentOptions(plan=True, replan="sometimes")  # type: ignore[arg-type]


def _kernel() -> Kernel:
    return kernel_with({"replanner": lambda: ScriptedBackend(model), "divider": Divider,
                        "adder": AddTool})


def test_cli_replan_prints_the_revised_plan(tmp_path: Path) -> None:
    """``aieng agent --plan --replan on_error``: the revised plan is printed before the
    step it came before; --replan without --plan is a usage error."""
    path = tmp_path / "agent.toml"
    path.write_text('[pipeline]\nname = "r"\n[components.llm]\nuse = "replanner"\n'
                    '[components.div]\nuse = "divider"\n[components.add]\nuse = "adder"\n',
                    encoding="utf-8")
    assert _agent.agent.name == "agent"
    result = CliRunner().invoke(cli, ["agent", str(path), "84 / 2?", "--plan", "--replan",
                                      "on_error"], obj={"kernel": _kernel()})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["plan:", f"  {FIRST}"]
    at = lines.index("revised plan:")
    assert lines[at + 1] == f"  {REVISED}" and lines[at + 2].startswith("step 2 [model] add(")
    assert lines[-1] == "It is 42."
    refused = CliRunner().invoke(cli, ["agent", str(path), "84 / 2?", "--replan", "on_error"],
                                 obj={"kernel": _kernel()})
    assert refused.exit_code == 2 and "give --plan too" in refused.stderr
