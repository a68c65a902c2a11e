"""The long run: rerankers serving many queries over ever new passages keep at most their
cache of vectors, whatever the passages, and nothing per rerank.

Shown by counts (vectors held, texts embedded) and by the bytes the kit's
``ameasure_growth`` finds retained, never by timings."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aieng_hookspecs.types import Completion, Query
from aieng_rerankers import ListwiseReranker, MMROptions, MMRReranker
from rerankers_doubles import HashingEmbedder, hits_of, reverse_ranking

from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio


class Embed:
    """An embedder function over a hashing embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        self.hashing = HashingEmbedder(dim=32)
        self.texts = 0

    def __call__(self, texts: Sequence[str], model: str | None) -> list[list[float]]:
        self.texts += len(texts)
        return [self.hashing.vector(text) for text in texts]


async def test_ten_thousand_passages_hold_the_cache_size() -> None:
    """Ever new queries over ever new passages (8,800 passages, 1,100 queries): the cache
    of unit vectors holds its ``cache_size`` and no more, and a rerank keeps nothing
    else (``mmr``; ``embedding`` shares its vectors' code)."""
    embed = Embed()
    reranker = MMRReranker(MMROptions(cache_size=64), embedder=embed)

    async def rerank(i: int) -> None:
        hits = hits_of(*(f"passage {i}.{n} on the seine and paris" for n in range(8)))
        assert len(await reranker.aieng_rerank(Query(f"query {i}"), hits, 3)) == 3

    growth = await ameasure_growth(rerank, warmup=100, calls=1_000)
    assert growth.per_call < 48, growth.report()  # a vector kept: 300 B and more
    assert len(reranker._embeddings.cache) == 64
    assert embed.texts == 1_100 * 9  # each new text (query and passages) once


async def test_a_listwise_rerank_keeps_nothing() -> None:
    """The listwise reranker's prompts and answers are the rerank's own: nothing stays."""
    reranker = ListwiseReranker(generate=lambda request: Completion(
        text=reverse_ranking(request)))

    async def rerank(i: int) -> None:
        hits = hits_of(*(f"passage {i}.{n} on rivers" for n in range(6)))
        ranked = await reranker.aieng_rerank(Query(f"query {i}"), hits, 4)
        assert ranked[0].document.text == f"passage {i}.5 on rivers"

    growth = await ameasure_growth(rerank, warmup=100, calls=1_000)
    assert growth.per_call < 48, growth.report()  # a request kept: 1 kB and more

