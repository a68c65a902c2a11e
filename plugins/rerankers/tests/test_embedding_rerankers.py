"""``mmr`` and ``embedding``: the orders and scores they give, over deterministic vectors."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Document, Hit, Query
from aieng_rerankers import EmbeddingOptions, EmbeddingReranker, MMROptions, MMRReranker, mmr_order
from hypothesis import given, settings
from hypothesis import strategies as st
from rerankers_doubles import HashingEmbedder, hits_of

pytestmark = pytest.mark.anyio

PASTA = "cook pasta in boiling salted water for ten minutes"
PASTA_AGAIN = "cook pasta in boiling salted water for minutes"
PARIS = "paris is the capital city of france on the seine"


def table(vectors: dict[str, Sequence[float]]) -> Any:
    """An async embedder answering from ``{text: vector}`` (unknown text: zeros)."""

    async def embed(texts: Sequence[str], model: str | None) -> list[Sequence[float]]:
        return [vectors.get(text, (0.0, 0.0)) for text in texts]

    return embed


# -- mmr_order ---------------------------------------------------------------------------


def test_lambda_one_is_relevance_order() -> None:
    """At λ = 1 MMR ranks by relevance alone (ties: the earlier candidate first)."""
    relevance = np.array([0.2, 0.9, 0.5, 0.9])
    order = mmr_order(relevance, np.ones((4, 4)), 1.0, 4)
    assert [i for i, _ in order] == [1, 3, 2, 0]
    assert [v for _, v in order] == [0.9, 0.9, 0.5, 0.2]


def test_a_near_duplicate_waits_behind_a_different_passage() -> None:
    """A candidate almost identical to a pick falls behind a less relevant, different one."""
    relevance = np.array([1.0, 0.9, 0.5])
    similarity = np.array([[1.0, 0.95, 0.0], [0.95, 1.0, 0.1], [0.0, 0.1, 1.0]])
    order = mmr_order(relevance, similarity, 0.5, 3)
    assert [i for i, _ in order] == [0, 2, 1]
    assert order[0][1] == pytest.approx(0.5)
    assert order[1][1] == pytest.approx(0.25)
    assert order[2][1] == pytest.approx(0.5 * 0.9 - 0.5 * 0.95)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=9).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-1, 1), min_size=n, max_size=n),
    st.lists(st.floats(-1, 1), min_size=n * n, max_size=n * n),
    st.floats(0, 1), st.integers(min_value=1, max_value=12))))
def test_mmr_values_never_increase(case: tuple[list[float], list[float], float, int]) -> None:
    """Whatever the relevances, similarities and λ, picks are distinct, at most k, and
    their MMR values never increase (so they can serve as scores)."""
    relevance, flat, lambda_, k = case
    n = len(relevance)
    similarity = np.array(flat).reshape(n, n)
    similarity = (similarity + similarity.T) / 2
    order = mmr_order(np.array(relevance), similarity, lambda_, k)
    picked = [i for i, _ in order]
    assert len(picked) == min(n, k) and len(set(picked)) == len(picked)
    values = [v for _, v in order]
    assert all(a >= b for a, b in itertools.pairwise(values))


# -- mmr ---------------------------------------------------------------------------------


async def test_mmr_diversifies_near_duplicates(hashing_embedder: HashingEmbedder) -> None:
    """With relevance from the incoming scores, a near-duplicate of the best hit is moved
    below a different passage; scores are the MMR values, ranks 1..n, sources kept."""
    hits = hits_of(PASTA, PASTA_AGAIN, PARIS)
    reranker = MMRReranker(MMROptions(lambda_=0.5, relevance="score"),
                           embedder=hashing_embedder.aieng_embed)
    out = await reranker.aieng_rerank(Query("pasta"), hits, 3)
    assert [h.document.id for h in out] == ["d0", "d2", "d1"]
    assert [h.rank for h in out] == [1, 2, 3]
    assert out[0].score == pytest.approx(0.5)  # λ · normalized score 1, nothing picked yet
    assert all(h.source == "memory" for h in out)
    assert hashing_embedder.calls == [[PASTA, PASTA_AGAIN, PARIS]]  # no query embedding


async def test_mmr_lambda_one_keeps_cosine_order(hashing_embedder: HashingEmbedder) -> None:
    """At λ = 1 with cosine relevance, MMR is the embedding reranker's order; the query
    and the hits are embedded in one call."""
    hits = hits_of(PARIS, PASTA_AGAIN, PASTA)
    query = Query("cook pasta for ten minutes")
    mmr = MMRReranker(MMROptions(lambda_=1.0), embedder=hashing_embedder.aieng_embed)
    cosine = EmbeddingReranker(embedder=hashing_embedder.aieng_embed)
    by_mmr = await mmr.aieng_rerank(query, hits, 3)
    by_cosine = await cosine.aieng_rerank(query, hits, 3)
    assert [h.document.id for h in by_mmr] == [h.document.id for h in by_cosine]
    assert [h.score for h in by_mmr] == pytest.approx([h.score for h in by_cosine])
    assert hashing_embedder.calls[0][0] == query.text


async def test_mmr_option_k_lowers_the_stage_k(hashing_embedder: HashingEmbedder) -> None:
    """The option ``k`` caps what the stage's ``k`` allows, never raises it."""
    hits = hits_of(PASTA, PARIS, PASTA_AGAIN, "bread flour yeast")
    capped = MMRReranker(MMROptions(k=2), embedder=hashing_embedder.aieng_embed)
    assert len(await capped.aieng_rerank(Query("pasta"), hits, 3)) == 2
    assert len(await capped.aieng_rerank(Query("pasta"), hits, 1)) == 1


