"""The big day for the caches: prompts near a model's context limit, many entries.

What a cache keeps between calls must not grow with the size of the prompts it saw: the
semantic cache remembers the embeddings of prompts looked up but not yet stored (so a
miss's store does not embed the prompt again), and used to keep each whole prompt as the
key of that memory: 256 prompts of 100 KB each held 25 MB after their runs had ended."""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
from pathlib import Path

import pytest
from aieng_cache import SemanticCache, SemanticOptions
from aieng_cache._sqlite import SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing.doubles import HashEmbedder

pytestmark = pytest.mark.anyio


def _long_prompt(i: int, size: int) -> Request:
    # Few words (the double embeds word by word), many characters.
    return Request(messages=(Message("user", f"question {i} " + "x" * size),))


async def _held_after_misses(count: int, size: int) -> int:
    """Bytes still allocated after ``count`` lookups of distinct ``size``-character
    prompts that missed and were never stored (their runs failed or were cancelled)."""
    embedder = HashEmbedder()
    cache = SemanticCache(SemanticOptions(threshold=0.9), embedder=embedder.aieng_embed)
    await cache.aieng_cache_lookup(_long_prompt(-1, 10))  # numpy and the index set up
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            assert await cache.aieng_cache_lookup(_long_prompt(i, size)) is None
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_prompts_looked_up_are_not_kept_whole() -> None:
    held = await _held_after_misses(150, 20_000)
    # 150 embeddings (64 floats each) and their keys: not the 3 MB of the prompts.
    assert held < 1_000_000, held


async def test_a_miss_then_its_store_still_embeds_once() -> None:
    embedder = HashEmbedder()
    cache = SemanticCache(SemanticOptions(threshold=0.9), embedder=embedder.aieng_embed)
    request = _long_prompt(1, 50_000)
    assert await cache.aieng_cache_lookup(request) is None
    await cache.aieng_cache_store(request, Completion(text="answer"))
    assert embedder.calls == 1
    found = await cache.aieng_cache_lookup(_long_prompt(1, 50_000))
    assert found is not None and found.text == "answer"


def test_the_sqlite_level_reads_and_writes_through_indexes(tmp_path: Path) -> None:
    """A lookup, a store, a deletion and the purge of expired entries each find their rows
    through an index (the key, ``expires``): none scans the table, whose size then does
    not matter (the README says so)."""
    store = SQLiteStore(tmp_path / "cache.db")
    store.put("warm", "{}", kind="chat", now=1.0)
    statements: list[str] = []
    with store._connection() as conn:  # the connection the next calls borrow again
        conn.set_trace_callback(statements.append)
    store.put("k", "{}", kind="chat", now=1.0, expires_at=10.0)
    assert store.get("k", now=2.0) is not None
    assert store.get("k", now=20.0) is None  # expired: deleted as it is read
    store.put("k2", "{}", kind="chat", now=1.0, expires_at=10.0)
    assert store.purge(now=20.0) == 1
    assert store.delete("warm")
    store.close()
    plans = sqlite3.connect(tmp_path / "cache.db")
    found = [s for s in statements if s.split()[0] in ("SELECT", "DELETE", "INSERT")]
    assert len(found) == 7, statements  # 2 stores, 2 reads, 3 deletions
    for statement in found:
        plan = " ".join(row[3] for row in plans.execute("EXPLAIN QUERY PLAN " + statement))
        assert "SCAN" not in plan, (statement, plan)
    plans.close()
