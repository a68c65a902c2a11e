"""Every fuser agrees with its textbook formula, computed here naively in exact arithmetic.

The fusers normalize in floating point (scaled by each run's largest magnitude, summed
with ``math.fsum``); the references below use :class:`fractions.Fraction` on the raw
scores and the formulas as the README states them, over runs as they come: of different
lengths, empty, with negative and extreme scores, ties, and a document repeated inside a
run (counted once, at its first position).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

from aieng_fusion import convex_fusion, dbsf_fusion
from aieng_hookspecs.types import Document, Hit
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import reciprocal_rank_fusion

PROPERTY = settings(max_examples=150, deadline=None)
_POOL = [Document(f"d{i}", f"text {i}") for i in range(8)]
# Ties, signs, zero, magnitudes near the float limits and the smallest subnormal.
_SCORES = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e300, -1e300, 5e-324, 3.0]),
                    st.floats(-1e6, 1e6, allow_nan=False))


@st.composite
def runs(draw: st.DrawFn) -> list[list[Hit]]:
    """Zero to four runs of 0..7 hits over a shared pool, scores not increasing, dense
    (``vectors``) or not; a document may repeat inside a run."""
    result = []
    for _ in range(draw(st.integers(0, 4))):
        docs = draw(st.lists(st.sampled_from(_POOL), max_size=7))
        values = sorted(draw(st.lists(_SCORES, min_size=len(docs), max_size=len(docs))),
                        reverse=True)
        source = draw(st.sampled_from(["vectors", "bm25", "splade"]))
        result.append([Hit(doc, score=value, rank=rank, source=source)
                       for rank, (doc, value) in enumerate(zip(docs, values), start=1)])
    return result


def first_seen(run: Sequence[Hit]) -> list[tuple[str, Fraction, int]]:
    """Each document of a run once: id, exact score, 1-based position of its first hit."""
    seen: dict[str, tuple[str, Fraction, int]] = {}
    for position, hit in enumerate(run, start=1):
        seen.setdefault(hit.document.id, (hit.document.id, Fraction(hit.score), position))
    return list(seen.values())


def add(totals: dict[str, Fraction], doc_id: str, part: Fraction) -> None:
    totals[doc_id] = totals.get(doc_id, Fraction(0)) + part


def reference_convex(runs: Sequence[Sequence[Hit]], alpha: float,
                     dense: Sequence[str]) -> dict[str, Fraction]:
    """Min-max per run (all equal: 1), dense runs sharing ``alpha``, the others the rest,
    one kind alone taking all the weight; a missing document adds 0."""
    present = [run for run in runs if run]
    dense_count = sum(run[0].source in dense for run in present)
    other_count = len(present) - dense_count
    totals: dict[str, Fraction] = {}
    for run in runs:
        for doc_id, _, _ in first_seen(run):
            add(totals, doc_id, Fraction(0))
    for run in present:
        if dense_count and other_count:
            weight = (Fraction(alpha) / dense_count if run[0].source in dense
                      else (1 - Fraction(alpha)) / other_count)
        else:
            weight = Fraction(1, len(present))
        entries = first_seen(run)
        low, high = min(s for _, s, _ in entries), max(s for _, s, _ in entries)
        for doc_id, score, _ in entries:
            add(totals, doc_id, weight * (1 if high == low else (score - low) / (high - low)))
    return totals


def reference_dbsf(runs: Sequence[Sequence[Hit]]) -> dict[str, float]:
    """Per run, ``(score - (mean - 3 std)) / (6 std)`` clamped to [0, 1] with the population
    standard deviation (all equal: 0.5), summed over the runs."""
    totals: dict[str, float] = {}
    for run in runs:
        entries = first_seen(run)
        if not entries:
            continue
        peak = max(abs(s) for _, s, _ in entries)
        values = [s / peak if peak else Fraction(0) for _, s, _ in entries]  # scale-free
        mean = sum(values, Fraction(0)) / len(values)
        variance = sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values)
        std = math.sqrt(variance)
        for (doc_id, _, _), value in zip(entries, values, strict=True):
            part = 0.5 if variance == 0 else min(1.0, max(
                0.0, float(value - mean) / (6.0 * std) + 0.5))
            totals[doc_id] = totals.get(doc_id, 0.0) + part
    return totals


def reference_rrf(runs: Sequence[Sequence[Hit]], k: int) -> dict[str, Fraction]:
    """``sum(1 / (k + position))`` over the runs holding the document."""
    totals: dict[str, Fraction] = {}
    for run in runs:
        for doc_id, _, position in first_seen(run):
            add(totals, doc_id, Fraction(1, k + position))
    return totals


def agrees(fused: list[Hit], expected: dict[str, Fraction] | dict[str, float],
           tolerance: float) -> None:
    """The fused list holds the expected documents with their scores (within
    ``tolerance``), ordered by them: a document fused above another never has a reference
    score lower by more than the tolerance."""
    got = {hit.document.id: hit.score for hit in fused}
    assert sorted(got) == sorted(expected) and len(got) == len(fused)
    for doc_id, score in got.items():
        assert math.isclose(score, float(expected[doc_id]), rel_tol=1e-9,
                            abs_tol=tolerance), (doc_id, score, float(expected[doc_id]))
    for above, below in itertools.pairwise(fused):
        assert float(expected[above.document.id]) >= \
            float(expected[below.document.id]) - tolerance


@PROPERTY
@given(runs=runs(), alpha=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_convex_is_the_weighted_sum_of_min_max_scores(runs: list[list[Hit]],
                                                      alpha: float) -> None:
    """``convex`` scores are the reference convex combination of min-max scores."""
    fused = convex_fusion(runs, alpha=alpha, dense_sources=("vectors",))
    agrees(fused, reference_convex(runs, alpha, ("vectors",)), 1e-12)


@PROPERTY
@given(runs=runs())
def test_dbsf_is_the_sum_of_three_sigma_scores(runs: list[list[Hit]]) -> None:
    """``dbsf`` scores are the reference sums of mean ± 3 std normalized scores."""
    agrees(dbsf_fusion(runs), reference_dbsf(runs), 1e-9)


@PROPERTY
@given(runs=runs(), k=st.sampled_from([1, 2, 60, 1000]))
def test_rrf_is_the_sum_of_reciprocal_ranks(runs: list[list[Hit]], k: int) -> None:
    """The kernel's RRF scores are ``sum(1 / (k + position))``, by position in the run
    (not ``Hit.rank``), each document once per run."""
    agrees(reciprocal_rank_fusion(runs, k=k), reference_rrf(runs, k), 1e-15)


def test_the_references_on_a_worked_case() -> None:
    """The references themselves, on runs of different lengths with a negative score and
    a tie: hand-computed values."""
    dense = [Hit(_POOL[0], 2.0, 1, "vectors"), Hit(_POOL[1], 0.0, 2, "vectors"),
             Hit(_POOL[2], -2.0, 3, "vectors")]
    lexical = [Hit(_POOL[1], 5.0, 1, "bm25"), Hit(_POOL[3], 5.0, 2, "bm25")]
    convex = reference_convex([dense, lexical], 0.5, ("vectors",))
    assert convex == {"d0": Fraction(1, 2), "d1": Fraction(3, 4), "d2": 0,
                      "d3": Fraction(1, 2)}
    rrf = reference_rrf([dense, lexical], 60)
    assert rrf["d1"] == Fraction(1, 62) + Fraction(1, 61)
    dbsf = reference_dbsf([dense, lexical])
    # The dense run scaled is [1, 0, -1]: mean 0, std sqrt(2/3); the tied run maps to 0.5.
    assert dbsf["d1"] == 0.5 + 0.5 and dbsf["d3"] == 0.5
    assert math.isclose(dbsf["d0"], 0.5 + 1 / (6 * math.sqrt(2 / 3)))
