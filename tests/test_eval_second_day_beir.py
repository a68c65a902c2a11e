"""A BEIR collection brought from another machine: a file saved in another encoding (a
Windows editor's cp1252) is refused naming the file and line, not a bare codec error."""

from __future__ import annotations

from pathlib import Path

import pytest

from aieng_core.evaluation import iter_corpus, load_beir


def collection(folder: Path, *, corpus: bytes, queries: bytes = b'{"_id": "q1", "text": "hi"}\n',
               qrels: bytes = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> Path:
    """A BEIR folder of the given files' bytes."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels)
    return folder


# Enough good rows before the bad one that a decoder reading ahead in chunks would fail
# on an earlier line than the one that holds the byte.
_GOOD = b"".join(b'{"_id": "d%d", "text": "caf\xc3\xa9 %d"}\n' % (i, i) for i in range(2, 400))


def test_a_corpus_in_another_encoding_names_its_file_and_line(tmp_path: Path) -> None:
    folder = collection(tmp_path / "c", corpus=b'{"_id": "d1", "text": "ok"}\n' + _GOOD
                        + b'{"_id": "dx", "text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:400: not UTF-8 text"):
        load_beir(folder)
    with pytest.raises(ValueError, match=r"corpus.jsonl:400: not UTF-8 text") as caught:
        list(iter_corpus(folder))
    assert not isinstance(caught.value, UnicodeDecodeError)
    assert len(list(zip(range(399), iter_corpus(folder), strict=False))) == 399


def test_queries_and_qrels_in_another_encoding_name_their_file_and_line(tmp_path: Path
                                                                        ) -> None:
    corpus = b'{"_id": "d1", "text": "ok"}\n'
    bad_queries = collection(tmp_path / "q", corpus=corpus,
                             queries=b'{"_id": "q1", "text": "\xe9t\xe9"}\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:1: not UTF-8 text"):
        load_beir(bad_queries)
    bad_qrels = collection(tmp_path / "r", corpus=corpus,
                           qrels=b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td\xe91\t1\n")
    with pytest.raises(ValueError, match=r"test.tsv:3: not UTF-8 text"):
        load_beir(bad_qrels)


def test_a_byte_order_mark_and_crlf_still_read(tmp_path: Path) -> None:
    """What Windows editors write (a BOM, CRLF endings) is UTF-8 and reads as before."""
    bom = b"\xef\xbb\xbf"
    folder = collection(tmp_path / "w", corpus=bom + b'{"_id": "d1", "text": "caf\xc3\xa9"}\r\n',
                        queries=b'\xef\xbb\xbf{"_id": "q1", "text": "hi"}\r\n',
                        qrels=b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")
    loaded = load_beir(folder)
    assert [d.text for d in loaded.documents] == ["café"] and loaded.qrels == {"q1": {"d1": 1}}
