"""``semantic-cache``: conformance, hits and misses by similarity (HashEmbedder double),
partitions, TTLs, eviction, persistence, and a pipeline embedding through its context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aieng_cache import CacheLevelHit, SemanticCache, SemanticIndex, SemanticOptions
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core import Kernel
from aieng_core.testing import EventCapture, ManualClock
from aieng_core.testing.conformance import CacheSuite
from aieng_core.testing.doubles import HashEmbedder, ScriptedBackend

pytestmark = pytest.mark.anyio


def ask(text: str, system: str | None = None, **params: object) -> Request:
    messages = ((Message("system", system),) if system else ()) + (Message("user", text),)
    return Request(messages=messages, **params)  # type: ignore[arg-type]


def semantic(threshold: float = 0.9, **options: object) -> SemanticCache:
    """A semantic cache over the HashEmbedder double (cosine = shared words)."""
    return SemanticCache(SemanticOptions(threshold=threshold, **options),  # type: ignore[arg-type]
                         embedder=HashEmbedder().aieng_embed)


class TestSemanticCacheConformance(CacheSuite):
    """The semantic cache (HashEmbedder double) passes the cache suite."""

    @pytest.fixture
    def component(self) -> SemanticCache:
        return semantic(cache_sampled=True)


class TestPersistentSemanticCacheConformance(CacheSuite):
    """The semantic cache persisted in SQLite passes the cache suite."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> SemanticCache:
        return semantic(cache_sampled=True, path=str(tmp_path / "s.db"))


PROMPT = "how do i reset my password"


async def test_similar_prompts_hit_and_dissimilar_miss() -> None:
    """A prompt sharing most words with a stored one hits (its cosine reported); one
    sharing few misses."""
    cache = semantic(0.9)
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="Use the reset link."))
    found = await cache.aieng_cache_lookup(ask(PROMPT + " please"))
    assert found is not None and found.text == "Use the reset link." and found.cached
    assert cache.last_similarity is not None and 0.9 <= cache.last_similarity < 1.0
    assert await cache.aieng_cache_lookup(ask("how do i cancel my order")) is None
    assert cache.last_similarity is None


async def test_threshold_decides() -> None:
    """The same pair hits under a lower threshold and misses under a higher one."""
    low, high = semantic(0.8), semantic(0.95)
    for cache in (low, high):
        await cache.aieng_cache_store(ask(PROMPT), Completion(text="a"))
    assert await low.aieng_cache_lookup(ask(PROMPT + " please")) is not None
    assert await high.aieng_cache_lookup(ask(PROMPT + " please")) is None


async def test_the_rest_of_the_request_must_match_exactly() -> None:
    """The same prompt under another system prompt, model or max_tokens misses."""
    cache = semantic(0.5)
    await cache.aieng_cache_store(ask(PROMPT, "Be brief.", model="m"), Completion(text="a"))
    assert await cache.aieng_cache_lookup(ask(PROMPT, "Be brief.", model="m")) is not None
    assert await cache.aieng_cache_lookup(ask(PROMPT, "Be verbose.", model="m")) is None
    assert await cache.aieng_cache_lookup(ask(PROMPT, "Be brief.", model="n")) is None
    assert await cache.aieng_cache_lookup(
        ask(PROMPT, "Be brief.", model="m", max_tokens=5)) is None


async def test_exact_hits_need_no_embedding() -> None:
    """A request stored before is answered by its key: the embedder is not asked again."""
    embedder = HashEmbedder()
    cache = SemanticCache(SemanticOptions(), embedder=embedder.aieng_embed)
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="a"))
    calls = embedder.calls
    assert await cache.aieng_cache_lookup(ask(PROMPT)) is not None
    assert embedder.calls == calls and cache.last_similarity == 1.0


async def test_store_after_a_miss_reuses_the_lookup_embedding() -> None:
    """A miss then a store of the same prompt embeds it once."""
    embedder = HashEmbedder()
    cache = SemanticCache(SemanticOptions(), embedder=embedder.aieng_embed)
    assert await cache.aieng_cache_lookup(ask(PROMPT)) is None
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="a"))
    assert embedder.calls == 1


