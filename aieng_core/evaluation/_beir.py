"""Reading a collection in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import attrs

from aieng_hookspecs.types import Document, Query

__all__ = ["BeirCollection", "load_beir"]


@attrs.frozen
class BeirCollection:
    """A test collection: documents, queries and graded judgements (query -> doc -> grade)."""

    documents: tuple[Document, ...]
    queries: tuple[Query, ...]
    qrels: dict[str, dict[str, int]]


def _rows(path: Path) -> list[dict[str, object]]:
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
            rows.append(row)
    return rows


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
    documents = tuple(Document(id=str(r["_id"]), text=str(r.get("text", "")),
                               title=str(r.get("title", ""))) for r in _rows(paths[0]))
    queries = tuple(Query(text=str(r.get("text", "")), id=str(r["_id"]))
                    for r in _rows(paths[1]))
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
