"""Reciprocal rank fusion, the kernel's default: order-free and well-formed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import reciprocal_rank_fusion
from aieng_core.testing.strategies import runs
from aieng_hookspecs.types import Document, Hit


def _key(hits: list[Hit]) -> list[tuple[Document, float, int]]:
    return [(h.document, h.score, h.rank) for h in hits]


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


@pytest.mark.parametrize("differ", ["title", "metadata"])
def test_the_version_kept_does_not_depend_on_the_order_of_runs(differ: str) -> None:
    """Two runs carry versions of one document differing only in title (or metadata) at
    the same position: the same version is kept whichever run comes first (the title and
    metadata were left out of the comparison, so the first run's won)."""
    a = Document(id="d", text="t", **({"title": "A"} if differ == "title" else
                                      {"metadata": {"v": 1}}))
    b = Document(id="d", text="t", **({"title": "B"} if differ == "title" else
                                      {"metadata": {"v": 2}}))
    one, two = [Hit(document=a, score=1.0, rank=1)], [Hit(document=b, score=1.0, rank=1)]
    assert _key(reciprocal_rank_fusion([one, two])) == _key(reciprocal_rank_fusion([two, one]))


def test_versions_with_metadata_of_any_shape_are_ordered() -> None:
    """Versions alike but for metadata whose nested keys mix types (or are tuples) are
    still ordered, whichever run comes first: json.dumps(sort_keys=True) raised TypeError
    comparing their keys."""
    a = Document(id="d", text="t", metadata={"m": {1: "x", "b": 2}})
    b = Document(id="d", text="t", metadata={"m": {(0, 1): "y"}})
    one, two = [Hit(document=a, score=1.0, rank=1)], [Hit(document=b, score=1.0, rank=1)]
    assert _key(reciprocal_rank_fusion([one, two])) == _key(reciprocal_rank_fusion([two, one]))


def test_canonical_text_ignores_key_order_and_never_fails() -> None:
    """Equal values give one text whatever their mappings' key order; unequal ones differ;
    keys of mixed types, tuples and sets are written out."""
    from aieng_hookspecs.types import canonical_text

    assert canonical_text({"a": 1, "b": [1, {"y": 2, "x": 1}]}) == canonical_text(
        {"b": [1, {"x": 1, "y": 2}], "a": 1})
    assert canonical_text({"a": 1}) != canonical_text({"a": "1"})
    assert canonical_text({1: {2, 1}, "k": (0,)}) == canonical_text({"k": (0,), 1: {1, 2}})