async def test_expired_entries_miss_on_an_injected_clock() -> None:
    """An entry past its content type's TTL is neither an exact nor a semantic hit."""
    clock = ManualClock()
    cache = SemanticCache(SemanticOptions(threshold=0.8, ttl={"default": 10}),
                          embedder=HashEmbedder().aieng_embed, clock=clock,
                          monotonic=clock)
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="a"))
    clock.now += 9.99
    assert await cache.aieng_cache_lookup(ask(PROMPT + " please")) is not None
    clock.now += 0.01
    assert await cache.aieng_cache_lookup(ask(PROMPT + " please")) is None
    assert await cache.aieng_cache_lookup(ask(PROMPT)) is None


async def test_the_index_is_bounded_least_recently_used_first() -> None:
    """Past max_entries the least recently used entry is evicted."""
    cache = semantic(0.99, max_entries=2)
    for text in ("alpha beta", "gamma delta", "epsilon zeta"):
        await cache.aieng_cache_store(ask(text), Completion(text=text))
    assert len(cache.index) == 2
    assert await cache.aieng_cache_lookup(ask("alpha beta")) is None
    assert await cache.aieng_cache_lookup(ask("gamma delta")) is not None


async def test_persisted_index_is_reloaded(tmp_path: Path) -> None:
    """A new cache on the same file answers similar prompts from what the first stored."""
    path = str(tmp_path / "s.db")
    first = semantic(0.9, path=path)
    await first.aieng_cache_store(ask(PROMPT), Completion(text="Use the reset link."))
    await first.aieng_cache_store(ask(""), Completion(text="empty"))
    await first.aclose()
    second = semantic(0.9, path=path)
    found = await second.aieng_cache_lookup(ask(PROMPT + " please"))
    assert found is not None and found.text == "Use the reset link."
    empty = await second.aieng_cache_lookup(ask(""))  # no vector: found by its key only
    assert empty is not None and empty.text == "empty"
    await second.aclose()


@pytest.mark.parametrize("namespace", ["", "minilm-v2"])
async def test_a_file_of_another_embedding_model(tmp_path: Path, namespace: str) -> None:
    """A file written with another embedding model (vectors of another size): a cache on
    it with a new model, in another namespace (as the size error advises) or in the
    same one, stores and hits with its own vectors; an old entry still answers its exact
    request when the namespace is the same."""
    path = str(tmp_path / "s.db")
    old = SemanticCache(SemanticOptions(path=path), embedder=HashEmbedder(64).aieng_embed)
    await old.aieng_cache_store(ask(PROMPT), Completion(text="old answer"))
    await old.aclose()
    new = SemanticCache(SemanticOptions(threshold=0.9, path=path, namespace=namespace),
                        embedder=HashEmbedder(32).aieng_embed)
    assert await new.aieng_cache_lookup(ask("how do i cancel my order")) is None
    await new.aieng_cache_store(ask("how do i cancel my order"), Completion(text="new"))
    found = await new.aieng_cache_lookup(ask("how do i cancel my order please"))
    assert found is not None and found.text == "new"
    exact = await new.aieng_cache_lookup(ask(PROMPT))
    assert (exact.text if exact is not None else None) == (
        "old answer" if namespace == "" else None)
    await new.aclose()


