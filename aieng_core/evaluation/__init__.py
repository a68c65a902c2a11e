"""Evaluation helpers the kernel needs itself: retrieval metrics and BEIR collections."""

from ._beir import BeirCollection, iter_corpus, load_beir
from ._retrieval import RetrievalScores, mrr_at_k, ndcg_at_k, recall_at_k, score_runs

__all__ = [
    "BeirCollection",
    "RetrievalScores",
    "iter_corpus",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "score_runs",
]
