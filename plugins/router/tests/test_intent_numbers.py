"""The intent router's numbers against a brute-force kNN written here: cosine by its
definition (math.fsum, math.sqrt), the k nearest with ties at the k-th by example order,
votes as summed similarities, the score as the winner's best similarity."""

from __future__ import annotations

import math

import numpy as np
from aieng_router import IntentClassifier
from hypothesis import assume, given
from hypothesis import strategies as st

_VECTOR = st.lists(st.integers(-5, 5), min_size=3, max_size=3)


def _cosine(a: list[int], b: list[int]) -> float:
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(x * x for x in b))
    return 0.0 if norm == 0 else math.fsum(x * y for x, y in zip(a, b, strict=True)) / norm


@given(rows=st.lists(st.tuples(_VECTOR, st.sampled_from("abc")), min_size=1, max_size=30),
       query=_VECTOR, k=st.integers(1, 8))
def test_rank_is_the_brute_force_knn_vote(rows: list[tuple[list[int], str]],
                                          query: list[int], k: int) -> None:
    """Votes and best similarities equal the brute force's (1e-9), labels in its order."""
    assume(any(query))
    vectors = [vector for vector, _ in rows]
    labels = [label for _, label in rows]
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    ranked = IntentClassifier(labels, unit, k).rank([float(x) for x in query])
    sims = [_cosine(vector, query) for vector in vectors]
    near = sorted(range(len(rows)), key=lambda i: (-sims[i], i))[:k]
    if len(rows) > k:  # a near-tie at the k-th is decided by rounding: not this test's
        kth, nxt = sims[near[-1]], sorted(sims, reverse=True)[k]
        assume(kth - nxt > 1e-9)
    votes: dict[str, float] = {}
    for i in near:
        votes[labels[i]] = votes.get(labels[i], 0.0) + sims[i]
    got = {label: vote for label, vote, _ in ranked if vote != 0.0 or label in votes}
    assert got.keys() == votes.keys()
    for label, vote in votes.items():
        assert math.isclose(got[label], vote, abs_tol=1e-9)
    for label, _, best in ranked:
        assert math.isclose(best, max(s for s, lab in zip(sims, labels, strict=True)
                                      if lab == label), abs_tol=1e-9)
    assert {label for label, _, _ in ranked} == set(labels)
    top = max(votes.values())
    assert math.isclose(votes[ranked[0][0]], top, abs_tol=1e-9)
