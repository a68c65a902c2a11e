"""Reading a collection in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import structlog

from aieng_hookspecs.types import Document, Query

from ..ingest import _scalar

__all__ = ["BeirCollection", "iter_corpus", "load_beir"]

_Row = TypeVar("_Row", Document, Query)

log = structlog.get_logger(__name__)
#: How many unknown ids the ``beir.unknown_ids`` warning names.
_EXAMPLES = 5


@attrs.frozen
class BeirCollection:
    """A test collection: documents, queries and graded judgements (query -> doc -> grade)."""

    documents: tuple[Document, ...]
    queries: tuple[Query, ...]
    qrels: dict[str, dict[str, int]]


def _utf8(path: Path, number: int, line: str) -> None:
    """Refuse a line that is not UTF-8 (read with ``surrogateescape``: a byte that does
    not decode is a lone surrogate), naming the file and the line: a file saved in
    another encoding (a Windows editor's cp1252) would fail in a decoder reading ahead,
    with neither."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{path}:{number}: not UTF-8 text (column {exc.start + 1}); save "
                         "the file as UTF-8") from None


def _rows(path: Path, build: Callable[[dict[str, object]], _Row]) -> Iterator[_Row]:
    """The rows of a JSON-lines file, each yielded once its line is read."""
    lines: dict[str, int] = {}  # id -> the line that gave it
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first row.
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            _utf8(path, number, line)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f"{path}:{number}: a row needs an '_id'")
            try:
                built = build(row)
            except (TypeError, ValueError) as exc:  # a null id, an empty one, a table
                raise ValueError(f"{path}:{number}: {exc}") from None
            # A second row with an id would replace the first in an index (or its query's
            # ranking): the scores would be wrong without a word.
            first = lines.setdefault(built.id, number)
            if first != number:
                raise ValueError(f"{path}:{number}: duplicate _id {built.id!r} (line {first})")
            yield built


def _document(row: dict[str, object]) -> Document:
    # As the ingest reader of corpus.jsonl: null (or absent) is empty, not "None".
    return Document(id=_scalar(row["_id"], "_id", null=False),
                    text=_scalar(row.get("text"), "text"), title=_scalar(row.get("title"), "title"))


def _query(row: dict[str, object]) -> Query:
    return Query(text=_scalar(row.get("text"), "text"), id=_scalar(row["_id"], "_id", null=False))


def iter_corpus(directory: str | Path) -> Iterator[Document]:
    """A BEIR-layout collection's documents (its ``corpus.jsonl``) read line by line, each
    yielded once its line is read: a corpus larger than memory streams (the ids seen are
    kept, to refuse a repeated one).

    :raises FileNotFoundError: when the file is missing (at the first document).
    :raises ValueError: naming the file and line of a malformed row, when it is reached.
    """
    return _rows(Path(directory) / "corpus.jsonl", _document)


def load_beir(directory: str | Path, *, split: str = "test",
              corpus: bool = True) -> BeirCollection:
    """Load a BEIR-layout collection.

    :param corpus: read the documents; False leaves them out (``documents`` is empty:
        :func:`iter_corpus` streams them), and judgements naming documents the corpus
        lacks are not looked for.
    :raises FileNotFoundError: naming the missing file.
    :raises ValueError: naming the file and line of a malformed row.
    """
    root = Path(directory)
    paths = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (a BEIR collection has corpus.jsonl, "
                                    f"queries.jsonl and qrels/{split}.tsv)")
    documents = tuple(_rows(paths[0], _document)) if corpus else ()
    queries = tuple(_rows(paths[1], _query))
    qrels: dict[str, dict[str, int]] = {}
    judged: dict[tuple[str, str], int] = {}  # (query id, document id) -> its line
    with paths[2].open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        first = True
        for number, row in enumerate(reader, start=1):
            _utf8(paths[2], reader.line_num, "\t".join(row))
            if not "".join(row).strip():
                continue  # a blank line, as in the JSON-lines files
            if first and not row[-1].strip().lstrip("-").isdigit():
                first = False
                continue  # the header
            first = False
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                raise ValueError(f"{paths[2]}:{number}: expected query-id, corpus-id and an "
                                 f"integer score, got {row!r}"[:300])
            grades = qrels.setdefault(row[0], {})
            grade, line = int(row[2]), judged.setdefault((row[0], row[1]), number)
            if line != number and grades[row[1]] != grade:  # the same row twice is harmless
                raise ValueError(f"{paths[2]}:{number}: query {row[0]!r}, document {row[1]!r} "
                                 f"judged {grade} here and {grades[row[1]]} on line {line}")
            grades[row[1]] = grade
    _warn_unknown(paths[2], qrels, {q.id for q in queries},
                  {d.id for d in documents} if corpus else None)
    return BeirCollection(documents, queries, qrels)


def _warn_unknown(path: Path, qrels: dict[str, dict[str, int]], queries: set[str] | None,
                  documents: set[str] | None) -> None:
    """Log judgements of queries or documents the collection lacks (a query's unknown
    relevant document can never be retrieved, so it lowers the query's recall); None:
    those are not looked for."""
    lost_queries = [q for q in qrels if queries is not None and q not in queries]
    lost_documents = [] if documents is None else list(dict.fromkeys(
        d for grades in qrels.values() for d in grades if d not in documents))
    if lost_queries or lost_documents:
        log.warning("beir.unknown_ids", path=str(path),
                    queries=len(lost_queries), query_examples=lost_queries[:_EXAMPLES],
                    documents=len(lost_documents),
                    document_examples=lost_documents[:_EXAMPLES])
