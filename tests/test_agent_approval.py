"""Tool calls approved or declined before they run (``Agent.run(approve=...)``, ``aieng
agent --confirm``): a declined call is an error result the model sees, never a tool run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import ToolCall, ToolResult, ToolSpec, Usage
from click.testing import CliRunner

from aieng_core import Kernel
from aieng_core.agent import Agent
from aieng_core.testing import ScriptedBackend

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}},
          "required": ["path"]}


class Files:
    """A ``delete`` tool double that records what it deleted."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="delete", parameters=SCHEMA)]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "delete":
            return None
        self.deleted.append(call.arguments["path"])
        return ToolResult(call.id, "deleted")


def delete(path: Any, cid: str = "d1") -> list[ToolCall]:
    return [ToolCall(id=cid, name="delete", arguments={"path": path})]


async def run(approve: Any, *replies: Any) -> tuple[Any, Files, ScriptedBackend]:
    files = Files()
    model = ScriptedBackend(list(replies), usage=Usage(1, 1))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": model, "tools": files}, name="ok?", timeout=5.0)
        result = await Agent(pipeline).run("clean up", approve=approve)
    return result, files, model


@pytest.mark.anyio
@pytest.mark.parametrize("verdict", [False, "not that folder", 1, None],
                         ids=["false", "reason", "truthy-not-true", "none"])
async def test_a_declined_call_is_an_error_result_and_never_runs(verdict: Any) -> None:
    """Anything but ``True`` declines; a reason reaches the model with the error."""
    asked: list[ToolCall] = []

    def approve(call: ToolCall) -> Any:
        asked.append(call)
        return verdict

    result, files, model = await run(approve, delete("/home"), "I did not delete it.")
    assert files.deleted == [] and [c.arguments for c in asked] == [{"path": "/home"}]
    [declined] = result.steps[0].results
    assert declined.is_error and declined.call_id == "d1"
    assert declined.content.startswith("error: the user declined this call of 'delete'")
    assert declined.content.endswith(": not that folder") == (verdict == "not that folder")
    tool_message = next(m for m in model.requests[1].messages if m.role == "tool")
    assert tool_message.content == declined.content
    assert result.answered


@pytest.mark.anyio
async def test_approved_calls_run_and_async_approvals_are_awaited() -> None:
    """``True`` (here from a coroutine) runs the call."""
    async def approve(call: ToolCall) -> bool:
        return call.arguments["path"].startswith("/tmp/")

    result, files, _ = await run(approve, delete("/tmp/x"), delete("/etc", "d2"), "done")
    assert files.deleted == ["/tmp/x"]
    assert [r.is_error for s in result.steps for r in s.results] == [False, True]


@pytest.mark.anyio
async def test_invalid_or_unknown_calls_are_not_put_to_the_user() -> None:
    """Calls whose arguments fail the schema, or that name no tool, are answered with
    their error without asking."""
    asked: list[ToolCall] = []
    unknown = [ToolCall(id="u", name="format_disk")]
    result, files, _ = await run(lambda c: asked.append(c) or True, delete(7), unknown,
                                 "gave up")
    assert asked == [] and files.deleted == []
    assert "invalid arguments" in result.steps[0].results[0].content
    assert "unknown tool" in result.steps[1].results[0].content


def test_the_cli_asks_before_each_call(tmp_path: Path) -> None:
    """``--confirm`` asks on stderr and reads y/N from standard input (the default is no);
    with the task read from standard input it is a usage error."""
    from aieng_core.cli import _agent, cli
    from aieng_core.testing import kernel_with

    files = Files()

    def kernel() -> Kernel:
        return kernel_with({"files": lambda: files, "deleter": lambda: ScriptedBackend(
            [delete("/a"), delete("/b", "d2"), delete("/c", "d3"), "done"])})

    path = tmp_path / "agent.toml"
    path.write_text('[pipeline]\nname = "c"\n[components.llm]\nuse = "deleter"\n'
                    '[components.tools]\nuse = "files"\n', encoding="utf-8")
    assert _agent.agent.name == "agent"  # imported: the command is registered
    result = CliRunner().invoke(cli, ["agent", str(path), "clean", "--confirm"],
                                input="y\nn\n\n", obj={"kernel": kernel()})
    assert result.exit_code == 0, result.output
    assert files.deleted == ["/a"]
    assert 'run delete({"path": "/a"})? [y/N]' in result.stderr
    assert "declined" in result.stdout
    result = CliRunner().invoke(cli, ["agent", str(path), "-", "--confirm"], input="clean",
                                obj={"kernel": kernel()})
    assert result.exit_code == 2 and "--confirm" in result.stderr


@pytest.mark.anyio
async def test_a_given_run_id_names_the_run_and_its_events() -> None:
    """``run_id=`` replaces the generated ``agent-…`` id, in the result and its events."""
    files = Files()
    model = ScriptedBackend(["done"], usage=Usage(1, 1))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": model, "tools": files}, name="ids", timeout=5.0)
        result = await Agent(pipeline).run("hi", run_id="chatcmpl-7")
    assert result.run_id == "chatcmpl-7"
    assert {e.run_id for e in result.events} == {"chatcmpl-7"}
