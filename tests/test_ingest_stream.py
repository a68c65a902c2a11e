"""A BEIR ``corpus.jsonl`` is read line by line: its documents stream into the indexes in
batches, and memory holds a batch (and the ids seen), not the corpus."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query
from click.testing import CliRunner

from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.ingest import iter_documents, iter_files
from aieng_core.testing import kernel_with


def _corpus(path: Path, count: int, *, text: str = "text", tail: str = "") -> Path:
    rows = (json.dumps({"_id": f"d{n}", "title": "", "text": f"{text} {n}"}) for n in range(count))
    path.write_text("\n".join(rows) + "\n" + tail, encoding="utf-8")
    return path


def test_documents_before_a_bad_line_are_yielded_before_its_error(tmp_path: Path) -> None:
    """The corpus was read whole before its first document: a bad last line of a huge
    corpus failed only after all of it was parsed, in memory at once."""
    corpus = _corpus(tmp_path / "corpus.jsonl", 3, tail="{not json\n")
    documents = iter_documents(corpus)
    assert [d.id for d in itertools.islice(documents, 3)] == ["d0", "d1", "d2"]
    with pytest.raises(ValueError, match=r"corpus\.jsonl:4: not a BEIR corpus row"):
        next(documents)


def test_a_large_corpus_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """A 50 MB corpus read through ``iter_documents`` never holds more than a few of its
    documents: the peak stays far below the file's size."""
    corpus = _corpus(tmp_path / "corpus.jsonl", 2_500, text="x" * 20_000)
    size = corpus.stat().st_size
    assert size > 50_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_documents(corpus))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 2_500
    assert peak < size // 10, f"peak {peak:,} bytes for a {size:,}-byte corpus"


