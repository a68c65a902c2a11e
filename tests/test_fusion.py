"""Reciprocal rank fusion, the kernel's default: order-free and well-formed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import reciprocal_rank_fusion
from aieng_core.testing.strategies import runs
from aieng_hookspecs.types import Hit


def _key(hits: list[Hit]) -> list[tuple[str, float, int]]:
    return [(h.document.id, h.score, h.rank) for h in hits]


@given(runs(), st.randoms(use_true_random=False), st.integers(1, 200))
def test_fusion_does_not_depend_on_the_order_of_runs(
        ranked: list[list[Hit]], rnd: object, k: int) -> None:
    """Shuffling the input runs gives exactly the same fused ranking, scores included."""
    shuffled = list(ranked)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert _key(reciprocal_rank_fusion(ranked, k=k)) == _key(
        reciprocal_rank_fusion(shuffled, k=k))


@given(runs(), st.integers(1, 200))
def test_fused_ranking_is_well_formed(ranked: list[list[Hit]], k: int) -> None:
    """Each document once, ranks 1..n, scores not increasing, every input document kept."""
    fused = reciprocal_rank_fusion(ranked, k=k)
    ids = [h.document.id for h in fused]
    assert len(ids) == len(set(ids))
    assert ids_all(ranked) == set(ids)
    assert [h.rank for h in fused] == list(range(1, len(fused) + 1))
    assert all(a.score >= b.score for a, b in zip(fused, fused[1:]))


def ids_all(ranked: list[list[Hit]]) -> set[str]:
    return {h.document.id for run in ranked for h in run}


def test_rrf_scores_by_position() -> None:
    """A document first in two lists beats one first in a single list; k must be >= 1."""
    from aieng_hookspecs.types import Document

    def hit(doc_id: str, rank: int) -> Hit:
        return Hit(document=Document(id=doc_id, text=doc_id), score=1.0, rank=rank)

    fused = reciprocal_rank_fusion([[hit("a", 1), hit("b", 2)], [hit("a", 1), hit("c", 2)]],
                                   k=60)
    assert [h.document.id for h in fused] == ["a", "b", "c"]
    assert fused[0].score == pytest.approx(2 / 61)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([], k=0)
