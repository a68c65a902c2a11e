"""``aieng chat``: one line a turn, the whole conversation sent each turn, /reset, /exit,
a history file to go on from, guard blocks, and agent turns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    GuardVerdict,
    Message,
    Request,
    ToolCall,
)
from click.testing import CliRunner, Result

from aieng_core import Kernel
from aieng_core.cli import _chat, cli
from aieng_core.cli._chat import message_from_json, message_to_json
from aieng_core.testing import ScriptedBackend, kernel_with
from aieng_core.testing.reference import AddTool


def count_turns(request: Request) -> str:
    """Answers with what it saw: the number of user turns and the last one."""
    users = [m.content for m in request.messages if m.role == "user"]
    systems = [m.content for m in request.messages if m.role == "system"]
    return f"{len(users)} turns, last {users[-1]!r}, system {systems}"


class NoSecrets:
    """An input guard double blocking any turn that says 'secret'."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        if "secret" in request.prompt:
            return GuardVerdict("block", "")
        return GuardVerdict("allow", request.prompt)




def adder_model(request: Request) -> Any:
    """Calls add(2, 3) once per user turn, then answers with the result."""
    if request.messages[-1].role == "tool":
        return f"it is {request.messages[-1].content}"
    return [ToolCall(id=f"c{len(request.messages)}", name="add", arguments={"a": 2, "b": 3})]


def _kernel() -> Kernel:
    return kernel_with({"counter": lambda: ScriptedBackend(count_turns),
                        "no-secrets": NoSecrets, "adder": AddTool,
                        "adder-model": lambda: ScriptedBackend(adder_model)})


def chat(tmp_path: Path, lines: str, *args: str, llm: str = "counter",
         extra: str = "") -> Result:
    path = tmp_path / "chat.toml"
    path.write_text(f'[pipeline]\nname = "chat"\n[components.llm]\nuse = "{llm}"\n{extra}',
                    encoding="utf-8")
    assert _chat.chat.name == "chat"  # imported: the command is registered
    return CliRunner().invoke(cli, ["chat", str(path), *args], input=lines,
                              obj={"kernel": _kernel()})


def test_each_line_is_a_turn_and_the_conversation_grows(tmp_path: Path) -> None:
    """Every turn sends the conversation so far; blank lines are skipped; end of input
    ends the chat."""
    result = chat(tmp_path, "hello\n\nhow are you?\n", "--system", "Be brief.")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "1 turns, last 'hello', system ['Be brief.']",
        "2 turns, last 'how are you?', system ['Be brief.']"]


def test_reset_forgets_and_exit_ends(tmp_path: Path) -> None:
    """/reset keeps the system prompt only; /exit ends before later lines."""
    result = chat(tmp_path, "a\nb\n/reset\nc\n/exit\nnever\n", "--system", "S")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["1 turns, last 'a', system ['S']",
                                          "2 turns, last 'b', system ['S']",
                                          "1 turns, last 'c', system ['S']"]
    assert "forgotten" in result.stderr


def test_history_is_kept_and_the_chat_goes_on_from_it(tmp_path: Path) -> None:
    """--history appends each turn as JSON Lines; a later chat goes on from the file;
    /reset empties it but for the system prompt."""
    history = tmp_path / "h.jsonl"
    chat(tmp_path, "one\ntwo\n", "--history", str(history), "--system", "S")
    lines = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines()]
    assert [(m["role"], m["content"][:3]) for m in lines] == [
        ("system", "S"), ("user", "one"), ("assistant", "1 t"), ("user", "two"),
        ("assistant", "2 t")]
    result = chat(tmp_path, "three\n", "--history", str(history), "--system", "other")
    assert result.stdout.splitlines() == ["3 turns, last 'three', system ['S']"]
    assert "--system is left out" in result.stderr
    chat(tmp_path, "/reset\n", "--history", str(history))
    assert [json.loads(line)["role"] for line in
            history.read_text(encoding="utf-8").splitlines()] == ["system"]


def test_a_broken_history_file_is_a_usage_error_naming_the_line(tmp_path: Path) -> None:
    """A history line that is not a message stops the chat before any turn."""
    history = tmp_path / "h.jsonl"
    history.write_text('{"role": "user", "content": "x"}\n{"role": "user"}\n',
                       encoding="utf-8")
    result = chat(tmp_path, "hi\n", "--history", str(history))
    assert result.exit_code == 2 and "line 2" in result.stderr


def test_a_blocked_turn_is_not_kept(tmp_path: Path) -> None:
    """A turn an input guard blocks is said on stderr and left out of the conversation."""
    guard = '[components.guard]\nuse = "no-secrets"\n'
    result = chat(tmp_path, "hi\nmy secret\nbye\n", extra=guard)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["1 turns, last 'hi', system []",
                                          "2 turns, last 'bye', system []"]
    assert "blocked" in result.stderr


def test_agent_turns_use_the_tools_and_keep_their_messages(tmp_path: Path) -> None:
    """--agent answers each turn as an agent (its steps on stderr); the tool exchange stays
    in the conversation of later turns."""
    history = tmp_path / "h.jsonl"
    result = chat(tmp_path, "2+3?\nagain?\n", "--agent", "--history", str(history),
                  llm="adder-model", extra='[components.tools]\nuse = "adder"\n')
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["it is 5", "it is 5"]
    assert "add(" in result.stderr
    roles = [json.loads(line)["role"] for line in
             history.read_text(encoding="utf-8").splitlines()]
    assert roles == ["user", "assistant", "tool", "assistant"] * 2


@pytest.mark.parametrize("message", [
    Message("user", "héllo"),
    Message("assistant", "", tool_calls=(ToolCall(id="1", name="add", arguments={"a": 1}),)),
    Message("tool", "2", tool_call_id="1", name="add"),
])
def test_history_lines_round_trip(message: Message) -> None:
    """A message survives its history line."""
    assert message_from_json(json.loads(json.dumps(message_to_json(message)))) == message
