"""``aieng`` on untrusted text and real secrets: a model's answer, a tool's result or a
file's name cannot drive the terminal or forge a log line, credentials are not logged, and
a chat history (the conversation) is not readable by other users."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Request, ToolCall, ToolResult, ToolSpec
from click.testing import CliRunner, Result

from aieng_core.cli import _agent, _chat, _commands, _rag, cli  # noqa: F401  (the commands)
from aieng_core.logs import configure_logging
from aieng_core.testing import ScriptedBackend, kernel_with

#: What a prompt-injected answer, a web page or a file name may hold: clear the screen,
#: write the clipboard (OSC 52), ring the bell, an 8-bit CSI, a carriage return.
EVIL = "a\x1b[2Jb\x1b]52;c;ZXZpbA==\x07c\x9b31md\re"


def no_controls(text: str) -> bool:
    """Whether ``text`` holds no control character but tab and line feed."""
    return not any(ord(c) < 32 and c not in "\t\n" or 0x7F <= ord(c) <= 0x9F for c in text)


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    yield
    configure_logging(default=True)  # as the kernel leaves it for the next test


def invoke(tmp_path: Path, *args: str, answer: str = EVIL, input: str | None = None
           ) -> Result:
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\n[components.llm]\nuse = "llm"\n',
                        encoding="utf-8")
    kernel = kernel_with({"llm": lambda: ScriptedBackend(lambda request: answer)})
    return CliRunner().invoke(cli, [args[0], str(pipeline), *args[1:]], input=input,
                              obj={"kernel": kernel})


@pytest.mark.parametrize("args", [("run", "hi", "--no-stream"), ("run", "hi", "--stream"),
                                  ("run", "hi", "--no-stream", "--explain"),
                                  ("agent", "hi"), ("agent", "hi", "--stream")])
def test_an_answer_cannot_drive_the_terminal(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A model's answer (steered by a retrieved web page) was written to the terminal as it
    was: ``ESC [2J`` cleared the screen and OSC 52 set the clipboard. Its control
    characters are shown as escapes; ``--json`` keeps the text (JSON escapes them)."""
    result = invoke(tmp_path, *args)
    assert result.exit_code == 0, result.output
    assert no_controls(result.output), repr(result.output)
    assert "a\\x1b[2Jb" in result.output


def test_json_keeps_the_answer_as_it_is(tmp_path: Path) -> None:
    result = invoke(tmp_path, "run", "hi", "--json")
    assert json.loads(result.output)["answer"] == EVIL


def test_a_chat_answer_cannot_drive_the_terminal(tmp_path: Path) -> None:
    result = invoke(tmp_path, "chat", input="hi\n")
    assert result.exit_code == 0, result.output
    assert no_controls(result.output), repr(result.output)


class EvilTool:
    """A tool whose result (a fetched web page) holds escape sequences."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec("fetch", "Fetch a page.", {"type": "object", "properties": {}})]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "fetch":
            return None
        return ToolResult(call.id, EVIL)


def test_an_agent_steps_tool_result_cannot_drive_the_terminal(tmp_path: Path) -> None:
    def model(request: Request) -> object:
        if request.messages[-1].role == "tool":
            return "done"
        return [ToolCall(id="c1", name="fetch", arguments={"url": "\x1b[2J"})]

    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\n[components.llm]\nuse = "llm"\n'
                        '[components.web]\nuse = "web"\n', encoding="utf-8")
    kernel = kernel_with({"llm": lambda: ScriptedBackend(model), "web": EvilTool})
    result = CliRunner().invoke(cli, ["agent", str(pipeline), "go"], obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    assert "fetch(" in result.output
    assert no_controls(result.output), repr(result.output)


def test_a_file_name_cannot_drive_the_terminal(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``aieng: cannot read FILE`` wrote a file name (from a cloned repository, an
    unpacked archive) as it was: a name with ``ESC [2J`` cleared the screen."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text('[pipeline]\nname = "t"\nstages = ["retrieve"]\n'
                                     '[components.lex]\nuse = "bm25"\npath = "idx"\n')
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("fine\n")
    evil = docs / "x\x1b[2J\x07.txt"
    evil.write_text("text\n")
    read_text = Path.read_text

    def read(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == evil.name:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read)
    result = CliRunner().invoke(cli, ["index", "p.toml", "docs"],
                                env={"AIENG_PLUGINS": "builtin,bm25"})
    assert result.exit_code == 1, result.output
    assert "cannot read docs/x\\x1b[2J\\x07.txt" in result.output
    assert no_controls(result.output), repr(result.output)


def test_an_error_message_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """``aieng: error: ...`` quoting a model's output or a name."""
    def model(request: Request) -> str:
        raise RuntimeError(f"bad output {EVIL}")

    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\n[components.llm]\nuse = "llm"\n',
                        encoding="utf-8")
    kernel = kernel_with({"llm": lambda: ScriptedBackend(model)})
    result = CliRunner().invoke(cli, ["run", str(pipeline), "hi", "--no-stream"],
                                obj={"kernel": kernel})
    assert result.exit_code == 1, result.output
    assert "bad output" in result.output
    assert no_controls(result.output), repr(result.output)


# -- logs -------------------------------------------------------------------------------


def console_line(**values: object) -> str:
    out = io.StringIO()
    configure_logging(level="INFO", stream=out, json=False)
    structlog.get_logger("t").warning("ingest.skipped", **values)
    return out.getvalue()


