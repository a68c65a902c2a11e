"""The command line on the second day: history files from elsewhere or held by another
chat, and terminals whose locale is not UTF-8 (a container's C locale)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aieng_core.cli import _chat, _commands, cli  # noqa: F401  (register the commands)
from aieng_core.testing import ScriptedBackend, kernel_with

#: A folder of one markdown file, an accented sentence and an emoji in it.
DOC = "# Café\n\nThe café sells crème brûlée 🍮 in Zürich.\n"
PIPELINE = ('[pipeline]\nname = "p"\nstages = ["retrieve", "context", "generate"]\n'
            '[components.docs]\nuse = "memory"\ndocuments = "docs"\n'
            '[components.prompt]\nuse = "prompt"\n[components.answer]\nuse = "extractive"\n')


def chat(tmp_path: Path, lines: str, *args: str, answer: str = "ok") -> Result:
    path = tmp_path / "chat.toml"
    path.write_text('[pipeline]\nname = "chat"\n[components.llm]\nuse = "scripted"\n',
                    encoding="utf-8")
    kernel = kernel_with({"scripted": lambda: ScriptedBackend([answer])})
    return CliRunner().invoke(cli, ["chat", str(path), *args], input=lines,
                              obj={"kernel": kernel})


def history_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_history_without_a_last_line_end_is_appended_on_a_line_of_its_own(
        tmp_path: Path) -> None:
    """A history file whose last line has no line end (written by hand, by an editor or
    another program) had the next turn glued to that line: the file no longer read."""
    history = tmp_path / "h.jsonl"
    history.write_text('{"role": "user", "content": "earlier"}', encoding="utf-8")
    result = chat(tmp_path, "now\n", "--history", str(history))
    assert result.exit_code == 0, result.output
    assert [m["content"] for m in history_lines(history)] == ["earlier", "now", "ok"]
    assert chat(tmp_path, "later\n", "--history", str(history)).exit_code == 0


def test_a_history_line_of_a_newer_layout_is_refused_saying_what_to_do(
        tmp_path: Path) -> None:
    """A role or a key this version does not know (a newer aieng's file) is refused with a
    message naming the file, the line and what was found, and saying what to do: no
    attrs ``Attribute(...)`` repr. The file is left as it was."""
    history = tmp_path / "h.jsonl"
    for line in ('{"role": "developer", "content": "x"}',
                 '{"role": "user", "content": "x", "time": "2030-01-01"}'):
        history.write_text(f'{{"role": "user", "content": "a"}}\n{line}\n',
                           encoding="utf-8")
        before = history.read_bytes()
        result = chat(tmp_path, "hi\n", "--history", str(history))
        assert result.exit_code == 2
        err = " ".join(result.stderr.split())
        assert "h.jsonl" in err and "line 2" in err
        assert "developer" in err or "time" in err
        assert "Attribute(" not in err
        assert "newer" in err and "another --history" in err
        assert history.read_bytes() == before


def test_a_cut_short_history_line_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    """A last line cut short (a chat killed while writing it) names the line and says to
    remove it; the file is left as it was."""
    history = tmp_path / "h.jsonl"
    history.write_text('{"role": "user", "content": "a"}\n{"role": "assistant", "con',
                       encoding="utf-8")
    before = history.read_bytes()
    result = chat(tmp_path, "hi\n", "--history", str(history))
    assert result.exit_code == 2
    err = " ".join(result.stderr.split())
    assert "line 2" in err and "remove" in err
    assert history.read_bytes() == before


def test_a_history_another_chat_holds_is_refused_at_once(tmp_path: Path) -> None:
    """Two chats on one history file interleaved their turns (and one's /reset dropped the
    other's): the second is refused before reading it, naming the file. The lock is the
    OS's (flock), so a chat killed leaves nothing behind."""
    history = tmp_path / "h.jsonl"
    history.write_text('{"role": "user", "content": "a"}\n', encoding="utf-8")
    held = os.open(history, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = chat(tmp_path, "hi\n", "--history", str(history))
    finally:
        os.close(held)
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "h.jsonl" in err and "another aieng chat" in err
    assert history_lines(history) == [{"role": "user", "content": "a"}]
    assert chat(tmp_path, "hi\n", "--history", str(history)).exit_code == 0  # released


def test_a_chat_keeps_its_history_locked_across_a_reset(tmp_path: Path) -> None:
    """/reset replaces the file whole (a new file): the chat locks the new one, so a second
    chat started after the reset is refused too (a real second process)."""
    history = tmp_path / "h.jsonl"
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n[components.llm]\nuse = "extractive"\n',
                        encoding="utf-8")
    command = [sys.executable, "-c", "from aieng_core.cli import main; main()", "chat",
               str(pipeline), "--history", str(history)]
    env = {**os.environ, "AIENG_PLUGINS": "builtin"}
    first = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    try:
        assert first.stdin is not None and first.stderr is not None
        first.stdin.write(b"one\n/reset\n")
        first.stdin.flush()
        assert first.stderr.readline().startswith(b"(the conversation is forgotten)")
        second = subprocess.run(command, input=b"two\n", capture_output=True, env=env,
                                timeout=60, check=False)
        assert second.returncode == 1
        assert b"another aieng chat" in second.stderr
    finally:
        out, _ = first.communicate(b"three\n", timeout=60)
    assert first.returncode == 0
    last_answer = out.decode().splitlines()[-1]
    assert [m["content"] for m in history_lines(history)] == ["three", last_answer]


def run_main(tmp_path: Path, env: dict[str, str], *args: str,
             stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``aieng ARGS`` in a process of its own (its locale as given), in ``tmp_path``."""
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "cafe.md").write_text(DOC, encoding="utf-8")
    (tmp_path / "p.toml").write_text(PIPELINE, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", "from aieng_core.cli import main; main()", *args],
        input=stdin, capture_output=True, cwd=tmp_path, timeout=60, check=False,
        env={**os.environ, "AIENG_PLUGINS": "builtin", **env})


ASCII_ONLY = {"PYTHONIOENCODING": "ascii"}
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_an_ascii_locale_prints_answers_as_utf8(tmp_path: Path) -> None:
    """Under PYTHONIOENCODING=ascii `aieng run` failed printing an accented answer
    (``UnicodeEncodeError``, status 1) while `--json` wrote UTF-8 (click's choice): both
    write UTF-8 now."""
    done = run_main(tmp_path, ASCII_ONLY, "run", "p.toml", "crème")
    assert done.returncode == 0, done.stderr.decode()
    assert "crème brûlée 🍮" in done.stdout.decode("utf-8")
    done = run_main(tmp_path, ASCII_ONLY, "run", "p.toml", "crème", "--json")
    assert "🍮" in json.loads(done.stdout.decode("utf-8"))["answer"]


def test_the_c_locale_reads_utf8_arguments_and_chat_lines(tmp_path: Path) -> None:
    """LC_ALL=C with Python's UTF-8 mode off hands a UTF-8 argument on as lone surrogates:
    "crème" was refused as not UTF-8. A chat line typed there, or under
    PYTHONIOENCODING=ascii, was refused (or a UnicodeDecodeError)."""
    done = run_main(tmp_path, C_LOCALE, "run", "p.toml", "crème", "--json")
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout.decode("utf-8"))
    assert data["input"]["messages"][0]["content"] == "crème"
    for env in (C_LOCALE, ASCII_ONLY):
        done = run_main(tmp_path, env, "chat", "p.toml", stdin="crème ?\n".encode())
        assert done.returncode == 0, done.stderr.decode()
        assert "brûlée 🍮" in done.stdout.decode("utf-8")
        assert b"not valid UTF-8" not in done.stderr


def test_latin1_arguments_are_still_refused() -> None:
    """An argument typed in a Latin-1 terminal (a lone surrogate that is no UTF-8 byte
    sequence) stays a usage error, and one holding UTF-8 bytes as surrogates is read."""
    runner = CliRunner()
    pipeline = "missing.toml"  # the text is checked first
    result = runner.invoke(cli, ["run", pipeline, "caf\udce9"], env={"AIENG_PLUGINS": "builtin"})
    assert result.exit_code == 2 and "not valid UTF-8" in result.stderr
    result = runner.invoke(cli, ["run", pipeline, "caf\udcc3\udca9"],
                           env={"AIENG_PLUGINS": "builtin"})
    assert "not valid UTF-8" not in result.stderr


#: A process running `aieng ARGS` as main() does, its kernel's backend answering with a
#: lone surrogate (a JSON "\ud83d" from an HTTP backend cutting an emoji in two).
SURROGATE_SCRIPT = """
import sys
from aieng_core.cli import _app, _chat, _commands, cli
from aieng_core.testing import ScriptedBackend, kernel_with

_app.text_streams()
kernel = kernel_with({"odd": lambda: ScriptedBackend(["caf\\u00e9 \\ud83d 1"])})
cli.main(sys.argv[1:], obj={"kernel": kernel}, prog_name="aieng")
"""


def test_a_lone_surrogate_in_an_answer_is_printed_as_an_escape(tmp_path: Path) -> None:
    """An answer holding a lone surrogate was a UnicodeEncodeError in `aieng run` (text
    and --json) and ended `aieng chat`; it is written as the escape ``\\ud83d``, which
    keeps --json valid JSON."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n[components.llm]\nuse = "odd"\n',
                        encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-c", SURROGATE_SCRIPT, *args], input=b"hi\n",
                              capture_output=True, timeout=60, check=False,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8"})

    done = run("run", str(pipeline), "hi")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode("utf-8").splitlines()[0] == "café \\ud83d 1"
    done = run("run", str(pipeline), "hi", "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout.decode("utf-8"))["answer"] == "café \ud83d 1"
    done = run("chat", str(pipeline))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode("utf-8") == "café \\ud83d 1\n"


def test_a_history_in_a_missing_folder_is_refused_before_any_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --history in a folder that does not exist (a quoted "~/h.jsonl") was found out
    only once the first turn was answered; it is refused at once, the '~' explained."""
    monkeypatch.chdir(tmp_path)
    result = chat(tmp_path, "hi\n", "--history", "~/h.jsonl")
    assert result.exit_code == 1 and result.stdout == ""
    err = " ".join(result.stderr.split())
    assert "cannot create the history file '~/h.jsonl'" in err and "not expanded" in err
