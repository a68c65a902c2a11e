"""The cache of unit vectors of ``mmr`` and ``embedding``: same results with it as
without, each text embedded once while it stays, bounded, safe under concurrency, and
never serving one embedding source's vectors to another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from aieng_hookspecs.types import Document, Hit, Query
from aieng_rerankers import EmbeddingOptions, EmbeddingReranker, MMROptions, MMRReranker
from hypothesis import given, settings
from hypothesis import strategies as st
from rerankers_doubles import HashingEmbedder, hits_of

pytestmark = pytest.mark.anyio

WORDS = ["pasta", "water", "salt", "paris", "seine", "bread", "oven", "rank", "fusion",
         "vector", "index", "query"]
PASSAGES = [
    "cook pasta in boiling salted water",
    "cook pasta in boiling water",
    "paris is on the seine",
    "bake bread in a hot oven",
    "reciprocal rank fusion of retrievers",
    "a dense vector index",
]


def outcome(hits: Sequence[Hit]) -> list[tuple[str, float, int]]:
    """What a rerank returns, exactly: ids, scores and ranks."""
    return [(h.document.id, h.score, h.rank) for h in hits]


def make(kind: str, embedder: HashingEmbedder, cache_size: int) -> Any:
    """A reranker of ``kind`` (``mmr``, ``mmr-score`` or ``embedding``) over ``embedder``."""
    if kind == "embedding":
        return EmbeddingReranker(EmbeddingOptions(cache_size=cache_size),
                                 embedder=embedder.aieng_embed)
    relevance = "score" if kind == "mmr-score" else "cosine"
    return MMRReranker(MMROptions(lambda_=0.6, relevance=relevance, cache_size=cache_size),
                       embedder=embedder.aieng_embed)


@pytest.mark.parametrize("kind", ["mmr", "mmr-score", "embedding"])
async def test_the_cache_changes_no_order_and_no_score(kind: str) -> None:
    """Query after query over overlapping hits, a reranker with its cache and one without
    return the same ids in the same order with exactly the same scores."""
    cached = make(kind, HashingEmbedder(), 4096)
    uncached = make(kind, HashingEmbedder(), 0)
    queries = ["pasta water", "paris", "pasta water", "vector index rank", "oven bread"]
    for step, text in enumerate(queries):
        hits = hits_of(*PASSAGES[step % 3:], *PASSAGES[: step % 3])
        with_cache = await cached.aieng_rerank(Query(text), hits, 4)
        without = await uncached.aieng_rerank(Query(text), hits, 4)
        assert outcome(with_cache) == outcome(without)


async def test_a_second_query_embeds_only_the_new_texts() -> None:
    """The first rerank embeds the query and every hit; the next one, whose hits overlap,
    embeds only its query and the hits not seen before, in one call."""
    embedder = HashingEmbedder()
    reranker = MMRReranker(embedder=embedder.aieng_embed)
    await reranker.aieng_rerank(Query("pasta"), hits_of(*PASSAGES[:4]), 3)
    assert embedder.calls == [["pasta", *PASSAGES[:4]]]
    await reranker.aieng_rerank(Query("bread"), hits_of(*PASSAGES[2:]), 3)
    assert embedder.calls[1] == ["bread", *PASSAGES[4:]]
    await reranker.aieng_rerank(Query("pasta"), hits_of(*PASSAGES[1:5]), 3)
    assert len(embedder.calls) == 2  # everything known: no embedder call at all


async def test_no_cache_embeds_everything_every_time() -> None:
    """``cache_size = 0`` turns the cache off: each rerank embeds the query and every hit."""
    embedder = HashingEmbedder()
    reranker = EmbeddingReranker(EmbeddingOptions(cache_size=0), embedder=embedder.aieng_embed)
    for _ in range(2):
        await reranker.aieng_rerank(Query("pasta"), hits_of(*PASSAGES[:3]), 3)
    assert embedder.calls == [["pasta", *PASSAGES[:3]]] * 2


async def test_equal_texts_are_embedded_once() -> None:
    """Two documents with the same text cost one embedding, and score the same."""
    embedder = HashingEmbedder()
    hits = [Hit(Document("a", "cook pasta"), 2.0, 1), Hit(Document("b", "cook pasta"), 1.0, 2)]
    out = await EmbeddingReranker(embedder=embedder.aieng_embed).aieng_rerank(
        Query("pasta"), hits, 2)
    assert embedder.calls == [["pasta", "cook pasta"]]
    assert [h.document.id for h in out] == ["a", "b"]
    assert out[0].score == out[1].score


async def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    """A cache of 3 vectors never holds more; the text used least recently goes first, so
    a text used again stays."""
    embedder = HashingEmbedder()
    reranker = MMRReranker(MMROptions(relevance="score", cache_size=3),
                           embedder=embedder.aieng_embed)
    cache = reranker._embeddings.cache
    await reranker.aieng_rerank(Query("q"), hits_of("a", "b", "c"), 3)
    await reranker.aieng_rerank(Query("q"), hits_of("a"), 3)  # "a" is now the most recent
    await reranker.aieng_rerank(Query("q"), hits_of("d"), 3)  # "b" goes
    assert len(cache) == 3
    embedder.calls.clear()
    await reranker.aieng_rerank(Query("q"), hits_of("a", "b", "c", "d"), 3)
    assert embedder.calls == [["b"]]
    assert len(cache) == 3
    # More texts in one rerank than the cache holds: all are used, the last 3 kept.
    many = [f"text {i}" for i in range(10)]
    out = await reranker.aieng_rerank(Query("q"), hits_of(*many), 10)
    assert len(out) == 10 and len(cache) == 3


async def test_concurrent_reranks_share_the_cache_safely() -> None:
    """Reranks running concurrently, each waiting inside its embedder, give the results
    they give one at a time, and the cache stays within its bound."""
    embedder = HashingEmbedder()

    async def slow(texts: Sequence[str], model: str | None) -> list[list[float]]:
        await anyio.sleep(0.001)
        return embedder.aieng_embed(texts, model)

    reference = MMRReranker(MMROptions(cache_size=0), embedder=embedder.aieng_embed)
    shared = MMRReranker(MMROptions(cache_size=4), embedder=slow)
    jobs = [(f"query {i % 3} pasta", hits_of(*PASSAGES[i % 4:], *PASSAGES[: i % 4]))
            for i in range(12)]
    expected = [outcome(await reference.aieng_rerank(Query(q), h, 4)) for q, h in jobs]
    got: dict[int, list[tuple[str, float, int]]] = {}

    async def one(index: int) -> None:
        query, hits = jobs[index]
        got[index] = outcome(await shared.aieng_rerank(Query(query), hits, 4))

    async with anyio.create_task_group() as group:
        for index in range(len(jobs)):
            group.start_soon(one, index)
    assert [got[i] for i in range(len(jobs))] == expected
    assert len(shared._embeddings.cache) <= 4


class FakeContext:
    """A pipeline context that embeds with its own hashing embedder."""

    def __init__(self, dim: int) -> None:
        self.embedder = HashingEmbedder(dim)

    async def embed(self, texts: Sequence[str], model: str | None = None) -> list[list[float]]:
        return self.embedder.aieng_embed(texts, model)


async def test_another_pipeline_never_gets_the_first_ones_vectors() -> None:
    """Opened in a second pipeline (another embedder, here of another size), the reranker
    embeds everything anew through it rather than serving the first one's vectors."""
    first, second = FakeContext(64), FakeContext(16)
    reranker = EmbeddingReranker()
    hits = hits_of(*PASSAGES[:3])
    reranker.aieng_pipeline_open(first)
    await reranker.aieng_rerank(Query("pasta"), hits, 3)
    reranker.aieng_pipeline_open(second)
    out = await reranker.aieng_rerank(Query("pasta"), hits, 3)
    assert second.embedder.calls == [["pasta", *PASSAGES[:3]]]
    alone = EmbeddingReranker(EmbeddingOptions(cache_size=0))
    alone.aieng_pipeline_open(FakeContext(16))
    assert outcome(out) == outcome(await alone.aieng_rerank(Query("pasta"), hits, 3))


