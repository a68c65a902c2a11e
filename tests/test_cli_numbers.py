"""The numbers ``aieng index`` prints are what reached the store, and ingestion reads the
same documents, in the same order, in every process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Chunk, Document, Hit, Query
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core.cli import _commands, _present, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.testing import kernel_with

PIPELINE = '[pipeline]\nname = "p"\nstages = ["retrieve"]\n[components.store]\nuse = "store"\n'
CHUNKED = PIPELINE + '[components.words]\nuse = "words"\n'
_DONE = re.compile(r"read (\d+) documents from (\d+) path\(s\); the indexes reported "
                   r"(\d+) written(?: and (\d+) deleted \(([^)]*)\))?")


class Store:
    """An index whose ids outlive the pipeline (``ids``: shared by the test)."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        self.ids.update(d.id for d in documents)
        return len(documents)

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        gone = self.ids.intersection(ids)
        self.ids -= gone
        return len(gone)

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return []


class Words:
    """A chunker cutting a document into one chunk per word."""

    @hookimpl
    def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        found = re.finditer(r"\S+", document.text)
        return [Chunk(id=f"{document.id}#{n}", document_id=document.id, text=m[0],
                      start=m.start(), end=m.end()) for n, m in enumerate(found)]


def index(ids: set[str], pipeline: str, *paths: str) -> tuple[int, int, int, int, str]:
    """``aieng index`` into ``ids``: read, paths, written, deleted and what the deleted
    are said to be, as printed."""
    kernel = kernel_with({"store": lambda: Store(ids), "words": Words})
    result = CliRunner().invoke(cli, ["index", pipeline, *paths], obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    done = _DONE.search(result.stderr)
    assert done is not None, result.stderr
    read, count, written, deleted, what = done.groups()
    return int(read), int(count), int(written), int(deleted or 0), what or ""


def test_deleted_sections_are_counted_as_the_chunks_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sections of 3 and 1 chunks left the file: "4 deleted (sections no longer in
    the files)" said 4 sections went. The count is the indexes' (chunks included), and
    the message now says so."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(CHUNKED)
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nx y\n\n# B\n\np q r\n\n# C\n\ns\n")
    ids: set[str] = set()
    assert index(ids, "p.toml", "a.md") == (3, 1, 6, 0, "")
    doc.write_text("# A\n\nx y\n")
    read, _, written, deleted, what = index(ids, "p.toml", "a.md")
    assert (read, written) == (1, 2)
    assert ids == {"a.md#0#0", "a.md#0#1"}
    assert deleted == 4  # a.md#1#0, #1#1, #1#2 and a.md#2#0
    assert what == "documents or chunks no longer in the files"


def test_chunks_a_kept_section_lost_are_counted_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A section cut from three words to one keeps its first chunk and loses two:
    ``Pipeline.index`` deleted them, but its count said only what it wrote, and ``aieng
    index`` printed no deletion."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(CHUNKED)
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nx y z\n\n# B\n\np q\n")
    ids: set[str] = set()
    assert index(ids, "p.toml", "a.md") == (2, 1, 5, 0, "")
    doc.write_text("# A\n\nx\n\n# B\n\np q\n")
    assert index(ids, "p.toml", "a.md")[2:4] == (3, 2)
    assert ids == {"a.md#0#0", "a.md#1#0", "a.md#1#1"}
    doc.write_text("# A\n\nx\n")  # a section gone and nothing else: 2 chunks
    assert index(ids, "p.toml", "a.md")[2:4] == (1, 2)


@pytest.mark.anyio
async def test_pipeline_index_counts_the_stale_chunks_it_deleted() -> None:
    """``Pipeline.index`` returns the count written, an ``int``, whose ``deleted`` says
    how many stale ids the indexes reported deleted on the way."""
    ids: set[str] = set()
    kernel = kernel_with({"store": lambda: Store(ids), "words": Words})
    async with kernel:
        pipeline = kernel.pipeline({"pipeline": {"name": "p", "stages": ["retrieve"]},
                                    "components": {"store": {"use": "store"},
                                                   "words": {"use": "words"}}})
        first = await pipeline.index([Document(id="d", text="a b c d e")])
        assert (first, first.deleted, isinstance(first, int)) == (5, 0, True)
        second = await pipeline.index([Document(id="d", text="a b")], batch_size=1)
        assert (second, second.deleted) == (2, 3)
        assert ids == {"d#0", "d#1"}
        assert (await pipeline.index([])).deleted == 0


