"""The big day: inputs 100x to 1000x larger (a folder of thousands of files, a 100 KB line,
a long streamed answer, crafted nesting) cost work that grows with them, not faster.

No timings are asserted: growth is shown by counting (ids asked of an index, characters
copied), and a pathological input runs in a subprocess that must finish.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, Document, Hit, Message, Query
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.agent import AgentDelta
from aieng_core.cli import _chat, _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.cli._agent import LiveAnswer
from aieng_core.cli._chat import _append_history, _read_history
from aieng_core.cli._rag import numbered_runs
from aieng_core.cli._window import Conversation
from aieng_core.ingest import _markdown, iter_beir_corpus
from aieng_core.testing import kernel_with

#: A subprocess's limit: the linear work takes well under a second; the quadratic one it
#: replaces took minutes on these inputs.
_FINISHES = 60


def _finishes(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter; its standard output once it has finished."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=_FINISHES, check=True)
    return done.stdout


# -- markdown headings: no backtracking over a long run of spaces ---------------------------


def test_a_heading_with_a_long_run_of_spaces_is_read(tmp_path: Path) -> None:
    """``(.*?)[ \\t]*$`` and a search for ``[ \\t]+#+$`` backtracked over a heading's run
    of spaces that does not end it: a 200 KB run took minutes (its square)."""
    markdown = tmp_path / "big.md"
    run = " " * 200_000
    markdown.write_text(f"# a{run}b\nbody\n## c{run}#d ##\nmore\n", encoding="utf-8")
    out = _finishes("import sys; from pathlib import Path\n"
                    "from aieng_core.ingest import read_markdown\n"
                    "print([(len(d.title), d.title[-3:]) for d in "
                    "read_markdown(Path(sys.argv[1]))])", str(markdown))
    assert out.strip() == repr([(200_002, "  b"), (200_003, " #d")])


_OLD_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]+(.*?))?[ \t]*$")
_OLD_CLOSING = re.compile(r"(?:^|[ \t]+)#+$")


def _old_title(line: str) -> str | None:
    """A heading line's title as the backtracking expressions read it (None: not one)."""
    heading = _OLD_HEADING.match(line)
    if heading is None:
        return None
    return _OLD_CLOSING.sub("", heading[1] or "").strip() or "doc"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" \t#a\u00a0x", max_size=14))
def test_headings_are_titled_as_before(line: str) -> None:
    """Any line: a heading (or not) with the same title as the old expressions gave."""
    docs = _markdown(Path("doc.md"), f"{line}\nbody\n")
    expected = _old_title(line)
    if expected is None:
        assert [d.title for d in docs] == ["doc"] or not line.strip()
    else:
        assert [d.title for d in docs] == [expected]


# -- crafted nesting and long ids -----------------------------------------------------------


def test_a_corpus_line_nested_too_deeply_names_file_and_line(tmp_path: Path) -> None:
    """json raised RecursionError, which escaped as 'aieng: error: RecursionError' with
    no file or line, the documents before it not written."""
    corpus = tmp_path / "corpus.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    corpus.write_text(f'{{"_id": "a", "text": "x"}}\n{deep}\n', encoding="utf-8")
    documents = iter_beir_corpus(corpus)
    assert next(documents).id == "a"
    with pytest.raises(ValueError, match=r"corpus\.jsonl:2: not a BEIR corpus row \(JSON "
                                         r"nested too deeply"):
        next(documents)


