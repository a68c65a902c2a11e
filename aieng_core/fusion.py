"""Reciprocal rank fusion: the kernel's default ``aieng_fuse`` when no fuser answers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aieng_hookspecs.types import Document, Hit, kept_version

__all__ = ["reciprocal_rank_fusion"]


def reciprocal_rank_fusion(runs: Sequence[Sequence[Hit]], *, k: int = 60) -> list[Hit]:
    """Fuse ranked runs by ``sum(1 / (k + rank))`` per document.

    The result does not depend on the order of ``runs``: contributions are summed exactly
    (``math.fsum``), ties are broken by document id, and when runs carry different versions
    of one document the one ranked best (then by source, text, title, metadata) is kept.

    :param runs: ranked lists of hits, best first; a document repeated inside one run counts
        once, at its best position.
    :param k: the RRF constant (60 in Cormack et al., 2009); larger flattens the curve.
    :returns: every document once, best first, with ranks 1..n and ``source="rrf"``.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    parts: dict[str, list[float]] = {}
    chosen: dict[str, tuple[tuple[int, str, str, str], Document]] = {}
    for run in runs:
        seen: set[str] = set()
        for position, hit in enumerate(run, start=1):
            doc = hit.document
            if doc.id in seen:
                continue
            seen.add(doc.id)
            # The position in the run, not hit.rank, so a mis-numbered run cannot skew it.
            parts.setdefault(doc.id, []).append(1.0 / (k + position))
            key = (position, hit.source, doc.text, doc.title)
            if doc.id not in chosen or kept_version(key, doc, *chosen[doc.id]):
                chosen[doc.id] = (key, doc)
    scores = {doc_id: math.fsum(values) for doc_id, values in parts.items()}
    ordered = sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))
    return [
        Hit(document=chosen[doc_id][1], score=scores[doc_id], rank=rank, source="rrf")
        for rank, doc_id in enumerate(ordered, start=1)
    ]
