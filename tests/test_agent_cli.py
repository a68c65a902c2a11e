"""``aieng agent``: a line per step and the answer; exit 0 answered, 1 otherwise, 2 usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Request, ToolCall, Usage
from click.testing import CliRunner, Result

from aieng_core import Kernel
from aieng_core.cli import _agent, cli
from aieng_core.cli._agent import short
from aieng_core.testing import kernel_with
from aieng_core.testing.reference import AddTool


class Solver:
    """Calls add(40, 2) and an unknown tool until it sees a result, then answers it."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        results = [m.content for m in request.messages if m.role == "tool"]
        if results:
            return Completion(text=f"The answer is {results[0]}.", usage=Usage(4, 4))
        calls = (ToolCall(id="1", name="add", arguments={"a": 40, "b": 2}),
                 ToolCall(id="2", name="nope"))
        return Completion(text="", finish_reason="tool_calls", tool_calls=calls,
                          usage=Usage(4, 1))


class Looper:
    """Calls add with new arguments forever."""

    def __init__(self) -> None:
        self.n = 0

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.n += 1
        call = ToolCall(id="1", name="add", arguments={"a": self.n, "b": 0})
        return Completion(text="", finish_reason="tool_calls", tool_calls=(call,))


class SystemEcho:
    """Answers with the system messages it was given."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        return Completion(text="|".join(m.content for m in request.messages
                                        if m.role == "system") or "(none)")


PIPELINE = """
[pipeline]
name = "agent-cli"

[components.llm]
use = "{llm}"

[components.tools]
use = "adder"
"""


def _kernel() -> Kernel:
    return kernel_with({"adder": AddTool, "solver": Solver, "looper": Looper,
                        "system-echo": SystemEcho})


def invoke(tmp_path: Path, llm: str, *args: str) -> Result:
    path = tmp_path / "agent.toml"
    path.write_text(PIPELINE.format(llm=llm), encoding="utf-8")
    assert _agent.agent.name == "agent"
    return CliRunner().invoke(cli, ["agent", str(path), *args], obj={"kernel": _kernel()})


def test_prints_a_line_per_step_and_the_answer(tmp_path: Path) -> None:
    """Each step's tool calls appear with their results (an unknown tool as an error), then
    the answer; exit 0."""
    result = invoke(tmp_path, "solver", "What is 40 + 2?")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == 'step 1 [model] add({"a": 40, "b": 2}) -> 42'
    assert lines[1].strip().startswith("nope({}) -> error: unknown tool 'nope'")
    assert lines[2] == "step 2 [model] answer"
    assert lines[-1] == "The answer is 42."


def test_json_prints_the_whole_result(tmp_path: Path) -> None:
    """--json prints the AgentResult: status, answer, steps, totals and events."""
    result = invoke(tmp_path, "solver", "What is 40 + 2?", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "answered" and data["answer"] == "The answer is 42."
    assert len(data["steps"]) == 2 and data["tokens"] == 13
    assert data["steps"][0]["results"][0] == {"call_id": "1", "content": "42",
                                              "is_error": False}
    assert [e["name"] for e in data["events"]][-1] == "agent.finished"


def test_no_answer_exits_1_saying_why(tmp_path: Path) -> None:
    """A run that ends without an answer exits 1 with its status and reason on stderr."""
    result = invoke(tmp_path, "looper", "count", "--max-steps", "2")
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2
    assert "max_steps" in result.stderr and "2 steps" in result.stderr


@pytest.mark.parametrize("args", [["--max-steps", "0"], [""], ["   "], []],
                         ids=["zero-steps", "empty-task", "blank-task", "no-task"])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    """A bad option or a missing or empty task is a usage error."""
    result = invoke(tmp_path, "solver", *args)
    assert result.exit_code == 2, result.output


def test_an_unknown_component_exits_2(tmp_path: Path) -> None:
    """An invalid pipeline file exits 2 naming the key."""
    result = invoke(tmp_path, "no-such-llm", "x")
    assert result.exit_code == 2 and "components.llm" in result.stderr


def test_short_keeps_one_line() -> None:
    """Results are shown on one line, cut with an ellipsis."""
    assert short("a\n b\t c") == "a b c"
    assert short("x" * 100, 10) == "x" * 9 + "…"


def test_system_and_max_tokens_reach_the_run(tmp_path: Path) -> None:
    """--system puts a system prompt first; --max-tokens stops a run past its budget."""
    result = invoke(tmp_path, "system-echo", "hi", "--system", "Use the tools.")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "Use the tools."
    result = invoke(tmp_path, "solver", "What is 40 + 2?", "--max-tokens", "3")
    assert result.exit_code == 1 and "budget" in result.stderr


def test_standard_input_that_is_not_utf8_names_task(tmp_path: Path) -> None:
    """``-`` reads the task from standard input; bytes that are not UTF-8 are a usage error
    naming TASK (not another command's argument)."""
    path = tmp_path / "agent.toml"
    path.write_text(PIPELINE.format(llm="solver"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["agent", str(path), "-"], input=b"\xff\xfe",
                                obj={"kernel": _kernel()})
    assert result.exit_code == 2 and "TASK" in result.stderr and "UTF-8" in result.stderr


def test_a_summary_line_ends_the_run_on_stderr(tmp_path: Path) -> None:
    """`aieng agent` showed the steps and the answer but never the run's totals (as `aieng
    ask` shows its timings): one line on stderr now says the status, the steps, the tool
    calls run and how many failed, the tokens and the seconds; stdout is as it was."""
    result = invoke(tmp_path, "solver", "What is 40 + 2?")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "The answer is 42."
    summary = result.stderr.strip()
    assert summary.startswith("answered: 2 steps, 2 tool calls (1 failed), 13 tokens "
                              "(8 prompt, 5 completion), "), summary
    assert summary.endswith(" s") and "\n" not in summary and "cost" not in summary


def test_a_run_without_an_answer_has_its_summary_before_why(tmp_path: Path) -> None:
    """A run that ends without an answer has its summary line too, then the reason."""
    result = invoke(tmp_path, "looper", "count", "--max-steps", "2")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("max_steps: 2 steps, 2 tool calls, 0 tokens"), lines
    assert lines[1].startswith("aieng: the agent did not answer: max_steps")


def test_json_holds_the_summary_and_stderr_stays_empty(tmp_path: Path) -> None:
    """--json prints no summary line: the document holds its numbers."""
    result = invoke(tmp_path, "solver", "What is 40 + 2?", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    assert (data["status"], len(data["steps"]), data["tokens"]) == ("answered", 2, 13)
    assert data["usage"] == {"prompt_tokens": 8, "completion_tokens": 5}
    assert data["cost"] == 0.0 and "duration_s" in data