def test_a_history_line_nested_too_deeply_is_named(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    history.write_text(f'{{"role": "user", "content": "x"}}\n{deep}\n', encoding="utf-8")
    with pytest.raises(Exception, match=r"line 2: JSON nested too deeply") as caught:
        _read_history(history, Conversation())
    assert type(caught.value).__name__ == "BadParameter"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x1c"])
def test_a_turn_holding_a_unicode_line_separator_is_read_back(tmp_path: Path,
                                                              separator: str) -> None:
    """json.dumps writes U+2028 and U+0085 as they are; ``str.splitlines`` cut the line
    there, and the chat's history could no longer be read."""
    history = tmp_path / "h.jsonl"
    turn = [Message("user", f"a{separator}b"), Message("assistant", "c")]
    _append_history(history, turn)
    assert _read_history(history, Conversation()).messages == turn


def test_a_crafted_numbered_id_is_parsed_in_one_pass() -> None:
    """``(.*?)(\\d+)`` backtracked over a long run of digits that does not end the id."""
    out = _finishes("from aieng_core.cli._rag import numbered_runs\n"
                    "print(numbered_runs('a.md', ['a.md#' + '1' * 200_000 + 'x#0']))")
    assert out.strip() == "{'a.md#" + "1" * 200_000 + "x#': 1}"
    assert numbered_runs("t.csv", ["t.csv#row-1", "t.csv#row-2", "t.csv#x"]) == {
        "t.csv#row-": 3}
    # Digits past what int() reads (4,300) are no section number: no ValueError.
    assert numbered_runs("a.md", ["a.md#0", "a.md#" + "1" * 5000]) == {"a.md#": 1}


# -- aieng index: stale runs of thousands of files ------------------------------------------


class Store:
    """An index holding ids, counting the ids each delete asks for."""

    held: ClassVar[set[str]] = set()
    asked: ClassVar[list[int]] = []

    @hookimpl
    def aieng_index(self, documents: list[Document]) -> int:
        Store.held.update(d.id for d in documents)
        return len(documents)

    @hookimpl
    def aieng_delete(self, ids: list[str]) -> int:
        Store.asked.append(len(ids))
        found = Store.held.intersection(ids)
        Store.held -= found
        return len(found)

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return []


def _reindex_one_shrunk(tmp_path: Path, files: int) -> tuple[int, int]:
    """Index ``files`` markdown files, shrink one from 120 sections to 1, index again:
    the ids the second run's deletes asked for, and how many were deleted."""
    Store.held, Store.asked = set(), []
    folder = tmp_path / str(files)
    folder.mkdir()
    for n in range(files):
        (folder / f"f{n}.md").write_text("# a\nx\n# b\ny\n", encoding="utf-8")
    (folder / "f0.md").write_text("".join(f"# s{n}\nt\n" for n in range(120)), encoding="utf-8")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\nstages = ["retrieve"]\n'
                        '[components.docs]\nuse = "store"\n', encoding="utf-8")
    held = []
    for _ in range(2):
        Store.asked = []
        result = CliRunner().invoke(cli, ["index", str(pipeline), str(folder)],
                                    obj={"kernel": kernel_with({"store": Store})})
        assert result.exit_code == 0, result.output
        (folder / "f0.md").write_text("# only\nz\n", encoding="utf-8")
        held.append(len(Store.held))
    return sum(Store.asked), held[0] - held[1]


def test_one_shrunk_file_does_not_make_every_file_probe_its_window(tmp_path: Path) -> None:
    """Every file's run went on while one file's stale sections were deleted: with 4x the
    files, 4x the ids asked (100,000 files: hundreds of millions). The ids asked now
    barely grow with the files that lost nothing."""
    small, deleted = _reindex_one_shrunk(tmp_path, 300)
    large, deleted_large = _reindex_one_shrunk(tmp_path, 1_200)
    assert deleted == deleted_large == 119
    assert large < 2 * small, (small, large)


@pytest.mark.parametrize("step", [37, 1])
def test_stale_runs_are_all_deleted_across_groups(tmp_path: Path, step: int) -> None:
    """Files that lost sections in several groups of runs (every 37th file), or all of
    them: all their stale sections go, the others stay."""
    Store.held, Store.asked = set(), []
    folder = tmp_path / "docs"
    folder.mkdir()
    for n in range(200):
        (folder / f"f{n:03}.md").write_text("# a\nx\n# b\ny\n# c\nz\n", encoding="utf-8")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\nstages = ["retrieve"]\n'
                        '[components.docs]\nuse = "store"\n', encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(pipeline), str(folder)],
                         obj={"kernel": kernel_with({"store": Store})}).exit_code == 0
    shrunk = range(0, 200, step)
    for n in shrunk:
        (folder / f"f{n:03}.md").write_text("# a\nx\n", encoding="utf-8")
    result = runner.invoke(cli, ["index", str(pipeline), str(folder)],
                           obj={"kernel": kernel_with({"store": Store})})
    assert result.exit_code == 0, result.output
    assert f"and {2 * len(shrunk)} deleted" in result.stderr
    held = {doc_id.rsplit("/", 1)[-1] for doc_id in Store.held}
    assert held == {f"f{n:03}.md#{i}" for n in range(200)
                    for i in range(1 if n in shrunk else 3)}


# -- a long streamed answer -----------------------------------------------------------------


class _Piece(str):
    """A streamed piece counting the characters joined before it by ``+``."""

    copied: ClassVar[int] = 0

    def __radd__(self, other: Any) -> str:
        _Piece.copied += len(other)
        return str(other) + str(self)


def test_a_long_streamed_answer_is_not_copied_per_piece(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """``self._last += piece`` copied the text so far for every piece: the characters
    copied grew as the square of the answer's pieces (80,000 pieces: seconds)."""
    live = LiveAnswer()
    _Piece.copied = 0
    for _ in range(4_000):
        live.delta(AgentDelta(step=1, purpose="decide", delta=Delta(text=_Piece("word "))))
    assert _Piece.copied <= 5 * 4_000
    live.finish(type("Result", (), {"answer": "word " * 4_000})())  # type: ignore[arg-type]
    assert capsys.readouterr().out == "word " * 4_000 + "\n"