def _random_table(count: int, dim: int = 16, seed: int = 0) -> tuple[Any, list[Hit]]:
    """An embedder answering a fixed random matrix (the query's row first), and ``count``
    hits of distinct texts. The matrix exists before the embedder is called."""
    matrix = np.random.default_rng(seed).normal(size=(count + 1, dim))
    hits = [Hit(document=Document(id=f"d{i}", text=f"passage {i}"), score=1.0 / (i + 1),
                rank=i + 1, source="memory") for i in range(count)]

    async def embed(texts: Sequence[str], model: str | None) -> Any:
        assert len(texts) == count + 1
        return matrix

    return embed, hits


async def test_mmr_is_mmr_order_over_the_full_similarity_matrix() -> None:
    """The reranker's picks and scores are those of :func:`mmr_order` given the whole
    cosine matrix of the candidates (which the reranker itself does not build)."""
    embed, hits = _random_table(60, seed=3)
    out = await MMRReranker(MMROptions(lambda_=0.6, cache_size=0),
                            embedder=embed).aieng_rerank(Query("q"), hits, 12)
    rows = await embed(["q", *(h.document.text for h in hits)], None)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    expected = mmr_order(unit[1:] @ unit[0], unit[1:] @ unit[1:].T, 0.6, 12)
    assert [h.document.id for h in out] == [f"d{i}" for i, _ in expected]
    assert [h.score for h in out] == pytest.approx([value for _, value in expected])


async def test_mmr_memory_grows_linearly_with_the_candidates() -> None:
    """Picking k of n candidates needs the similarities of the k picks, not the n × n
    matrix (800 MB for 10,000 candidates): the peak for 4n candidates stays within about
    4 times that of n (the matrix would make it 16), and below the 4n matrix's size."""
    import tracemalloc

    peaks: list[int] = []
    for count in (500, 2000):
        embed, hits = _random_table(count)
        reranker = MMRReranker(MMROptions(cache_size=0), embedder=embed)
        tracemalloc.start()
        try:
            await reranker.aieng_rerank(Query("q"), hits, 10)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 8 * peaks[0]
    assert peaks[1] < 2000 * 2000 * 8 // 4


# -- embedding ---------------------------------------------------------------------------


async def test_embedding_scores_are_cosines() -> None:
    """Each hit's new score is the cosine of its embedding with the query's; the result
    is sorted by it, and an async embedder is awaited."""
    vectors = {"q": (1.0, 0.0), "a": (0.0, 1.0), "b": (1.0, 1.0), "c": (3.0, 0.1)}
    hits = hits_of("a", "b", "c")
    out = await EmbeddingReranker(embedder=table(vectors)).aieng_rerank(Query("q"), hits, 5)
    assert [h.document.id for h in out] == ["d2", "d1", "d0"]
    assert [h.score for h in out] == pytest.approx(
        [3.0 / math.hypot(3.0, 0.1), 1 / math.sqrt(2), 0.0])


async def test_embedding_ties_keep_the_incoming_order() -> None:
    """Hits with equal cosines (equal texts, zero vectors) stay in the incoming order."""
    hits = hits_of("same", "other", "same")
    vectors = {"q": (1.0, 0.0), "same": (1.0, 1.0), "other": (0.0, 0.0)}
    out = await EmbeddingReranker(embedder=table(vectors)).aieng_rerank(Query("q"), hits, 3)
    assert [h.document.id for h in out] == ["d0", "d2", "d1"]


async def test_embedding_keeps_each_document_once(hashing_embedder: HashingEmbedder) -> None:
    """A document given twice comes out once, and is embedded once."""
    doc = Document("dup", "cook pasta")
    hits = [Hit(doc, 2.0, 1), Hit(Document("x", PARIS), 1.5, 2), Hit(doc, 1.0, 3)]
    reranker = EmbeddingReranker(EmbeddingOptions(k=5), embedder=hashing_embedder.aieng_embed)
    out = await reranker.aieng_rerank(Query("pasta"), hits, 5)
    assert sorted(h.document.id for h in out) == ["dup", "x"]
    assert len(hashing_embedder.calls[0]) == 3  # the query and two documents


async def test_titles_are_embedded_with_the_text(hashing_embedder: HashingEmbedder) -> None:
    """A hit's title is part of the text embedded for it."""
    hits = [Hit(Document("t", "boil it", title="Pasta"), 1.0, 1)]
    await EmbeddingReranker(embedder=hashing_embedder.aieng_embed).aieng_rerank(
        Query("q"), hits, 1)
    assert hashing_embedder.calls == [["q", "Pasta\n\nboil it"]]


async def test_wrong_vector_count_is_an_error() -> None:
    """An embedder answering with too few vectors fails the rerank, saying so."""

    def short(texts: Sequence[str], model: str | None) -> list[list[float]]:
        return [[1.0]]

    with pytest.raises(ValueError, match="1 vectors for 3 texts"):
        await EmbeddingReranker(embedder=short).aieng_rerank(Query("q"), hits_of("a", "b"), 2)


async def test_no_embedder_outside_a_pipeline_is_an_error() -> None:
    """Without an injected embedder and before its pipeline opens, reranking says how to
    give it one; with no hits it needs none."""
    reranker = MMRReranker()
    assert await reranker.aieng_rerank(Query("q"), [], 3) == []
    with pytest.raises(RuntimeError, match="no embedder"):
        await reranker.aieng_rerank(Query("q"), hits_of("a"), 3)
