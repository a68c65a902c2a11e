"""`aieng index` again on a file that shrank: the numbered documents it no longer has go
(a markdown file's sections, a table's rows), nothing it still has is touched (bm25 on
disk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.cli._rag import numbered_runs

BM25Index = pytest.importorskip("aieng_bm25._index").BM25Index
BM25Options = pytest.importorskip("aieng_bm25._options").BM25Options
pytest.importorskip("aieng_tables")

PIPELINE = '[pipeline]\nname = "t"\nstages = ["retrieve"]\n' \
           '[components.lex]\nuse = "bm25"\npath = "idx"\n'


def index(*paths: str) -> None:
    result = CliRunner().invoke(cli, ["index", "p.toml", *paths],
                                env={"AIENG_PLUGINS": "builtin,bm25,tables"})
    assert result.exit_code == 0, result.output


def ids(root: Path) -> list[str]:
    found = BM25Index(BM25Options(path=str(root / "idx")))
    try:
        return sorted(hit.document.id for hit in found.search("text", k=100))
    finally:
        found.close()


def test_rows_a_table_lost_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """Three rows, then one: rows 2 and 3 were kept (the reader names rows
    ``PATH#row-N``, which the markdown-only deletion did not follow)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    table = tmp_path / "people.csv"
    table.write_text("name,note\nAda,text one\nBob,text two\nCy,text three\n")
    index("people.csv")
    assert ids(tmp_path) == ["people.csv#row-1", "people.csv#row-2", "people.csv#row-3",
                             "people.csv#schema"]
    table.write_text("name,note\nAda,text one\n")
    index("people.csv")
    assert ids(tmp_path) == ["people.csv#row-1", "people.csv#schema"]


def test_sections_a_markdown_file_lost_are_deleted_and_others_stay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A markdown file from two sections to one; another file indexed alongside stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    (tmp_path / "a.md").write_text("# A\n\nalpha text\n\n# B\n\nbeta text\n")
    (tmp_path / "b.txt").write_text("other text\n")
    index("a.md", "b.txt")
    assert ids(tmp_path) == ["a.md#0", "a.md#1", "b.txt"]
    (tmp_path / "a.md").write_text("# A\n\nalpha text\n")
    index("a.md")
    assert ids(tmp_path) == ["a.md#0", "b.txt"]


def test_numbered_runs_of_the_readers_id_schemes() -> None:
    assert numbered_runs("a.md", ["a.md#0", "a.md#1"]) == {"a.md#": 2}
    assert numbered_runs("t.csv", ["t.csv#schema", "t.csv#row-1", "t.csv#row-2"]) == \
        {"t.csv#row-": 3}
    assert numbered_runs("a.md", []) == {"a.md#": 0}
    assert numbered_runs("c.txt", ["c.txt"]) == {}
    assert numbered_runs("q.jsonl", ["doc-1", "doc-2"]) == {}  # not the file's ids
    assert numbered_runs("g.md", ["g.md#0", "g.md#2"]) == {}  # a gap: not a run


@given(st.sets(st.integers(0, 40)), st.sampled_from(["", "row-", "p3-"]))
def test_a_run_ends_past_its_last_number_only_when_it_has_no_gap(numbers: set[int],
                                                                 stem: str) -> None:
    """Property: a stem's next number is given exactly when its numbers run from 0 or 1
    without a gap, and it is one past the last; it is never one of the ids read."""
    read = [f"f.md#{stem}{n}" for n in sorted(numbers)]
    runs = numbered_runs("f.md", read)
    contiguous = bool(numbers) and min(numbers) in (0, 1) and \
        numbers == set(range(min(numbers), max(numbers) + 1))
    if not numbers:
        assert runs == {"f.md#": 0}
    elif contiguous:
        assert runs == {f"f.md#{stem}": max(numbers) + 1}
        assert f"f.md#{stem}{max(numbers) + 1}" not in read
    else:
        assert runs == {}
