"""What the fusers share: reading runs, choosing one version of a document, ranking."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs
from aieng_hookspecs.types import Document, Hit, kept_version

__all__ = ["Entry", "Run", "ranked", "read_runs", "scaled"]


@attrs.frozen
class Entry:
    """A document's first appearance in a run."""

    doc_id: str
    score: float
    position: int  # 1-based position in the run, not ``hit.rank`` (a run may misnumber)


@attrs.frozen
class Run:
    """One run with each document once (at its first, best position)."""

    source: str
    entries: tuple[Entry, ...]


def read_runs(runs: Sequence[Sequence[Hit]]) -> tuple[list[Run], dict[str, Document]]:
    """The runs without repeated documents, and one version of each document.

    When runs carry different versions of one document id, the version ranked best is
    kept, then by source, text, title and metadata: the choice never depends on the order
    of the runs.
    """
    read: list[Run] = []
    chosen: dict[str, tuple[tuple[int, str, str, str], Document]] = {}
    for run in runs:
        seen: set[str] = set()
        entries: list[Entry] = []
        for position, hit in enumerate(run, start=1):
            doc = hit.document
            if doc.id in seen:
                continue
            seen.add(doc.id)
            entries.append(Entry(doc.id, float(hit.score), position))
            key = (position, hit.source, doc.text, doc.title)
            if doc.id not in chosen or kept_version(key, doc, *chosen[doc.id]):
                chosen[doc.id] = (key, doc)
        source = run[0].source if run else ""
        read.append(Run(source, tuple(entries)))
    return read, {doc_id: doc for doc_id, (_, doc) in chosen.items()}


def scaled(scores: Sequence[float]) -> list[float]:
    """Scores divided by the largest magnitude among them, so arithmetic on them never
    overflows (a finite score may be 1.7e308); min-max and z-score normalizations are
    unchanged by a positive scale."""
    peak = max((abs(s) for s in scores), default=0.0)
    if peak == 0.0:
        return [0.0] * len(scores)
    return [s / peak for s in scores]


def ranked(parts: Mapping[str, Sequence[float]], documents: Mapping[str, Document],
           source: str) -> list[Hit]:
    """Hits ordered by the exact sum of each document's parts (``math.fsum``, one part per
    run holding the document), ranked 1..n. At equal sums the document found by more runs
    comes first (a run's worst hit may score what its absence scores), then by id."""
    totals = {doc_id: math.fsum(values) for doc_id, values in parts.items()}
    order = sorted(totals, key=lambda doc_id: (-totals[doc_id], -len(parts[doc_id]), doc_id))
    return [Hit(document=documents[doc_id], score=totals[doc_id], rank=rank, source=source)
            for rank, doc_id in enumerate(order, start=1)]
