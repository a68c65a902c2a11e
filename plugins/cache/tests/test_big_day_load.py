"""The big day for the semantic cache's file: opening one of many entries.

A semantic cache loads its newest ``max_entries`` rows when it opens. It used to sort every
live row of the file by ``created`` (a temporary B-tree: no index served the order), and to
hold every row's value and vector in a list beside the index's matrix it was filling: the
vectors twice in memory at the peak."""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from aieng_cache import SemanticCache, SemanticOptions, encode_completion
from aieng_cache._keys import scope_key
from aieng_cache._sqlite import SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing.doubles import HashEmbedder

pytestmark = pytest.mark.anyio

_OLD_SCHEMA = """
CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, kind TEXT NOT NULL,
    tag TEXT, vector BLOB, created REAL NOT NULL, expires REAL, scope TEXT);
CREATE INDEX entries_expires ON entries (expires);
PRAGMA user_version = 1;
"""


def _fill(path: Path, count: int, dimension: int) -> SemanticOptions:
    """``count`` rows of one scope with ``dimension``-float vectors, written in one
    transaction; the options of a cache loading all of them."""
    options = SemanticOptions(path=str(path), max_entries=count, threshold=0.9)
    scope = scope_key(SemanticCache(options).scope)
    store = SQLiteStore(path)
    store.count()  # the schema made
    store.close()
    rng = np.random.default_rng(0)
    payload = encode_completion(Completion(text="an answer"), namespace="")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO entries (key, value, kind, tag, vector, created, expires, scope) "
            "VALUES (?, ?, 'chat', 'p', ?, ?, NULL, ?)",
            ((f"k{i}", payload, rng.normal(size=dimension).astype("<f4").tobytes(),
              float(i), scope) for i in range(count)))
    conn.close()
    return options


def _load_transient(path: Path, count: int, dimension: int) -> int:
    """Bytes allocated at the peak of a load of ``count`` rows beyond what the loaded
    cache keeps (its matrix, its completions)."""
    cache = SemanticCache(_fill(path, count, dimension))
    tracemalloc.start()
    try:
        cache._load()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        cache.store.close()  # type: ignore[union-attr]
    assert len(cache.index) == count
    return peak - current


def test_a_load_holds_one_row_at_a_time_not_every_rows_vector(tmp_path: Path) -> None:
    """The transient memory of a load does not grow by the rows' vectors: 1,000 and
    4,000 rows of 2 KB vectors (2 and 8 MB) load with well under 1 MB besides what the
    index keeps (it was 2.4 and 10 MB more: the list of every row)."""
    small = _load_transient(tmp_path / "small.db", 1_000, 512)
    large = _load_transient(tmp_path / "large.db", 4_000, 512)
    assert small < 1_000_000, small
    assert large < 1_000_000, large


def test_the_load_reads_in_order_through_an_index(tmp_path: Path) -> None:
    """The load's query is served by the ``created`` index (no sort of the table), on a
    new file and on a file made before the index existed (it is added when it opens,
    the layout version unchanged: an older version reads the file as before)."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(_OLD_SCHEMA)
    conn.close()
    for path in (tmp_path / "new.db", old):
        store = SQLiteStore(path)
        store.put("k", encode_completion(Completion(text="a")), kind="chat", now=1.0,
                  tag="p", vector=b"\0" * 8, scope="s")
        statements: list[str] = []
        with store._connection() as conn:  # the connection the next call borrows again
            conn.set_trace_callback(statements.append)
        assert [row.key for row in store.live(2.0, limit=10, scope="s")] == ["k"]
        store.close()
        (select,) = [s for s in statements if s.startswith("SELECT")]
        with sqlite3.connect(path) as plans:
            plan = " ".join(row[3] for row in plans.execute("EXPLAIN QUERY PLAN " + select))
            assert "TEMP B-TREE" not in plan and "entries_created" in plan, plan
            assert plans.execute("PRAGMA user_version").fetchone()[0] == 1
        plans.close()


def _ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


async def test_a_reloaded_index_evicts_its_oldest_entry_first(tmp_path: Path) -> None:
    """Loaded newest first, the index still holds the newest as the most recently used:
    a store into the full reloaded index evicts the oldest entry, not the newest."""
    path = str(tmp_path / "s.db")
    clock_now = [1000.0]
    options = SemanticOptions(threshold=0.99, path=path, max_entries=3)

    def cache() -> SemanticCache:
        return SemanticCache(options, embedder=HashEmbedder().aieng_embed,
                             clock=lambda: clock_now[0])

    first = cache()
    for text in ("alpha beta", "gamma delta", "epsilon zeta"):
        clock_now[0] += 1
        await first.aieng_cache_store(_ask(text), Completion(text=text))
    await first.aclose()
    again = cache()
    clock_now[0] += 1
    await again.aieng_cache_store(_ask("eta theta"), Completion(text="eta"))
    assert await again.aieng_cache_lookup(_ask("alpha beta")) is None
    for text in ("gamma delta", "epsilon zeta", "eta theta"):
        assert await again.aieng_cache_lookup(_ask(text)) is not None, text
    await again.aclose()