def test_a_repeated_id_far_from_the_first_names_both_lines(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.jsonl", 5_000,
                     tail='{"_id": "d7", "text": "again"}\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:5001: duplicate _id 'd7' \(line 8\)"):
        list(iter_documents(corpus))


def test_corpus_lines_end_as_before(tmp_path: Path) -> None:
    r"""CRLF, a lone CR, a byte order mark and a blank line are read as before, and line
    numbers count them; U+2028 inside a string is text, not a line end."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes('\ufeff{"_id": "1", "text": "a\u2028b"}\r\n\r\n{"_id": "2", "text": "c"}'
                       '\r{"_id": "2", "text": "d"}'.encode())
    with pytest.raises(ValueError, match=r"corpus\.jsonl:4: duplicate _id '2' \(line 3\)"):
        list(iter_documents(corpus))
    corpus.write_bytes(b'{"_id": "1", "text": "a"}\r{"_id": "2", "text": "b"}')
    assert [(d.id, d.text) for d in iter_documents(corpus)] == [("1", "a"), ("2", "b")]


def test_a_corpus_is_not_bound_by_the_text_limit(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_TEXT_BYTES is for a markdown or text file read whole, not a corpus."""
    monkeypatch.setattr("aieng_core.ingest.MAX_TEXT_BYTES", 10)
    corpus = _corpus(tmp_path / "corpus.jsonl", 3)
    assert len(list(iter_documents(corpus))) == 3
    assert [len(found) for _, found in iter_files(tmp_path)] == [3]


def test_a_corpus_not_utf8(tmp_path: Path) -> None:
    """Bad bytes on the first line: the file is not text (skipped in a folder, an error
    named); later: an error naming the line, after the documents before it."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("fine", encoding="utf-8")
    (folder / "corpus.jsonl").write_bytes(b'{"_id": "1", "text": "\xff"}\n')
    assert [d.text for d in iter_documents(folder)] == ["fine"]
    with pytest.raises(ValueError, match=r"corpus\.jsonl:1: not UTF-8 text"):
        list(iter_documents(folder / "corpus.jsonl"))
    (folder / "corpus.jsonl").write_bytes(b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": "\xff"}')
    documents = iter_documents(folder)
    assert [d.text for d in itertools.islice(documents, 2)] == ["fine", "a"]
    with pytest.raises(ValueError, match=r"corpus\.jsonl:2: not UTF-8 text \(byte 48\)"):
        next(documents)


def test_iter_files_still_skips_a_file_it_cannot_read(tmp_path: Path) -> None:
    """A file whose reading fails at once is not yielded, and on_error hears of it."""
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    (tmp_path / "b.txt").write_text("b", encoding="utf-8")
    errors: list[str] = []

    def failing(path: Path) -> list[Document]:
        if path.name == "a.txt":
            raise PermissionError(13, "refused")
        return [Document(id=str(path), text="b")]

    found = list(iter_files(tmp_path, readers={".txt": failing},
                            on_error=lambda file, exc: errors.append(file.name)))
    assert [(file.name, [d.text for d in docs]) for file, docs in found] == [("b.txt", ["b"])]
    assert errors == ["a.txt"]


class Recording:
    """An index (and retriever) remembering the batches it was given."""

    batches: ClassVar[list[list[str]]] = []

    @hookimpl
    def aieng_index(self, documents: list[Document]) -> int:
        Recording.batches.append([d.id for d in documents])
        return len(documents)

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return []


def _invoke(tmp_path: Path, command: str, *args: str) -> Any:
    Recording.batches = []
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\nstages = ["retrieve"]\n'
                        '[components.docs]\nuse = "recording"\n')
    kernel = kernel_with({"recording": Recording})
    return CliRunner().invoke(cli, [*command.split(), str(pipeline), *args],
                              obj={"kernel": kernel})


def test_index_writes_the_batches_before_a_bad_line(tmp_path: Path) -> None:
    """`aieng index` wrote nothing when a corpus's last line was bad, after reading it all;
    the documents before the bad line are indexed in batches now, and the error says so."""
    corpus = _corpus(tmp_path / "corpus.jsonl", 5, tail="{not json\n")
    result = _invoke(tmp_path, "index", str(corpus), "--batch-size", "2")
    assert result.exit_code == 2, result.output
    assert Recording.batches == [["d0", "d1"], ["d2", "d3"], ["d4"]]
    assert "corpus.jsonl:6: not a BEIR corpus row" in result.stderr
    assert "5 documents read before it were written" in result.stderr


def test_index_of_a_beir_folder_gives_the_corpus_ids(tmp_path: Path) -> None:
    """The ids are the corpus's ``_id`` values, in order, batched as asked."""
    folder = tmp_path / "beir"
    folder.mkdir()
    _corpus(folder / "corpus.jsonl", 5)
    result = _invoke(tmp_path, "index", str(folder), "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert Recording.batches == [["d0", "d1", "d2"], ["d3", "d4"]]
    assert "read 5 documents from 1 path(s); the indexes reported 5 written" in result.stderr


def test_index_checks_named_files_before_indexing_anything(tmp_path: Path) -> None:
    """A named file no reader takes is a usage error before any file is indexed."""
    _corpus(tmp_path / "corpus.jsonl", 2)
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    result = _invoke(tmp_path, "index", str(tmp_path / "corpus.jsonl"), str(tmp_path / "x.pdf"))
    assert result.exit_code == 2, result.output
    assert "no reader for '.pdf'" in result.stderr
    assert Recording.batches == []


def test_bench_retrieval_streams_the_corpus(tmp_path: Path) -> None:
    """`aieng bench retrieval` loaded the whole corpus before indexing; it streams it in
    batches of 128 now: a bad line comes after the batches before it."""
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "queries.jsonl").write_text('{"_id": "q", "text": "text"}\n', encoding="utf-8")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td1\t1\n",
                                             encoding="utf-8")
    _corpus(data / "corpus.jsonl", 300)
    result = _invoke(tmp_path, "bench retrieval", str(data), "--json")
    assert result.exit_code == 0, result.output
    assert [len(b) for b in Recording.batches] == [128, 128, 44]
    assert json.loads(result.stdout)["documents"] == 300
    _corpus(data / "corpus.jsonl", 300, tail="{not json\n")
    result = _invoke(tmp_path, "bench retrieval", str(data))
    assert result.exit_code == 1, result.output
    assert "corpus.jsonl:301: not JSON" in result.stderr
    assert [len(b) for b in Recording.batches] == [128, 128, 44]
