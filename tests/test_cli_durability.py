"""What a user running ``aieng`` for weeks meets: files that cannot be read while indexing,
a chat history file on a full disk, logging set up by many invocations in one process."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aieng_core.cli import _chat, _commands, _rag, cli  # noqa: F401  (register the commands)

BM25Index = pytest.importorskip("aieng_bm25._index").BM25Index
BM25Options = pytest.importorskip("aieng_bm25._options").BM25Options

PIPELINE = '[pipeline]\nname = "t"\nstages = ["retrieve"]\n' \
           '[components.lex]\nuse = "bm25"\npath = "idx"\n'
ENV = {"AIENG_PLUGINS": "builtin,bm25"}


def indexed(root: Path) -> list[str]:
    found = BM25Index(BM25Options(path=str(root / "idx")))
    try:
        return sorted(hit.document.id for hit in found.search("text", k=100))
    finally:
        found.close()


def failing_read(monkeypatch: pytest.MonkeyPatch, name: str, error: int) -> None:
    """Reading the file ``name`` fails as the system would fail it (a permission refused
    to the user running the job, a file deleted after the folder was listed, ...)."""
    read_text = Path.read_text

    def read(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == name:
            raise OSError(error, "simulated", str(self))
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read)


@pytest.mark.parametrize("error", [errno.EACCES, errno.ENOENT, errno.EIO])
def test_index_a_folder_with_a_file_it_cannot_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """One unreadable file in a folder (permission, deleted after the listing, an I/O
    error) stopped the whole `aieng index` with ``aieng: error: PermissionError: ...`` and
    nothing indexed. The file is named on stderr, the others are indexed, and the status
    is 1 (some failed)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (docs / name).write_text(f"text of {name}\n")
    failing_read(monkeypatch, "b.txt", error)
    result = CliRunner().invoke(cli, ["index", "p.toml", "docs"], env=ENV)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "cannot read docs/b.txt" in result.stderr
    assert "1 file could not be read" in result.stderr
    assert result.stdout == ""
    assert indexed(tmp_path) == ["docs/a.txt", "docs/c.txt"]


def test_index_a_named_file_it_cannot_read_indexes_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files named on the command line likewise: the readable ones are indexed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    (tmp_path / "a.txt").write_text("text a\n")
    (tmp_path / "b.md").write_text("# B\n\ntext b\n")
    failing_read(monkeypatch, "b.md", errno.EACCES)
    result = CliRunner().invoke(cli, ["index", "p.toml", "a.txt", "b.md"], env=ENV)
    assert result.exit_code == 1, result.output
    assert "cannot read b.md" in result.stderr and "simulated" in result.stderr
    assert indexed(tmp_path) == ["a.txt"]


def test_a_file_that_cannot_be_read_keeps_its_sections_indexed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A markdown file indexed before and unreadable now keeps its sections: nothing is
    known of what it holds, so nothing is deleted as "no longer in the file"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    (tmp_path / "a.md").write_text("# A\n\ntext one\n\n# B\n\ntext two\n")
    assert CliRunner().invoke(cli, ["index", "p.toml", "."], env=ENV).exit_code == 0
    failing_read(monkeypatch, "a.md", errno.EACCES)
    result = CliRunner().invoke(cli, ["index", "p.toml", "."], env=ENV)
    assert result.exit_code == 1, result.output
    assert indexed(tmp_path) == ["a.md#0", "a.md#1"]


def test_iter_files_reports_a_file_it_cannot_read_to_on_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library: without ``on_error`` the error propagates (as before); with it, the
    file is reported and skipped, and the walk goes on."""
    from aieng_core.ingest import iter_files

    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text("text\n")
    failing_read(monkeypatch, "b.txt", errno.EACCES)
    with pytest.raises(PermissionError):
        list(iter_files(tmp_path))
    failed: list[tuple[str, int | None]] = []
    read = list(iter_files(tmp_path, on_error=lambda p, e: failed.append((p.name, e.errno))))
    assert [file.name for file, _ in read] == ["a.txt", "c.txt"]
    assert failed == [("b.txt", errno.EACCES)]


def test_logs_after_an_in_process_invocation_reach_the_current_stderr(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configured structlog to write to ``sys.stderr`` as it was during the
    invocation: after ``CliRunner().invoke`` (or ``cli.main`` under a redirection) every
    later log line of the program went into that invocation's dead capture buffer, lost
    (and kept growing it). Lines go to standard error as it is when they are written."""
    import io
    import sys

    import structlog

    result = CliRunner().invoke(cli, ["hooks", "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    structlog.get_logger("t").warning("after.the.command", n=1)
    assert json.loads(later.getvalue())["event"] == "after.the.command"


def test_logging_without_standard_error_writes_nowhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A program started with standard error closed (``sys.stderr is None``) logs
    nowhere, whether it was closed before logging was configured or after."""
    import sys

    import structlog

    from aieng_core.logs import configure_logging

    monkeypatch.setattr(sys, "stderr", None)
    configure_logging(level="INFO")
    structlog.get_logger("t").warning("dropped")
    with monkeypatch.context() as inner:
        inner.setattr(sys, "stderr", __import__("io").StringIO())
        configure_logging(level="INFO")
    structlog.get_logger("t").warning("dropped too")