async def test_a_failed_or_cancelled_embedding_caches_nothing() -> None:
    """An embedder that fails, or a rerank cancelled while it embeds, leaves no vector
    behind: the next rerank embeds every text."""
    embedder = HashingEmbedder()
    mode = {"now": "fail"}
    embedding = anyio.Event()

    async def flaky(texts: Sequence[str], model: str | None) -> list[list[float]]:
        if mode["now"] == "fail":
            raise ConnectionError("embedding server down")
        if mode["now"] == "hang":
            embedding.set()
            await anyio.sleep_forever()
        return embedder.aieng_embed(texts, model)

    reranker = MMRReranker(embedder=flaky)
    hits = hits_of(*PASSAGES[:2])
    with pytest.raises(ConnectionError):
        await reranker.aieng_rerank(Query("pasta"), hits, 2)
    mode["now"] = "hang"
    # Cancelled once it is inside the embedder (not after a guessed delay: on a busy
    # machine a short timer may fire before the rerank even got there).
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(reranker.aieng_rerank, Query("pasta"), hits, 2)
            await embedding.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert len(reranker._embeddings.cache) == 0
    mode["now"] = "ok"
    await reranker.aieng_rerank(Query("pasta"), hits, 2)
    assert embedder.calls == [["pasta", *PASSAGES[:2]]]


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), (True, TypeError),
                                              (1.5, TypeError)])
def test_cache_size_is_a_count(value: Any, error: type[Exception]) -> None:
    """``cache_size`` is an integer of at least 0."""
    with pytest.raises(error, match="cache_size"):
        MMROptions(cache_size=value)
    with pytest.raises(error, match="cache_size"):
        EmbeddingOptions(cache_size=value)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
                          st.lists(st.lists(st.sampled_from(WORDS), max_size=4),
                                   min_size=1, max_size=6)),
                min_size=1, max_size=5),
       st.integers(min_value=1, max_value=6), st.floats(0, 1))
def test_cached_mmr_equals_uncached_mmr(
    queries: list[tuple[list[str], list[list[str]]]], cache_size: int, lambda_: float
) -> None:
    """Whatever the queries, hits (empty texts included), cache size and λ, MMR with a
    cache returns exactly what MMR without one returns."""

    async def check() -> None:
        cached = MMRReranker(MMROptions(lambda_=lambda_, cache_size=cache_size),
                             embedder=HashingEmbedder(16).aieng_embed)
        plain = MMRReranker(MMROptions(lambda_=lambda_, cache_size=0),
                            embedder=HashingEmbedder(16).aieng_embed)
        for words, passages in queries:
            hits = hits_of(*(" ".join(p) for p in passages))
            query = Query(" ".join(words))
            assert outcome(await cached.aieng_rerank(query, hits, 5)) == \
                outcome(await plain.aieng_rerank(query, hits, 5))

    anyio.run(check)