def test_a_console_log_line_cannot_be_forged_or_drive_the_terminal() -> None:
    """The console renderer (stderr a terminal) wrote string values as they were: a file
    name with ``\\x1b[2J`` cleared the screen, and one holding a tab-free newline wrote
    what looked like a second record."""
    text = console_line(path="a.md\x1b[2J", reason="x\x07y",
                        prompt="hi\n2026-01-01T00:00:00Z [error    ] forged")
    assert text.count("\n") == 1, text
    assert "a.md\\x1b[2J" in text
    assert "x\\x07y" in text
    assert "\x07" not in text
    assert no_controls(re.sub(r"\x1b\[[0-9;]*m", "", text))  # colours only


def test_a_console_log_messages_newlines_are_escaped() -> None:
    out = io.StringIO()
    configure_logging(level="INFO", stream=out, json=False)
    structlog.get_logger("t").warning("one\ntwo")
    assert out.getvalue().count("\n") == 1
    assert "one\\ntwo" in out.getvalue()


def test_a_tracebacks_lines_stay_lines() -> None:
    out = io.StringIO()
    configure_logging(level="INFO", stream=out, json=False)
    try:
        raise ValueError("bad\x1b[2J")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    text = out.getvalue()
    assert "Traceback" in text and text.count("\n") > 2
    assert "bad\\x1b[2J" in text


@pytest.mark.parametrize("as_json", [True, False])
def test_credentials_are_not_logged(as_json: bool) -> None:
    """A component logging its options or a request's headers wrote the API key."""
    out = io.StringIO()
    configure_logging(level="INFO", stream=out, json=as_json)
    structlog.get_logger("t").warning(
        "backend.options", api_key="sk-SECRET1", password="hunter2", openai_api_key="sk-2",
        headers={"Authorization": "Bearer sk-SECRET3", "X-Trace": "keep"},
        attempts=[{"access_token": "tok-4"}], max_tokens=7, token_count=3, key_id="k1")
    text = out.getvalue()
    for secret in ("sk-SECRET1", "hunter2", "sk-2", "sk-SECRET3", "tok-4"):
        assert secret not in text
    for kept in ("keep", "7", "k1", "token_count"):
        assert kept in text
    if as_json:
        record = json.loads(text)
        assert record["api_key"] == record["headers"]["Authorization"] == "***"
        assert record["max_tokens"] == 7 and record["token_count"] == 3


# -- chat history ------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("first", [["--system", "S"], []])
def test_a_new_history_file_is_private(tmp_path: Path, usual_umask: None,
                                       first: list[str]) -> None:
    """``--history`` created the conversation's file 0644 (the umask's default): every user
    of the machine could read it. It is created 0600, as a shell's history."""
    history = tmp_path / "h.jsonl"
    result = invoke(tmp_path, "chat", "--history", str(history), *first, answer="ok",
                    input="my secret plans\n")
    assert result.exit_code == 0, result.output
    assert "my secret plans" in history.read_text(encoding="utf-8")
    assert stat.S_IMODE(history.stat().st_mode) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_reset_keeps_the_history_files_permissions(tmp_path: Path, usual_umask: None,
                                                   mode: int) -> None:
    """``/reset`` replaced a 0600 history file with a 0644 one (a new file renamed over
    it, under the umask): the conversation became readable by every user."""
    history = tmp_path / "h.jsonl"
    history.write_text('{"role": "system", "content": "S"}\n'
                       '{"role": "user", "content": "private"}\n', encoding="utf-8")
    history.chmod(mode)
    result = invoke(tmp_path, "chat", "--history", str(history), answer="ok",
                    input="/reset\nagain\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines()]
    assert [m["content"] for m in lines] == ["S", "again", "ok"]
    assert stat.S_IMODE(history.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- huge files --------------------------------------------------------------------------


def huge(path: Path) -> Path:
    """A 2 GiB file taking no disk space (sparse): read whole, it would take GiBs."""
    with path.open("wb") as out:
        out.truncate(2 * 2**30)
    return path


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Files read whole (``Path.read_text``), recorded; a huge one is not read."""
    read: list[Path] = []
    read_text = Path.read_text

    def reading(self: Path, *args: object, **kwargs: object) -> str:
        read.append(self)
        if self.stat().st_size > 2**20:
            raise AssertionError(f"{self} read whole")
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", reading)
    return read


@pytest.mark.parametrize("name", ["big.txt", "big.md"])
def test_a_huge_named_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             no_reading: list[Path], name: str) -> None:
    """A 2 GB text file was read whole (several GB of memory, then one 2 GB document). It
    is refused with its size and what to do, before a byte is read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text('[pipeline]\nname = "t"\nstages = ["retrieve"]\n'
                                     '[components.lex]\nuse = "bm25"\npath = "idx"\n')
    huge(tmp_path / name)
    result = CliRunner().invoke(cli, ["index", "p.toml", name],
                                env={"AIENG_PLUGINS": "builtin,bm25"})
    assert result.exit_code == 2, result.output
    assert f"{name} is too large to read as one text (2,147,483,648 bytes" in result.output
    assert "split it" in result.output
    assert not [p for p in no_reading if p.name == name]


def test_a_huge_file_in_a_folder_is_skipped_and_the_others_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_reading: list[Path]) -> None:
    from structlog.testing import capture_logs

    from aieng_core.ingest import iter_documents

    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    huge(docs / "big.txt")
    (docs / "small.md").write_text("# T\nbody\n", encoding="utf-8")
    with capture_logs() as logs:
        found = [d.id for d in iter_documents("docs")]
    assert found == ["docs/small.md#0"]
    assert [e["path"] for e in logs if e["event"] == "ingest.skipped"] == ["docs/big.txt"]
