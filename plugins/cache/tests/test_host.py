"""The caches in a host program: under trio, across ``fork``, in paths with spaces and
non-ASCII characters."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aieng_cache import (
    CacheOptions,
    ExactCache,
    SemanticCache,
    SemanticOptions,
    SQLiteLevel,
    SQLiteStore,
)
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing import ManualClock

BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def embed(texts: Sequence[str], model: str | None = None) -> list[list[float]]:
    """Texts of one length are one direction: "What is RRF?" and "What is BM2?" match."""
    return [[float(len(text)), 1.0, 0.0] for text in texts]


@pytest.mark.anyio
@BACKENDS
async def test_the_exact_cache_answers_from_sqlite_under_either_backend(
        tmp_path: Path) -> None:
    """The memory and SQLite levels answer under trio as under asyncio (their work runs
    in anyio's worker threads), from a file whose path has spaces and non-ASCII."""
    path = tmp_path / "caché dir" / "a file ü.db"
    cache = ExactCache(CacheOptions(sqlite=str(path)), clock=ManualClock())
    await cache.aieng_cache_store(ask("What is RRF?"), Completion(text="fusion"))
    await cache.aclose()
    again = ExactCache(CacheOptions(sqlite=str(path)), clock=ManualClock())
    found = await again.aieng_cache_lookup(ask("What is RRF?"))
    assert found is not None and found.text == "fusion" and found.cached
    await again.aclose()


@pytest.mark.anyio
@BACKENDS
async def test_the_semantic_cache_persists_and_answers_under_either_backend(
        tmp_path: Path) -> None:
    """The semantic cache stores, reloads its index from SQLite and answers a similar
    prompt under trio as under asyncio."""
    options = SemanticOptions(path=str(tmp_path / "sémantique ü.db"), threshold=0.99)
    cache = SemanticCache(options, embedder=embed, clock=ManualClock())
    await cache.aieng_cache_store(ask("What is RRF?"), Completion(text="fusion"))
    await cache.aclose()
    again = SemanticCache(options, embedder=embed, clock=ManualClock())
    found = await again.aieng_cache_lookup(ask("What is BM2?"))
    assert found is not None and found.text == "fusion"
    await again.aclose()


def _child_of_sqlite(store: SQLiteStore, results: Any) -> None:
    statements: list[str] = []
    for conn in store._idle:  # the parent's connections, as the child inherited them
        conn.set_trace_callback(statements.append)
    found = store.get("parent", 0.0)
    store.put("child", "from the child", kind="chat", now=0.0)
    store.close()
    results.put((None if found is None else found.value, statements))


def test_a_forked_child_opens_sqlite_connections_of_its_own(tmp_path: Path) -> None:
    """After ``fork`` (multiprocessing "fork", gunicorn --preload) the child never runs a
    statement on a connection the parent opened (SQLite: undefined behaviour, locking
    trouble, a corrupt file): it opens its own, reads what the parent wrote, and what it
    writes the parent reads; closing the child's store leaves the parent's working."""
    store = SQLiteStore(tmp_path / "c.db")
    store.put("parent", "from the parent", kind="chat", now=0.0)
    assert store.idle_connections == 1
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    child = context.Process(target=_child_of_sqlite, args=(store, results))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    value, statements = results.get()
    assert value == "from the parent"
    assert statements == []  # nothing ran on an inherited connection
    found = store.get("child", 0.0)
    assert found is not None and found.value == "from the child"
    store.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.anyio
async def test_the_sqlite_level_keeps_at_most_sqlite_max_entries(tmp_path: Path) -> None:
    """``sqlite_max_entries`` bounds the file as ``max_entries`` bounds the memory level: a
    store past it deletes the oldest entries, the newest stay and answer."""
    clock = ManualClock()
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(tmp_path / "c.db"),
                                    sqlite_max_entries=3), clock=clock)
    for i in range(5):
        clock.now += 1
        await cache.aieng_cache_store(ask(f"question {i}"), Completion(text=f"answer {i}"))
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 3
    found = [await cache.aieng_cache_lookup(ask(f"question {i}")) for i in range(5)]
    assert [None if f is None else f.text for f in found] == [
        None, None, "answer 2", "answer 3", "answer 4"]
    await cache.aclose()


@pytest.mark.parametrize("order", [["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]])
def test_entries_stored_at_the_same_time_load_by_key(tmp_path: Path,
                                                     order: list[str]) -> None:
    """Entries stored within one clock tick tie on their time: which ones a load's limit
    keeps (the semantic cache loads its newest ``max_entries``) no longer depends on the
    order they were written in."""
    store = SQLiteStore(tmp_path / "c.db")
    store.put("old", "v", kind="chat", now=1.0)
    for key in order:
        store.put(key, "v", kind="chat", now=2.0)
    assert [row.key for row in store.live(2.0, limit=2)] == ["c", "b"]
    store.close()


@pytest.mark.parametrize("order", [["a", "b", "c"], ["c", "b", "a"]])
def test_the_bound_evicts_ties_as_loads_drop_them(tmp_path: Path, order: list[str]) -> None:
    """The bound keeps what a load would keep: of entries stored at the same time, the
    greater keys, whatever order they were written in."""
    store = SQLiteStore(tmp_path / "c.db", max_entries=2)
    store.put("old", "v", kind="chat", now=1.0)
    for key in order:
        store.put(key, "v", kind="chat", now=2.0)
    assert [row.key for row in store.live(2.0, limit=5)] == ["c", "b"]
    store.close()


def test_max_entries_must_be_a_count() -> None:
    """A negative or non-integer bound is refused, naming the option."""
    with pytest.raises(ValueError, match="sqlite_max_entries must be at least 0"):
        CacheOptions(sqlite="c.db", sqlite_max_entries=-1)
    with pytest.raises(ValueError, match="max_entries must be an integer"):
        SQLiteStore(":memory:", max_entries=True)