async def test_namespaces_sharing_a_file_reload_only_their_own_entries(
        tmp_path: Path) -> None:
    """Two namespaces (tenants, or models of other sizes) sharing one file: on reopening,
    each loads its own entries, which keep hitting by similarity, instead of the newest
    ``max_entries`` rows of the whole file (another namespace's vectors of another size
    made its own unreadable; of the same size, they took its places in the index)."""
    path = str(tmp_path / "s.db")
    small = SemanticOptions(threshold=0.9, path=path, namespace="a", max_entries=2)
    big = SemanticOptions(threshold=0.9, path=path, namespace="b", max_entries=2)
    a = SemanticCache(small, embedder=HashEmbedder(32).aieng_embed)
    await a.aieng_cache_store(ask(PROMPT), Completion(text="a: reset link"))
    await a.aclose()
    b = SemanticCache(big, embedder=HashEmbedder(64).aieng_embed)
    for text in ("how do i cancel my order", "how do i track my parcel"):
        await b.aieng_cache_store(ask(text), Completion(text="b"))
    await b.aclose()
    again = SemanticCache(small, embedder=HashEmbedder(32).aieng_embed)
    found = await again.aieng_cache_lookup(ask(PROMPT + " please"))
    assert found is not None and found.text == "a: reset link"
    assert len(again.index) == 1
    await again.aclose()
    b_again = SemanticCache(big, embedder=HashEmbedder(64).aieng_embed)
    found = await b_again.aieng_cache_lookup(ask("how do i track my parcel please"))
    assert found is not None and found.text == "b" and len(b_again.index) == 2
    await b_again.aclose()


async def test_a_pipeline_embeds_through_its_context(
    aieng_kernel: Kernel, captured_events: EventCapture
) -> None:
    """In a pipeline the cache embeds with the pipeline's embedder; a paraphrase is a hit
    and the backend answers once; the events say miss, store, then a semantic hit with
    its cosine."""
    backend = ScriptedBackend(["Use the reset link.", "another answer"])
    embedder = HashEmbedder()
    cache = SemanticCache(SemanticOptions(threshold=0.9))
    pipeline = aieng_kernel.compose({"cache": cache, "embedder": embedder, "llm": backend},
                                    stages=["cache_lookup", "generate", "cache_store"])
    async with pipeline:
        await pipeline.run(PROMPT)
        second = await pipeline.run(PROMPT + " please")
    assert second.cache_hit == "cache" and second.answer == "Use the reset link."
    assert len(backend.requests) == 1 and embedder.calls == 2
    assert captured_events.names("cache.*") == ["cache.miss", "cache.store",
                                                "cache.level_hit", "cache.hit"]
    (hit,) = captured_events.of(CacheLevelHit)
    assert hit.level == "semantic" and 0.9 <= hit.similarity < 1.0


async def test_without_an_embedder_it_says_how_to_get_one() -> None:
    """Outside a pipeline and without ``embedder=``, a lookup explains what is missing."""
    with pytest.raises(RuntimeError, match="no embedder"):
        await SemanticCache().aieng_cache_lookup(ask(PROMPT))


def test_index_refuses_another_dimension() -> None:
    """A vector of another size than the index's is an error naming both sizes."""
    index: SemanticIndex[str] = SemanticIndex(4)
    index.put("a", "p", np.ones(3, dtype=np.float32) / np.sqrt(3), "x")
    with pytest.raises(ValueError, match="4 dimensions, the index 3"):
        index.put("b", "p", np.ones(4, dtype=np.float32) / 2, "y")


def test_bad_threshold_is_refused() -> None:
    """A threshold outside (0, 1] is an options error."""
    with pytest.raises(ValueError, match="threshold"):
        SemanticOptions(threshold=1.5)


def test_index_forgets_empty_partitions_and_near_misses_do_not_refresh() -> None:
    """A partition whose entries are all gone is forgotten; a search alone does not make
    an entry recent (only a hit, through touch)."""
    index: SemanticIndex[str] = SemanticIndex(2)
    up = np.array([1.0, 0.0], dtype=np.float32)
    index.put("a", "p1", up, "x")
    index.put("b", "p2", up, "y")
    assert index.partitions == 2
    assert index.search(up, "p1", 0.0) is not None  # found, not touched
    index.put("c", "p3", up, "z")  # evicts "a", the least recently used
    assert "a" not in index and index.partitions == 2
    index.touch("b")
    index.put("d", "p3", up, "w")  # evicts "c": "b" was touched
    assert "b" in index and "c" not in index and index.partitions == 2
    index.delete("b")
    index.delete("d")
    assert index.partitions == 0 and len(index) == 0


