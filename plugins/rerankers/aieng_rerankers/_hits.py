"""What every reranker does to its hits: distinct documents, new scores, ranks 1..n."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence

import attrs
from aieng_hookspecs.types import Document, Hit

__all__ = ["distinct", "finite", "keep", "passage_text", "ranked", "sort_by_score"]


def distinct(hits: Iterable[Hit]) -> list[Hit]:
    """The hits with each document once (its first, best-ranked occurrence kept)."""
    seen: set[str] = set()
    kept: list[Hit] = []
    for hit in hits:
        if hit.document.id not in seen:
            seen.add(hit.document.id)
            kept.append(hit)
    return kept


def keep(k: int, option: int | None) -> int:
    """How many hits a reranker keeps: the stage's ``k``, lowered by the component's own."""
    return k if option is None else min(k, option)


def passage_text(document: Document) -> str:
    """The text a model reads for a document: the title says what a passage is about."""
    return f"{document.title}\n\n{document.text}" if document.title.strip() else document.text


def finite(score: float) -> float:
    """A score a :class:`Hit` accepts: NaN becomes the lowest float, infinities the
    largest ones (a broken model must not fail the run, nor win it)."""
    if math.isnan(score):
        return -sys.float_info.max
    return max(-sys.float_info.max, min(sys.float_info.max, score))


def ranked(pairs: Iterable[tuple[Hit, float]]) -> list[Hit]:
    """The hits in the given order with the given scores, ranked 1..n.

    The caller's order is kept; a score that would exceed the one before it (only a
    rounding slip can cause that) is lowered to it, so scores never increase.
    """
    out: list[Hit] = []
    previous = math.inf
    for rank, (hit, score) in enumerate(pairs, start=1):
        score = min(finite(score), previous)
        previous = score
        out.append(attrs.evolve(hit, score=score, rank=rank))
    return out


def sort_by_score(hits: Sequence[Hit], scores: Sequence[float], k: int) -> list[Hit]:
    """The best ``k`` hits by their new score, ranked 1..n; ties keep the incoming order."""
    if len(scores) != len(hits):
        raise ValueError(f"{len(scores)} scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: (-finite(float(scores[i])), i))
    return ranked((hits[i], float(scores[i])) for i in order[:k])
