"""Retrieval metrics over one ranking: nDCG@k, MRR@k, Recall@k, average precision (MAP).

Definitions are trec_eval's / BEIR's: graded relevance with linear gains for nDCG
(``rel / log2(rank + 1)``), a document repeated in a ranking counts once at its best rank,
and a query without a relevant document scores 0. They agree with the kernel's
``aieng_core.evaluation`` functions (a property test checks it).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["average_precision", "mean_average_precision", "mrr", "ndcg", "recall"]

Qrels = Mapping[str, int]


def _unique(ranked: Sequence[str], k: int | None) -> list[str]:
    if isinstance(ranked, str):
        raise TypeError("the ranking must be a list of document ids, not a string")
    # numpy's integers too (numbers.Integral), which a slice takes as they are
    if k is not None and (not isinstance(k, numbers.Integral) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    unique = list(dict.fromkeys(ranked))
    return unique if k is None else unique[:k]


def ndcg(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """nDCG@k with linear gains; 0 when no document is relevant.

    :param ranked: document ids, best first.
    :param qrels: document id -> graded relevance (0, negative or absent: not relevant).
    :param k: the cut-off.
    """
    dcg = math.fsum(max(qrels.get(doc, 0), 0) / math.log2(rank + 1)
                    for rank, doc in enumerate(_unique(ranked, k), start=1))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = math.fsum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr(ranked: Sequence[str], qrels: Qrels, k: int | None = 10) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (all when
    ``None``), else 0."""
    for rank, doc in enumerate(_unique(ranked, k), start=1):
        if qrels.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall(ranked: Sequence[str], qrels: Qrels, k: int | None = 100) -> float:
    """Share of the relevant documents found in the top ``k``; 0 when none is relevant."""
    relevant = {doc for doc, grade in qrels.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranked, k))) / len(relevant)


def average_precision(ranked: Sequence[str], qrels: Qrels, k: int | None = None) -> float:
    """Average precision (trec_eval's ``map`` per query): the mean, over all relevant
    documents, of the precision at the rank each is retrieved (0 for those not retrieved
    within ``k``); 0 when none is relevant."""
    relevant = sum(1 for grade in qrels.values() if grade > 0)
    if not relevant:
        return 0.0
    found = 0
    total = 0.0
    for rank, doc in enumerate(_unique(ranked, k), start=1):
        if qrels.get(doc, 0) > 0:
            found += 1
            total += found / rank
    return total / relevant


def mean_average_precision(runs: Mapping[str, Sequence[str]],
                           qrels: Mapping[str, Qrels], k: int | None = None) -> float:
    """MAP: :func:`average_precision` averaged over the queries with a relevant document
    (such a query missing from ``runs`` scores 0, as with trec_eval's ``-c``).

    A query whose judgements are all 0 or negative is left out, as the kernel's
    ``score_runs`` does; trec_eval (pytrec_eval, BEIR) counts it as 0 in its mean, which
    is therefore this value x R / Q (R queries with a relevant document, Q judged ones).
    """
    judged: Iterable[str] = [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]
    scores = [average_precision(runs.get(q, ()), qrels[q], k) for q in judged]
    return math.fsum(scores) / len(scores) if scores else 0.0
