"""The long run: a cache serving for weeks in one process, under stores of distinct keys.

The SQLite file holds what its live entries need, not the history of every store: dead
entries are deleted by stores (not only skipped by lookups), free pages go back to the
disk, the ``-wal`` file shrinks after a large write, and a store reads as many rows in a
full file as in a small one. In memory, a lookup and a store of a new key keep nothing
once the bounded levels are full. Sizes are measured in bytes, rows and SQLite's virtual
machine steps, never in time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aieng_cache import CacheOptions, ExactCache, SemanticCache, SemanticOptions, SQLiteStore
from aieng_cache._sqlite import PURGE_EVERY
from aieng_hookspecs import WAL_SIZE_LIMIT as WAL_LIMIT
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing import ManualClock
from aieng_core.testing.doubles import HashEmbedder
from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio

VALUE = "v" * 400


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def wal(path: Path) -> int:
    found = Path(f"{path}-wal")
    return found.stat().st_size if found.exists() else 0


@contextmanager
def counting(store: SQLiteStore) -> Iterator[list[int]]:
    """The virtual machine steps SQLite runs for the store's calls in the block (its one
    idle connection, which a call from this thread borrows): rows read, index entries
    walked, rows written all count."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    with store._connection() as conn:
        conn.set_progress_handler(step, 1)
    try:
        yield steps
    finally:
        with store._connection() as conn:
            conn.set_progress_handler(None, 1)


def test_expired_entries_leave_the_file_without_a_lookup(tmp_path: Path) -> None:
    """20,000 stores of distinct keys that no lookup finds again, each living 60 s of a
    clock that moves 0.1 s a store: the file holds the live ones and at most
    PURGE_EVERY stores' worth of dead ones (it held all 20,000, and grew with them), and
    a restart finds them gone still."""
    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    sizes = {}
    for i in range(20_000):
        now = i * 0.1
        store.put(f"k{i}", VALUE, kind="chat", now=now, expires_at=now + 60.0)
        if i + 1 in (5_000, 20_000):
            sizes[i + 1] = path.stat().st_size + wal(path)
    live = 600
    assert store.count() <= live + PURGE_EVERY
    assert sizes[20_000] <= sizes[5_000] * 1.1, sizes
    store.close()
    again = SQLiteStore(path)
    assert again.count() <= live + PURGE_EVERY
    assert again.get("k0", now) is None and again.get("k19999", now) is not None
    again.close()


def test_a_large_clear_gives_the_disk_back(tmp_path: Path) -> None:
    """A clear of a 12 MB file gives its pages back, and the -wal file that the clear
    made as large shrinks back to WAL_LIMIT at the next stores (both kept 12 MB, for as
    long as the process lived)."""
    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    for i in range(5_000):
        store.put(f"k{i}", VALUE * 6, kind="chat", now=1.0)
    assert path.stat().st_size > 12_000_000
    store.clear()
    assert wal(path) > WAL_LIMIT
    for i in range(20):
        store.put(f"n{i}", VALUE, kind="chat", now=2.0)
    assert path.stat().st_size < 1_000_000
    assert wal(path) <= WAL_LIMIT
    assert store.count() == 20
    store.close()


