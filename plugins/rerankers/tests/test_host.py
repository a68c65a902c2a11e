"""The rerankers in a host program: one reranker shared by event loops in several threads,
trio as well as asyncio, no network, and what padding does to a cross-encoder's scores."""

from __future__ import annotations

import random
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_hookspecs.types import Query
from aieng_rerankers import (
    CrossEncoderOptions,
    CrossEncoderReranker,
    EmbeddingReranker,
    MMROptions,
    MMRReranker,
)
from aieng_rerankers._embed import VectorCache
from rerankers_doubles import VOCABULARY, HashingEmbedder, hits_of

from aieng_core import Kernel


class _PausingRows(OrderedDict[Any, Any]):
    """The cache's rows, pausing a lookup after it found its row until another thread has
    had the chance to evict it (``evicted``, waited for a short while only: with the lock,
    the other thread cannot evict it before the lookup ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.found = threading.Event()
        self.evicted = threading.Event()

    def get(self, key: Any, default: Any = None) -> Any:
        row = super().get(key, default)
        if row is not None and not self.found.is_set():
            self.found.set()
            self.evicted.wait(0.5)
        return row


def test_a_lookup_racing_an_eviction_in_another_thread() -> None:
    """A host sharing one reranker between event loops in two threads: a cache lookup in
    one thread, while the other stores a vector that evicts the row looked up, returns
    the row. Without a lock it raised ``KeyError`` (``move_to_end`` of the evicted key)."""
    import numpy as np

    cache = VectorCache(1)
    rows = _PausingRows()
    cache._rows = rows
    row = np.ones(3)
    cache.put((0, None, b"a"), row)
    outcome: list[Any] = []

    def look() -> None:
        try:
            outcome.append(cache.get((0, None, b"a")))
        except BaseException as exc:  # noqa: BLE001  (what the other thread sees)
            outcome.append(exc)

    looker = threading.Thread(target=look)
    looker.start()
    assert rows.found.wait(10)
    cache.put((0, None, b"b"), np.zeros(3))  # evicts "a" (waits for the lookup, locked)
    rows.evicted.set()
    looker.join(10)
    assert len(outcome) == 1 and outcome[0] is row
    assert len(cache) == 1 and cache.get((0, None, b"b")) is not None


def test_one_reranker_in_event_loops_of_several_threads() -> None:
    """One ``mmr`` reranker (cache of 8 vectors, fewer than the texts) used by four
    threads at once, each running its own event loop (asyncio and trio), ranks as when
    used alone."""
    texts = [" ".join(random.Random(n).choices(VOCABULARY, k=8)) for n in range(24)]
    hits = hits_of(*texts)
    queries = ["how do i cook pasta", "rank fusion of dense retrieval", "paris france"]
    reranker = MMRReranker(MMROptions(lambda_=0.5, cache_size=8),
                           embedder=HashingEmbedder().aieng_embed)

    async def ranks() -> list[list[str]]:
        return [[h.document.id for h in await reranker.aieng_rerank(Query(q), hits, 6)]
                for q in queries * 5]

    alone = anyio.run(ranks)
    found: list[Any] = []

    def worker(backend: str) -> None:
        try:
            found.append(anyio.run(ranks, backend=backend))
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            found.append(exc)

    threads = [threading.Thread(target=worker, args=(backend,))
               for backend in ("asyncio", "trio", "asyncio", "trio")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert found == [alone] * 4


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """A socket guard: every connection or name lookup to anything but loopback is
    refused at once and recorded."""
    attempts: list[Any] = []
    loopback = {"127.0.0.1", "::1", "localhost"}
    connect = socket.socket.connect
    lookup = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in loopback:
            attempts.append(address)
            raise ConnectionRefusedError(f"no network in this test: {address!r}")
        return connect(self, address)

    def guarded_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in loopback and host is not None:
            attempts.append(host)
            raise socket.gaierror(f"no network in this test: {host!r}")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    yield attempts


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cross_encoder_pipeline_on_both_backends_without_network(
    aieng_kernel: Kernel, tiny_cross_encoder: Path, no_network: list[Any],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cross-encoder loaded (in a worker thread, as the pipeline opens) and run in a
    pipeline on trio as on asyncio, with every non-loopback connection refused and no
    hub variable set: it scores as when called directly and never tries the network."""
    pytest.importorskip("transformers")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        batch_size=2))
    passages = ("boil water and salt it then cook the pasta", "paris is the capital city",
                "tomato sauce", "rank fusion of bm25")
    pipeline = aieng_kernel.compose({"ce": reranker}, stages=["rerank"])
    async with pipeline:
        ranked = await reranker_through(pipeline, reranker, passages)
    direct = reranker.scores("how do i cook pasta", list(passages))
    assert sorted(direct, reverse=True) == [h.score for h in ranked]
    assert no_network == []


async def reranker_through(pipeline: Any, reranker: CrossEncoderReranker,
                           passages: tuple[str, ...]) -> list[Any]:
    """``aieng_rerank`` through the pipeline's dispatcher (the ``@blocking`` impl in a
    worker thread)."""
    hits = tuple(hits_of(*passages))
    found = await pipeline.dispatcher.first(
        "aieng_rerank", {"query": Query("how do i cook pasta"), "hits": hits, "k": len(hits)},
        stage="rerank")
    assert found is not None
    ranked: list[Any] = found[0]
    return ranked


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_embedding_reranker_on_both_backends(hashing_embedder: HashingEmbedder) -> None:
    """``embedding`` with an async embedder ranks alike on both backends (its cache
    filled on the first call and read on the second)."""
    async def embed(texts: Any, model: str | None) -> Any:
        await anyio.lowlevel.checkpoint()
        return hashing_embedder.aieng_embed(texts, model)

    reranker = EmbeddingReranker(embedder=embed)
    hits = hits_of("cook the pasta", "paris france", "rank fusion", "boil water")
    first = await reranker.aieng_rerank(Query("how to cook pasta"), hits, 4)
    second = await reranker.aieng_rerank(Query("how to cook pasta"), hits, 4)
    assert [h.document.id for h in first] == [h.document.id for h in second]
    assert [h.score for h in first] == [h.score for h in second]
    assert len(reranker._embeddings.cache or []) == 5


def test_padding_changes_a_score_by_rounding_only(tiny_cross_encoder: Path) -> None:
    """The model in double precision: a pair scores in a padded batch of 40 passages of 1
    to 100 words exactly as alone, to 1e-9 of the scores' spread, so the float32
    difference (up to ~1e-4 of a logit) is rounding in batched matrix products, not
    padding tokens read by the model (the attention mask hides them)."""
    from aieng_rerankers._cross_model import CrossEncoderModel

    model = CrossEncoderModel(str(tiny_cross_encoder), batch_size=64)
    model.model.double()
    chosen = random.Random(7)
    passages = [" ".join(chosen.choices(VOCABULARY, k=chosen.randint(1, 100)))
                for _ in range(40)]
    together = model.score("rank fusion of weights", passages)
    alone = [model.score("rank fusion of weights", [p])[0] for p in passages]
    spread = max(together) - min(together)
    assert spread > 0
    assert max(abs(a - b) for a, b in zip(together, alone, strict=True)) <= 1e-9 * spread
