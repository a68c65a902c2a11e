"""Reading a collection in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs

from aieng_hookspecs.types import Document, Query

from ..ingest import _scalar

__all__ = ["BeirCollection", "load_beir"]

_Row = TypeVar("_Row")


@attrs.frozen
class BeirCollection:
    """A test collection: documents, queries and graded judgements (query -> doc -> grade)."""

    documents: tuple[Document, ...]
    queries: tuple[Query, ...]
    qrels: dict[str, dict[str, int]]


def _rows(path: Path, build: Callable[[dict[str, object]], _Row]) -> list[_Row]:
    rows = []
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first row.
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f"{path}:{number}: a row needs an '_id'")
            try:
                rows.append(build(row))
            except (TypeError, ValueError) as exc:  # a null id, an empty one, a table
                raise ValueError(f"{path}:{number}: {exc}") from None
    return rows


def _document(row: dict[str, object]) -> Document:
    # As the ingest reader of corpus.jsonl: null (or absent) is empty, not "None".
    return Document(id=_scalar(row["_id"], "_id", null=False),
                    text=_scalar(row.get("text"), "text"), title=_scalar(row.get("title"), "title"))


def _query(row: dict[str, object]) -> Query:
    return Query(text=_scalar(row.get("text"), "text"), id=_scalar(row["_id"], "_id", null=False))


def load_beir(directory: str | Path, *, split: str = "test") -> BeirCollection:
    """Load a BEIR-layout collection.

    :raises FileNotFoundError: naming the missing file.
    :raises ValueError: naming the file and line of a malformed row.
    """
    root = Path(directory)
    paths = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (a BEIR collection has corpus.jsonl, "
                                    f"queries.jsonl and qrels/{split}.tsv)")
    documents = tuple(_rows(paths[0], _document))
    queries = tuple(_rows(paths[1], _query))
    qrels: dict[str, dict[str, int]] = {}
    with paths[2].open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        first = True
        for number, row in enumerate(reader, start=1):
            if not "".join(row).strip():
                continue  # a blank line, as in the JSON-lines files
            if first and not row[-1].strip().lstrip("-").isdigit():
                first = False
                continue  # the header
            first = False
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                raise ValueError(f"{paths[2]}:{number}: expected query-id, corpus-id and an "
                                 f"integer score, got {row!r}"[:300])
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return BeirCollection(documents, queries, qrels)
