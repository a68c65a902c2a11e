"""``SemanticCache.clear()``: it empties its own namespace (the index in memory and its rows
of the SQLite file), as ``ExactCache.clear()`` does; other namespaces keep theirs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from aieng_cache import (
    CacheOptions,
    ExactCache,
    KeyScope,
    SemanticCache,
    SemanticIndex,
    SemanticOptions,
    encode_completion,
    request_key,
)
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing.doubles import HashEmbedder

pytestmark = pytest.mark.anyio

PROMPT = "how do i reset my password"


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def semantic(path: Path | None = None, namespace: str = "", dim: int = 64) -> SemanticCache:
    options = SemanticOptions(threshold=0.9, path=str(path) if path else "",
                              namespace=namespace)
    return SemanticCache(options, embedder=HashEmbedder(dim).aieng_embed)


async def texts(cache: SemanticCache, *prompts: str) -> list[str | None]:
    found = [await cache.aieng_cache_lookup(ask(p)) for p in prompts]
    return [c.text if c is not None else None for c in found]


async def test_clear_in_memory_empties_the_index_and_it_fills_again() -> None:
    """A memory-only cache forgets every entry (exact and similar hits miss); stores after
    the clear answer again, even with vectors of another size (a re-index with a new
    embedding model)."""
    cache = semantic()
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="old"))
    await cache.aieng_cache_store(ask(""), Completion(text="empty"))  # no vector
    await cache.clear()
    assert len(cache.index) == 0 and cache.index.partitions == 0
    assert await texts(cache, PROMPT, PROMPT + " please", "") == [None, None, None]
    cache._embedder = HashEmbedder(32).aieng_embed
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="new"))
    assert await texts(cache, PROMPT + " please") == ["new"]


@pytest.mark.parametrize("loaded", [False, True])
async def test_clear_removes_its_namespace_from_a_shared_file(
        tmp_path: Path, loaded: bool) -> None:
    """Two semantic caches of other namespaces and an exact cache share one file: clearing
    one semantic cache (before or after its index was loaded) removes its entries from
    its index and the file (a reopened cache loads none), and leaves the others'."""
    path = tmp_path / "shared.db"
    a, b = semantic(path, "a"), semantic(path, "b")
    exact = ExactCache(CacheOptions(memory=False, sqlite=str(path), namespace="e"))
    for cache in (a, b):
        await cache.aieng_cache_store(ask(PROMPT), Completion(text=cache.options.namespace))
    await exact.aieng_cache_store(ask(PROMPT), Completion(text="e"))
    await a.aclose()
    a = semantic(path, "a")
    if loaded:
        assert await texts(a, PROMPT + " please") == ["a"]
    await a.clear()
    assert await texts(a, PROMPT, PROMPT + " please") == [None, None]
    assert await texts(b, PROMPT, PROMPT + " please") == ["b", "b"]
    found = await exact.aieng_cache_lookup(ask(PROMPT))
    assert found is not None and found.text == "e"
    await a.aclose()
    reopened = semantic(path, "a")
    assert await texts(reopened, PROMPT, PROMPT + " please") == [None, None]
    assert len(reopened.index) == 0
    assert reopened.store is not None and reopened.store.count() == 2
    for cache in (reopened, b):
        await cache.aclose()
    await exact.aclose()


async def test_clear_removes_rows_of_unknown_namespace(tmp_path: Path) -> None:
    """Rows written before values recorded their namespace may be this namespace's: they
    go with its ``clear()``, as with the exact cache."""
    path = tmp_path / "old.db"
    vector = np.ones(4, dtype="<f4") / 2
    key = request_key(ask(PROMPT), KeyScope(namespace="a"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                     "kind TEXT NOT NULL, tag TEXT, vector BLOB, created REAL NOT NULL, "
                     "expires REAL)")
        conn.execute("INSERT INTO entries VALUES (?, ?, 'chat', 'p', ?, 1.0, NULL)",
                     (key, encode_completion(Completion(text="old")), vector.tobytes()))
    conn.close()
    cache = semantic(path, "a")
    await cache.clear()
    assert cache.store is not None and cache.store.count() == 0
    await cache.aclose()


def test_index_clear_resets_it() -> None:
    """``SemanticIndex.clear()`` leaves an empty index of the same capacity, with no
    dimension, whose rows are all free again."""
    index: SemanticIndex[str] = SemanticIndex(2)
    index.put("a", "p", np.array([1.0, 0.0], dtype=np.float32), "x")
    index.put("b", "p", None, "y")
    index.clear()
    assert len(index) == 0 and index.partitions == 0 and index.dimension is None
    up = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    for key in ("c", "d"):
        index.put(key, "q", up, key)
    assert "c" in index and "d" in index  # two free rows: nothing evicted
    match = index.search(up, "q", 0.0)
    assert match is not None and match.key in ("c", "d")