class TableEmbedder:
    """An embedding double of a fixed size answering from a table: two of them with other
    tables are two embedding models of the same size that place texts differently."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table
        self.models: list[str | None] = []

    def __call__(self, texts: list[str], model: str | None) -> list[list[float]]:
        self.models.append(model)
        return [self.table.get(text, [0.0, 0.0, 1.0]) for text in texts]


async def test_another_embedding_model_of_the_same_size_never_compares(
        tmp_path: Path) -> None:
    """Entries embedded by one model are not compared with another model's vectors of the
    same size (the cosine of two models' vectors means nothing): after switching
    ``model``, a prompt the new model places where the old one placed a stored prompt
    misses; the old entry still answers its exact request."""
    path = str(tmp_path / "s.db")
    old_model = TableEmbedder({PROMPT: [1.0, 0.0, 0.0]})
    old = SemanticCache(SemanticOptions(threshold=0.9, path=path, model="model-a"),
                        embedder=old_model)
    await old.aieng_cache_store(ask(PROMPT), Completion(text="Use the reset link."))
    await old.aclose()
    assert old_model.models == ["model-a"]
    new_model = TableEmbedder({"how do i cancel my order": [1.0, 0.0, 0.0]})
    new = SemanticCache(SemanticOptions(threshold=0.9, path=path, model="model-b"),
                        embedder=new_model)
    assert await new.aieng_cache_lookup(ask("how do i cancel my order")) is None
    exact = await new.aieng_cache_lookup(ask(PROMPT))
    assert exact is not None and exact.text == "Use the reset link."
    await new.aclose()
    again = SemanticCache(SemanticOptions(threshold=0.9, path=path, model="model-a"),
                          embedder=TableEmbedder({"reset it": [1.0, 0.0, 0.0]}))
    found = await again.aieng_cache_lookup(ask("reset it"))
    assert found is not None and found.text == "Use the reset link."
    await again.aclose()


async def test_threshold_one_hits_identical_embeddings() -> None:
    """``threshold = 1.0`` (the validator's upper bound) answers a prompt whose embedding
    is the stored one's, whatever float32 rounding does to its cosine, and never reports
    a similarity above 1."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        vector = rng.normal(size=384).tolist()
        cache = SemanticCache(SemanticOptions(threshold=1.0),
                              embedder=lambda texts, model, v=vector: [v for _ in texts])
        await cache.aieng_cache_store(ask("What is RRF?"), Completion(text="a"))
        found = await cache.aieng_cache_lookup(ask("what is rrf, again?"))
        assert found is not None and found.text == "a"
        assert cache.last_similarity is not None and cache.last_similarity <= 1.0


async def test_after_a_model_switch_the_new_models_entries_survive_the_next_restart(
        tmp_path: Path) -> None:
    """With ``model = ''`` the default embedder changed size (64 -> 32): the new model's
    entries, stored beside the old model's rows in one scope, still hit by similarity
    after the next restart (the newest rows set the index's size, not the oldest: those
    of the old model are kept for their exact requests only)."""
    path = str(tmp_path / "s.db")
    clock = ManualClock()
    old = SemanticCache(SemanticOptions(path=path), embedder=HashEmbedder(64).aieng_embed,
                        clock=clock)
    await old.aieng_cache_store(ask(PROMPT), Completion(text="old answer"))
    await old.aclose()
    clock.now += 1
    options = SemanticOptions(threshold=0.9, path=path)
    new = SemanticCache(options, embedder=HashEmbedder(32).aieng_embed, clock=clock)
    await new.aieng_cache_store(ask("how do i cancel my order"), Completion(text="new"))
    await new.aclose()
    clock.now += 1
    again = SemanticCache(options, embedder=HashEmbedder(32).aieng_embed, clock=clock)
    found = await again.aieng_cache_lookup(ask("how do i cancel my order please"))
    assert found is not None and found.text == "new"
    exact = await again.aieng_cache_lookup(ask(PROMPT))
    assert exact is not None and exact.text == "old answer"
    await again.aclose()