def test_bench_retrieval_says_what_its_numbers_count(tmp_path: Path) -> None:
    """``--k 5`` scores Recall@100 over 5 hits: the table says "top 5"; ``queries`` are
    the judged ones, ``queries_run`` every one asked (what queries/s divides)."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(
        f'{{"_id": "d{i}", "title": "", "text": "plate {i}"}}\n' for i in range(8)))
    (beir / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "plate 1"}\n{"_id": "q2", "text": "plate 2"}\n'
        '{"_id": "q3", "text": "unjudged plate"}\n')
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    (tmp_path / "p.toml").write_text(
        '[pipeline]\nname = "p"\n[components.docs]\nuse = "memory"\n')
    result = CliRunner().invoke(cli, ["bench", "retrieval", str(tmp_path / "p.toml"),
                                      str(beir), "--k", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["queries"], data["queries_run"], data["k"]) == (2, 3, 5)
    assert _present.score_columns(data)[1:4] == ("Recall@100 (top 5)", "MRR@10",
                                                 "queries judged")
    assert _present.score_columns({**data, "k": 100})[1] == "Recall@100"


def test_without_a_chunker_deleted_counts_the_sections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PIPELINE)
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nx\n\n# B\n\ny\n\n# C\n\nz\n")
    ids: set[str] = set()
    index(ids, "p.toml", "a.md")
    doc.write_text("# A\n\nx\n")
    assert index(ids, "p.toml", "a.md")[2:4] == (1, 2)
    assert ids == {"a.md#0"}


_SECTIONS = st.lists(st.integers(0, 4), min_size=1, max_size=3)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=_SECTIONS, after=_SECTIONS, other=st.integers(0, 3))
def test_index_twice_counts_what_reached_the_store(
        tmp_path_factory: pytest.TempPathFactory, before: list[int], after: list[int],
        other: int) -> None:
    """Markdown files of generated section counts indexed, edited (sections added,
    removed, files emptied) and indexed again: each run's read, written and deleted are
    the sections in the files, the ids that reached the store and those that left it."""
    root = tmp_path_factory.mktemp("docs")
    (root / "p.toml").write_text(PIPELINE)
    folder = root / "docs"
    folder.mkdir()

    def write(counts: list[int]) -> set[str]:
        for n, sections in enumerate(counts):
            text = "".join(f"# S{i}\n\nbody {i}\n\n" for i in range(sections))
            (folder / f"f{n}.md").write_text(text)
        return {f"docs/f{n}.md#{i}" for n, sections in enumerate(counts)
                for i in range(sections)}

    (folder / "t.txt").write_text("plain " * (other + 1))
    ids: set[str] = set()
    old = os.getcwd()
    os.chdir(root)
    try:
        first = write(before)
        assert index(ids, "p.toml", "docs") == (len(first) + 1, 1, len(first) + 1, 0, "")
        assert ids == first | {"docs/t.txt"}
        for n in range(len(after), len(before)):  # files deleted stay indexed
            (folder / f"f{n}.md").unlink()
        second = write(after)
        kept = {i for i in first if int(i.split("/f")[1].split(".")[0]) >= len(after)}
        read, _, written, deleted, _ = index(ids, "p.toml", "docs")
    finally:
        os.chdir(old)
    assert (read, written) == (len(second) + 1, len(second) + 1)
    assert ids == second | kept | {"docs/t.txt"}
    assert deleted == len(first - second - kept)


# ingest.py alone (not the aieng_core package, slow to import): a process in 0.3 s.
_LISTS = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("ingest", sys.argv[1])
ingest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ingest)
print(json.dumps([[d.id, d.title, d.text] for d in ingest.iter_documents(*sys.argv[2:])]))
"""
INGEST = Path(__file__).resolve().parent.parent / "aieng_core" / "ingest.py"


def test_documents_are_read_alike_whatever_the_hash_seed(tmp_path: Path) -> None:
    """The same folder read by two processes of different ``PYTHONHASHSEED``: the same
    documents (ids, titles, texts) in the same order, the walk's order (sorted paths),
    whatever order the files were created in."""
    names = ["z.md", "a b.txt", "é.md", "B.md", "a/b.md", "a-b.md", "a/c/d.txt", "日本.md"]
    for name in reversed(names):
        path = tmp_path / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\n\ntext of {name}\n\n## more\n\nsecond\n")
    seen = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", _LISTS, str(INGEST), "docs"],
                              cwd=tmp_path,
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        seen.append(json.loads(done.stdout))
    assert seen[0] == seen[1]
    files = list(dict.fromkeys(doc_id.split("#")[0] for doc_id, _, _ in seen[0]))
    assert files == sorted(files, key=lambda f: Path(f).parts)
    assert len(files) == len(names)