def test_vacuum_turns_a_file_of_an_earlier_version_into_one_that_shrinks(
        tmp_path: Path) -> None:
    """A file made before free pages were given back (``auto_vacuum`` 0) is rebuilt by
    ``vacuum`` in the mode that does, so that later clears shrink it too."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                 "kind TEXT NOT NULL, tag TEXT, vector BLOB, created REAL NOT NULL, "
                 "expires REAL)")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    store.put("k", VALUE, kind="chat", now=1.0)
    store.vacuum(2.0)
    with store._connection() as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    for i in range(2_000):
        store.put(f"k{i}", VALUE * 5, kind="chat", now=3.0)
    store.clear()
    assert path.stat().st_size < 1_000_000
    assert store.get("k", 4.0) is None
    store.close()


def test_a_store_reads_as_many_rows_in_a_large_file_as_in_a_small_one(
        tmp_path: Path) -> None:
    """A store into a full file of ``max_entries`` 3,000 (which deletes the oldest entry)
    costs what a store into a full file of 100 does: it walked the newest entries, all
    3,000 of them, to find the first past the bound, at every store. A lookup costs the
    same in a file of 3,000 entries as in one of 100."""
    steps = {}
    for bound in (100, 3_000):
        store = SQLiteStore(tmp_path / f"{bound}.db", max_entries=bound)
        for i in range(bound + 10):
            store.put(f"k{i}", VALUE, kind="chat", now=float(i))
        assert store.count() == bound
        with counting(store) as put:
            store.put("new", VALUE, kind="chat", now=float(bound + 10))
        with counting(store) as get:
            assert store.get(f"k{bound}", float(bound + 10)) is not None
        assert store.count() == bound
        steps[bound] = (put[0], get[0])
        store.close()
    assert steps[3_000][0] <= steps[100][0] + 10, steps
    assert steps[3_000][1] <= steps[100][1] + 10, steps


def test_a_full_file_keeps_the_newest_entries(tmp_path: Path) -> None:
    """The bound keeps the newest ``max_entries`` entries by time stored; of two stored
    at the same time, the greater key."""
    store = SQLiteStore(tmp_path / "c.db", max_entries=3)
    for key, now in (("b", 5.0), ("a", 5.0), ("c", 5.0), ("e", 6.0), ("d", 6.0)):
        store.put(key, VALUE, kind="chat", now=now)
    assert [row.key for row in store.live(7.0, limit=10)] == ["e", "d", "c"]
    store.close()


async def test_the_semantic_file_keeps_its_live_rows_and_a_restart_loads_them(
        tmp_path: Path) -> None:
    """3,000 prompts stored through the semantic cache, each living 10 s of a clock that
    moves a second a store: the file holds the live ones and at most PURGE_EVERY dead
    ones (it held all 3,000), and a restart loads the live ones alone."""
    clock = ManualClock()
    path = str(tmp_path / "s.db")
    options = SemanticOptions(path=path, ttl={"default": 10})
    cache = SemanticCache(options, embedder=HashEmbedder(16).aieng_embed, clock=clock,
                          monotonic=clock)
    for i in range(3_000):
        await cache.aieng_cache_store(ask(f"question number {i}"), Completion(text="a"))
        clock.now += 1.0
    await cache.aclose()
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM entries").fetchone()[0]
    assert rows <= 10 + PURGE_EVERY
    again = SemanticCache(options, embedder=HashEmbedder(16).aieng_embed, clock=clock,
                          monotonic=clock)
    found = await again.aieng_cache_lookup(ask("question number 2999"))
    assert found is not None and len(again.index) == 9
    await again.aclose()


def _calls(cache: ExactCache | SemanticCache) -> Callable[[int], object]:
    async def call(i: int) -> None:
        request = ask(f"question {i} from user {i % 997}")
        await cache.aieng_cache_lookup(request)
        await cache.aieng_cache_store(request, Completion(text=f"answer {i}"))

    return call


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_lookup_and_a_store_of_a_new_key_keep_no_memory() -> None:
    """Past a warm-up that fills the memory level, each miss and store of a new request
    keeps nothing in the process (its LRU evicts as it stores; its counters are per
    level), nor a descriptor or a thread. (The SQLite level keeps its entries on disk:
    the tests above; its connections keep weak references to their last cursors, up to
    200 each, which would be most of what this measures in 1,000 calls.)"""
    cache = ExactCache(CacheOptions(max_entries=100))
    growth = await ameasure_growth(_calls(cache), warmup=300, calls=3_000)  # type: ignore[arg-type]
    await cache.aclose()
    assert growth.per_call < 16 and not growth.held, growth.report()
    assert cache.memory is not None and len(cache.memory) == 100


async def test_a_semantic_lookup_and_store_of_a_new_prompt_keep_no_memory() -> None:
    """The semantic cache's index (its rows reused, its partitions forgotten when empty)
    and its pending embeddings, past a warm-up that fills them: nothing kept."""
    cache = SemanticCache(SemanticOptions(max_entries=100),
                          embedder=HashEmbedder(16).aieng_embed)
    growth = await ameasure_growth(_calls(cache), warmup=300, calls=1_000)  # type: ignore[arg-type]
    await cache.aclose()
    assert growth.per_call < 16 and not growth.held, growth.report()
    assert len(cache.index) == 100
