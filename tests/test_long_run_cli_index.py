"""`aieng index` over a folder of many files: what the command itself holds while it runs
is bounded by a batch's files, not by the folder (it kept every numbered id read and every
file's runs until the end, then probed them all in one go), and what files no longer hold
is still deleted, batch by batch, an id another file gave kept."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query
from click.testing import CliRunner

from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.testing import kernel_with

PIPELINE = '[pipeline]\nname = "t"\nstages = ["retrieve"]\n[components.shelf]\nuse = "shelf"\n'
# What the command's own code holds (its allocations, by the line that made them).
_CLI_FILES = tracemalloc.Filter(True, f"*{os.sep}aieng_core{os.sep}cli{os.sep}*")


class Shelf:
    """An index holding each document's text by id (``texts``); deleting counts what it
    held. With ``measure``, each batch notes the bytes the CLI's code holds then."""

    def __init__(self, *, measure: bool = False) -> None:
        self.texts: dict[str, str] = {}
        self.measure = measure
        self.cli_bytes: list[int] = []

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        if self.measure:
            held = tracemalloc.take_snapshot().filter_traces([_CLI_FILES])
            self.cli_bytes.append(sum(trace.size for trace in held.traces))
        else:
            self.texts.update((d.id, d.text) for d in documents)
        return len(documents)

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        return sum(self.texts.pop(i, None) is not None for i in ids)

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return []


def _index(shelf: Shelf, *args: str) -> str:
    kernel = kernel_with({"shelf": lambda: shelf})
    result = CliRunner().invoke(cli, ["index", "p.toml", *args], obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    return result.stderr


def _notes(folder: Path, files: int) -> None:
    folder.mkdir()
    for i in range(files):
        (folder / f"note-{i:05d}.md").write_text(
            f"# Part {i}\n\nalpha {i}\n\n# More {i}\n\nbeta {i}\n", encoding="utf-8")


def test_what_the_command_holds_does_not_grow_with_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders of 100 and 500 markdown files (two sections each), 32 documents a batch:
    the bytes the command's own code holds at its last batch are the same for both (it
    kept each numbered id and each file's run to the end: about 150 B a file, 100 MB for
    a folder of 700,000 files)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    held = {}
    for files in (100, 500):
        _notes(tmp_path / f"docs{files}", files)
        shelf = Shelf(measure=True)
        tracemalloc.start(1)
        try:
            err = _index(shelf, f"docs{files}", "--batch-size", "32")
        finally:
            tracemalloc.stop()
        assert f"read {2 * files} documents" in err
        held[files] = max(shelf.cli_bytes[-3:])
    per_file = (held[500] - held[100]) / 400
    assert per_file < 8, f"{per_file:.0f} B a file held by aieng_core/cli ({held})"


def test_stale_sections_go_batch_by_batch_and_another_files_id_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Markdown files shrinking (3 sections to 1, 2 to none) indexed again a document a
    batch: what they no longer hold is deleted, the rest stays; an id of a BEIR corpus
    read before them that falls in a shrunk file's run (``docs/a.md#2``) stays, and one
    read after them is written after the deletion."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# 1\n\none\n\n# 2\n\ntwo\n\n# 3\n\nthree\n")
    (docs / "b.md").write_text("# 1\n\none\n\n# 2\n\ntwo\n")
    (docs / "c.txt").write_text("plain\n")
    shelf = Shelf()
    _index(shelf, "docs", "--batch-size", "1")
    assert sorted(shelf.texts) == ["docs/a.md#0", "docs/a.md#1", "docs/a.md#2",
                                   "docs/b.md#0", "docs/b.md#1", "docs/c.txt"]
    (docs / "a.md").write_text("# 1\n\none again\n")
    (docs / "b.md").write_text("")
    first, last = tmp_path / "first", tmp_path / "last"
    for folder, doc_id in ((first, "docs/a.md#2"), (last, "docs/b.md#1")):
        folder.mkdir()
        (folder / "corpus.jsonl").write_text(json.dumps(
            {"_id": doc_id, "title": "", "text": f"from {folder.name}"}) + "\n")
    err = _index(shelf, "first/corpus.jsonl", "docs", "last/corpus.jsonl",
                 "--batch-size", "1")
    assert shelf.texts == {"docs/a.md#0": "one again", "docs/a.md#2": "from first",
                           "docs/b.md#1": "from last", "docs/c.txt": "plain\n"}
    assert "3 deleted" in err, err
