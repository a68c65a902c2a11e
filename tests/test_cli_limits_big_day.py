"""The big day for the CLI's conversation limits: ``aieng chat --context-chars`` on a
history of thousands of turns sends at most that many characters, a turn that cannot fit
is refused and the chat goes on, and a text read from standard input is capped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aieng_hookspecs.types import Request
from click.testing import CliRunner, Result

from aieng_core.agent._messages import size
from aieng_core.cli import _agent, _app, _chat, _commands, cli  # noqa: F401  (the commands)
from aieng_core.testing import ScriptedBackend, kernel_with

NOTE = re.compile(r"\[left out to fit the context: (\d+) earlier messages, (\d+) characters\]")


def _invoke(tmp_path: Path, args: list[str], stdin: str | bytes,
            model: ScriptedBackend | None = None) -> Result:
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname = "p"\n[components.llm]\nuse = "model"\n',
                    encoding="utf-8")
    backend = model if model is not None else ScriptedBackend(lambda r: "ok")
    kernel = kernel_with({"model": lambda: backend})
    return CliRunner().invoke(cli, [args[0], str(path), *args[1:]], input=stdin,
                              obj={"kernel": kernel})


def _history(path: Path, turns: int) -> None:
    lines = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "x" * 200}
        for i in range(turns)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_a_chat_of_thousands_of_turns_sends_at_most_context_chars(tmp_path: Path) -> None:
    """A history of 4,000 turns (800,000 characters) and --context-chars 5000: the model
    gets at most 5,000 characters, the new turn and the latest ones whole, and a note of
    what was left out; the history file keeps every turn."""
    history = tmp_path / "h.jsonl"
    _history(history, 4000)
    seen: list[Request] = []

    def answer(request: Request) -> str:
        seen.append(request)
        return "fine"

    result = _invoke(tmp_path, ["chat", "--history", str(history), "--context-chars",
                                "5000"], "and now?\n", ScriptedBackend(answer))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "fine"
    (request,) = seen
    sent = request.messages
    assert sum(map(size, sent)) <= 5000
    assert sent[0].content.startswith("be brief\n\n") and NOTE.search(sent[0].content)
    assert sent[-1].content == "and now?" and sent[-2].content.startswith("3999 ")
    assert sent[1].content.startswith("0 ")  # the first user turn stays
    assert len(history.read_text(encoding="utf-8").splitlines()) == 1 + 4000 + 2


def test_a_turn_longer_than_context_chars_is_refused_and_the_chat_goes_on(
        tmp_path: Path) -> None:
    """A 9,000-character line under --context-chars 8000 is not sent (an error naming the
    limit and the sizes), nor kept; the next line is answered."""
    history = tmp_path / "h.jsonl"
    result = _invoke(tmp_path, ["chat", "--history", str(history), "--context-chars",
                                "8000"], "y" * 9000 + "\nshort\n")
    assert result.exit_code == 0, result.output
    assert "this turn was not sent" in result.stderr
    assert "context limit of 8000 characters" in result.stderr and "9000" in result.stderr
    assert result.stdout.strip() == "ok"
    kept = [json.loads(line)["content"] for line in history.read_text().splitlines()]
    assert kept == ["short", "ok"]


def test_an_agent_task_longer_than_context_chars_exits_with_the_limit(
        tmp_path: Path) -> None:
    """``aieng agent --context-chars 100`` on a 500-character task: exit 1 and an error
    naming the limit, no traceback."""
    result = _invoke(tmp_path, ["agent", "t" * 500, "--context-chars", "100"], "")
    assert result.exit_code == 1
    assert "ContextLimitError" in result.stderr and "context limit of 100" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["run", "agent"])
def test_standard_input_past_the_cap_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """``aieng run P -`` and ``aieng agent P -``: a text of the cap is read; one byte more
    is a usage error naming the cap."""
    monkeypatch.setattr(_app, "MAX_STDIN_BYTES", 1000)
    result = _invoke(tmp_path, [command, "-"], b"a" * 1000)
    assert result.exit_code == 0, result.output
    result = _invoke(tmp_path, [command, "-"], b"a" * 1001)
    assert result.exit_code == 2
    assert "longer than 1,000 bytes" in result.stderr and "MAX_STDIN_BYTES" in result.stderr


def test_reading_dev_zero_stops_past_the_cap(tmp_path: Path) -> None:
    """``aieng run P - < /dev/zero`` (the cap lowered to 1 MiB in the child): it ends with
    the error, having read one byte past the cap and no more, in a real process."""
    code = ("import sys; from aieng_core.cli import _app; _app.MAX_STDIN_BYTES = 2**20\n"
            "read = 0\nreal = sys.stdin.buffer.read\n"
            "def counted(n=-1):\n    global read\n    data = real(n)\n"
            "    read += len(data)\n    return data\n"
            "sys.stdin.buffer.read = counted\n"
            "import click\n"
            "try:\n    _app.read_stdin()\nexcept click.BadParameter as exc:\n"
            "    print(read, exc.format_message())\n")
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run([sys.executable, "-c", code], stdin=zero, capture_output=True,
                              text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{2**20 + 1} ") and "1,048,576 bytes" in done.stdout
