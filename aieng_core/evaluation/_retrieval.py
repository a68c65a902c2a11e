"""Retrieval metrics with graded relevance (the definitions BEIR / trec_eval use)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs

__all__ = ["RetrievalScores", "mrr_at_k", "ndcg_at_k", "recall_at_k", "score_runs"]

Qrels = Mapping[str, int]


def ndcg_at_k(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """nDCG@k with linear gains ``rel / log2(rank + 1)``; 0 when nothing is relevant.

    :param ranked: document ids, best first (duplicates count once, at their best rank).
    :param qrels: document id -> graded relevance (0 or absent: not relevant).
    """
    seen: set[str] = set()
    dcg = 0.0
    rank = 0
    for doc_id in ranked:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        rank += 1
        if rank > k:
            break
        dcg += max(qrels.get(doc_id, 0), 0) / math.log2(rank + 1)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = math.fsum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], qrels: Qrels, k: int = 100) -> float:
    """Share of the relevant documents found in the top k; 0 when nothing is relevant."""
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(list(dict.fromkeys(ranked))[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    for rank, doc_id in enumerate(list(dict.fromkeys(ranked))[:k], start=1):
        if qrels.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


@attrs.frozen
class RetrievalScores:
    """Mean metrics over the queries that have judgements."""

    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int

    def to_json(self) -> dict[str, float | int]:
        """The JSON form ``aieng bench retrieval --json`` prints."""
        return {"ndcg@10": self.ndcg_at_10, "recall@100": self.recall_at_100,
                "mrr@10": self.mrr_at_10, "queries": self.queries}


def score_runs(runs: Mapping[str, Sequence[str]],
               qrels: Mapping[str, Qrels]) -> RetrievalScores:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries.

    A judged query missing from ``runs`` counts as an empty ranking (scores 0), so a
    retriever cannot look better by skipping hard queries.
    """
    judged = [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]
    if not judged:
        return RetrievalScores(0.0, 0.0, 0.0, 0)
    n = len(judged)
    return RetrievalScores(
        ndcg_at_10=math.fsum(ndcg_at_k(runs.get(q, ()), qrels[q], 10) for q in judged) / n,
        recall_at_100=math.fsum(recall_at_k(runs.get(q, ()), qrels[q], 100)
                                for q in judged) / n,
        mrr_at_10=math.fsum(mrr_at_k(runs.get(q, ()), qrels[q], 10) for q in judged) / n,
        queries=n,
    )
