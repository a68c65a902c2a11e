"""A full disk under ``aieng chat --history`` and ``aieng plugin new``: nothing is left half
written (the next run reads it, or starts afresh), and the error names the file."""

from __future__ import annotations

import builtins
import errno
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from aieng_hookspecs.types import Request
from click.testing import CliRunner, Result

from aieng_core.cli import _chat, _scaffold, cli
from aieng_core.testing import ScriptedBackend, kernel_with


def count_turns(request: Request) -> str:
    users = [m.content for m in request.messages if m.role == "user"]
    return f"{len(users)} turns, last {users[-1]!r}"


def chat(tmp_path: Path, lines: str, *args: str) -> Result:
    path = tmp_path / "chat.toml"
    path.write_text('[pipeline]\nname = "chat"\n[components.llm]\nuse = "counter"\n',
                    encoding="utf-8")
    assert _chat.chat.name == "chat"  # imported: the command is registered
    kernel = kernel_with({"counter": lambda: ScriptedBackend(count_turns)})
    return CliRunner().invoke(cli, ["chat", str(path), *args], input=lines,
                              obj={"kernel": kernel})


class _Full:
    """A file on a full disk: a write stores the first half of what it is given, then
    fails with ENOSPC (as a write that filled the last blocks does)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: Any) -> int:
        self._file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@pytest.fixture
def disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """While ``full[0]`` is true, files opened for writing under ``tmp_path / "h"`` (or by
    descriptor) are on a full disk."""
    full = [False]
    disk = tmp_path / "h"
    disk.mkdir()
    real_open = io.open

    def opening(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        inside = isinstance(file, int) or Path(file).resolve().is_relative_to(disk)
        return _Full(opened) if full[0] and writing and inside else opened

    monkeypatch.setattr(io, "open", opening)
    monkeypatch.setattr(builtins, "open", opening)
    yield full


def test_a_turn_that_cannot_be_saved_leaves_the_history_as_it_was(
        tmp_path: Path, disk_full: list[bool]) -> None:
    """A turn appended to a full disk left half a JSON line at the file's end: the next
    chat refused the file ("line 3: ...") and the conversation could only be recovered by
    hand. The file is now as it was before the turn, the error names it, and the next
    chat goes on from it."""
    history = tmp_path / "h" / "h.jsonl"
    assert chat(tmp_path, "one\n", "--history", str(history)).exit_code == 0
    before = history.read_bytes()
    disk_full[0] = True
    result = chat(tmp_path, "two\n", "--history", str(history))
    disk_full[0] = False
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert str(history) in result.stderr and "No space left on device" in result.stderr
    assert history.read_bytes() == before
    result = chat(tmp_path, "three\n", "--history", str(history))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["2 turns, last 'three'"]


def test_a_reset_that_cannot_be_saved_keeps_the_conversation(
        tmp_path: Path, disk_full: list[bool]) -> None:
    """/reset rewrote the file in place: on a full disk it was left empty or cut in the
    middle of a line, the conversation lost. The old file stays whole now."""
    history = tmp_path / "h" / "h.jsonl"
    assert chat(tmp_path, "one\ntwo\n", "--history", str(history), "--system",
                "S").exit_code == 0
    before = history.read_bytes()
    disk_full[0] = True
    result = chat(tmp_path, "/reset\n", "--history", str(history))
    disk_full[0] = False
    assert result.exit_code == 1, result.output
    assert str(history) in result.stderr and "No space left on device" in result.stderr
    assert history.read_bytes() == before
    assert [p.name for p in history.parent.iterdir()] == ["h.jsonl"]


@pytest.mark.usefixtures("disk_full")
def test_a_reset_replaces_the_file_whole(tmp_path: Path) -> None:
    """/reset's rewrite leaves the system prompt only, and no temporary file behind."""
    history = tmp_path / "h" / "h.jsonl"
    chat(tmp_path, "one\n", "--history", str(history), "--system", "S")
    assert chat(tmp_path, "/reset\n", "--history", str(history)).exit_code == 0
    assert [json.loads(line)["role"] for line in
            history.read_text(encoding="utf-8").splitlines()] == ["system"]
    assert [p.name for p in history.parent.iterdir()] == ["h.jsonl"]


def test_a_history_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """``--history /dev/zero`` (or /dev/full) was read to its end, which never comes: the
    process grew until the system killed it. A device or a FIFO is refused before
    anything is read or written (/dev/null, which kept nothing, too)."""
    result = chat(tmp_path, "hi\n", "--history", "/dev/null")
    assert result.exit_code == 2, result.output
    assert "'/dev/null' is not a regular file" in result.stderr
    assert result.stdout == ""


def test_a_plugin_package_that_cannot_be_written_is_not_left_half_written(
        tmp_path: Path, disk_full: list[bool]) -> None:
    """`aieng plugin new` on a full disk left a half-written aieng-NAME/ folder (and said
    ``OSError: [Errno 28] ...``, naming nothing): running it again was refused as "already
    exists". No folder is left now, the error names it, and the next run writes it."""
    assert _scaffold.new.name == "new"  # imported: the command is registered
    args = ["plugin", "new", "shiny", "--role", "reranker", "--dir", str(tmp_path / "h")]
    env = {"AIENG_PLUGINS": "builtin"}
    disk_full[0] = True
    result = CliRunner().invoke(cli, args, env=env)
    disk_full[0] = False
    assert result.exit_code == 1, result.output
    assert "aieng-shiny" in result.stderr and "No space left on device" in result.stderr
    assert "Traceback" not in result.output
    assert list((tmp_path / "h").iterdir()) == []
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "h" / "aieng-shiny" / "pyproject.toml").is_file()
