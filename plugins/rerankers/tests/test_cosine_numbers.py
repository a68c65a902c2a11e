"""The cosines ``mmr`` and ``embedding`` report: in -1..1, the same for a hit alone as in
a batch, whatever its place, so equal texts tie and ties keep the incoming order.

A matrix product (BLAS) sums a row's products in an order that depends on the row's place
in the matrix: two equal vectors, or one vector alone and in a batch, could get cosines a
few ulps apart, and one identical to the query more than 1.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import pytest
from aieng_hookspecs.types import Document, Hit, Query
from aieng_rerankers import EmbeddingOptions, EmbeddingReranker, MMROptions, MMRReranker
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

DIM = 384


def vector(text: str) -> list[float]:
    """A random vector of ``DIM`` dimensions, fixed by the text (the same in any process)."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return [float(x) for x in np.random.default_rng(seed).standard_normal(DIM)]


def embed(texts: Sequence[str], model: str | None) -> list[list[float]]:
    """The embedder of these tests: :func:`vector` of each text."""
    return [vector(text) for text in texts]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine by its definition, with exactly rounded sums."""
    dot = math.fsum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b)))


def corpus(seed: int, count: int, shared: list[bool]) -> tuple[str, list[Hit]]:
    """``count`` hits ``d0..``; those marked in ``shared`` all hold one text (the same page
    under several ids), the others texts of their own."""
    same = f"shared page {seed}"
    hits = [Hit(Document(f"d{i}", same if shared[i] else f"page {seed} {i}"),
                score=1.0, rank=i + 1) for i in range(count)]
    return same, hits


cases = st.integers(1, 24).flatmap(lambda n: st.tuples(
    st.integers(0, 10**6), st.just(n), st.lists(st.booleans(), min_size=n, max_size=n),
    st.booleans()))


@settings(max_examples=30, deadline=None)
@given(cases)
async def test_embedding_cosines_do_not_depend_on_the_batch(
        case: tuple[int, int, list[bool], bool]) -> None:
    """Each hit's score is its cosine with the query (within 1e-12 of the definition), in
    -1..1, exactly what the hit gets reranked alone; equal texts score equally and keep
    their incoming order."""
    seed, count, shared, query_is_shared = case
    same, hits = corpus(seed, count, shared)
    query = Query(same if query_is_shared else f"query {seed}")
    reranker = EmbeddingReranker(EmbeddingOptions(cache_size=0), embedder=embed)
    out = await reranker.aieng_rerank(query, hits, count)
    for hit in out:
        assert -1.0 <= hit.score <= 1.0
        assert hit.score == pytest.approx(
            cosine(vector(query.text), vector(hit.document.text)), abs=1e-12)
        alone = await reranker.aieng_rerank(query, [hit], 1)
        assert alone[0].score == hit.score
    equal = [int(h.document.id[1:]) for h in out if h.document.text == same]
    assert equal == sorted(equal)
    assert len({h.score for h in out if h.document.text == same}) <= 1


@settings(max_examples=30, deadline=None)
@given(cases, st.sampled_from([1.0, 0.5]))
async def test_mmr_breaks_ties_between_equal_texts_by_incoming_order(
        case: tuple[int, int, list[bool], bool], lambda_: float) -> None:
    """Hits holding one text are picked in their incoming order, whatever their places;
    the first pick scores ``lambda_`` times its cosine, at most ``lambda_``."""
    seed, count, shared, query_is_shared = case
    same, hits = corpus(seed, count, shared)
    query = Query(same if query_is_shared else f"query {seed}")
    reranker = MMRReranker(MMROptions(lambda_=lambda_, cache_size=0), embedder=embed)
    out = await reranker.aieng_rerank(query, hits, count)
    equal = [int(h.document.id[1:]) for h in out if h.document.text == same]
    assert equal == sorted(equal)
    best = max(cosine(vector(query.text), vector(h.document.text)) for h in hits)
    assert out[0].score == pytest.approx(lambda_ * best, abs=1e-12)
    assert out[0].score <= lambda_
