"""Time in the caches: in-process expiry on the monotonic clock, shared expiry on the wall
clock (steps of it either way), promoted hits bounded by their TTL, the semantic cache's
file bound, and what the ``ttl`` option takes. Clocks are fakes the tests move."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from aieng_cache import (
    CacheOptions,
    ExactCache,
    SemanticCache,
    SemanticOptions,
    SQLiteStore,
    Stored,
    encode_completion,
)
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing import ManualClock
from aieng_core.testing.doubles import HashEmbedder

pytestmark = pytest.mark.anyio

PROMPT = "how do i reset my password"


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


async def test_the_memory_level_expires_on_the_monotonic_clock() -> None:
    """The memory level's entries expired on the wall clock: set back an hour, it kept an
    entry an hour past its TTL (set forward, it dropped every one). They now live their
    TTL on the monotonic clock, whatever the wall clock does."""
    wall, mono = ManualClock(), ManualClock(50.0)
    cache = ExactCache(CacheOptions(ttl={"default": 60}), clock=wall, monotonic=mono)
    await cache.aieng_cache_store(ask("hi"), Completion(text="hello"))
    wall.now += 86_400  # forward a day: nothing is due
    mono.now += 30
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    wall.now -= 86_400 + 3600  # back an hour before the store
    mono.now += 30
    assert await cache.aieng_cache_lookup(ask("hi")) is None


class _FarLevel:
    """A level (another program's store, a clock of its own) that says its entry lives a
    day, whatever the TTL; or, not ``holding``, a level that has none."""

    def __init__(self, name: str, holding: bool) -> None:
        self.name, self.holding = name, holding
        self.payload = encode_completion(Completion(text="far"))
        self.puts: list[float] = []

    async def get(self, key: str, now: float) -> Stored | None:
        return Stored(self.payload, now + 86_400) if self.holding else None

    async def put(self, key: str, payload: str, *, kind: str, now: float,
                  expires_at: float) -> None:
        self.puts.append(expires_at - now)

    async def delete(self, key: str) -> None:
        pass

    async def clear(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_a_promoted_hit_lives_no_longer_than_its_ttl() -> None:
    """A hit promoted from a slower level kept the expiry that level gave, a day for a
    60 s TTL; it is now bounded by the content type's TTL, in memory and in the faster
    levels it is copied into."""
    clock = ManualClock()
    fast, slow = _FarLevel("fast", holding=False), _FarLevel("far", holding=True)
    cache = ExactCache(CacheOptions(ttl={"default": 60}), levels=[fast, slow], clock=clock,
                       monotonic=clock)
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    assert fast.puts == [60.0]
    clock.now += 59
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    assert cache.stats.hits == {"far": 1, "memory": 1}
    clock.now += 2
    assert cache.memory is not None
    assert cache.memory.get(cache.key(ask("hi")), clock.now) is None


async def test_the_semantic_index_expires_on_the_monotonic_clock() -> None:
    """The semantic index's entries expired on the wall clock (an hour longer after it
    was set back an hour); they now live their TTL on the monotonic clock."""
    wall, mono = ManualClock(), ManualClock(50.0)
    cache = SemanticCache(SemanticOptions(threshold=0.8, ttl={"default": 60}),
                          embedder=HashEmbedder().aieng_embed, clock=wall, monotonic=mono)
    await cache.aieng_cache_store(ask(PROMPT), Completion(text="a"))
    wall.now -= 3600
    mono.now += 59
    assert await cache.aieng_cache_lookup(ask(PROMPT + " please")) is not None
    mono.now += 1
    assert await cache.aieng_cache_lookup(ask(PROMPT + " please")) is None
    assert await cache.aieng_cache_lookup(ask(PROMPT)) is None


async def test_a_semantic_load_after_the_clock_went_back_keeps_no_row_past_its_ttl(
        tmp_path: Path) -> None:
    """A restart after the wall clock went back an hour loaded the rows stored in the
    last hour with an hour more to live. Such rows (stored "in the future") are not
    loaded; the rows loaded live what is left of their TTL, on the monotonic clock."""
    path = str(tmp_path / "s.db")
    wall, mono = ManualClock(), ManualClock(50.0)
    options = SemanticOptions(threshold=0.8, path=path, ttl={"default": 60})
    first = SemanticCache(options, embedder=HashEmbedder().aieng_embed, clock=wall,
                          monotonic=mono)
    await first.aieng_cache_store(ask(PROMPT), Completion(text="before"))
    await first.aclose()
    wall.now += 20
    kept = SemanticCache(options, embedder=HashEmbedder().aieng_embed, clock=wall,
                         monotonic=mono)
    assert await kept.aieng_cache_lookup(ask(PROMPT)) is not None
    mono.now += 40  # 20 s on the wall, then 40 s in the index: its 60 s are up
    assert await kept.aieng_cache_lookup(ask(PROMPT)) is None
    await kept.aclose()
    wall.now -= 3600
    later = SemanticCache(options, embedder=HashEmbedder().aieng_embed, clock=wall,
                          monotonic=mono)
    assert await later.aieng_cache_lookup(ask(PROMPT)) is None
    assert len(later.index) == 0
    await later.aclose()


async def test_the_semantic_file_keeps_at_most_file_max_entries(tmp_path: Path) -> None:
    """The semantic cache's file had no bound (its ``max_entries`` bounds the index in
    memory; evicted rows stayed in the file until they expired, for good under an
    infinite TTL). ``file_max_entries`` bounds it, the oldest rows deleted first; a
    restart loads the newest."""
    path = tmp_path / "s.db"
    clock = ManualClock()
    options = SemanticOptions(threshold=0.99, path=str(path), file_max_entries=3,
                              ttl={"default": math.inf})
    cache = SemanticCache(options, embedder=HashEmbedder().aieng_embed, clock=clock,
                          monotonic=clock)
    for i in range(5):
        clock.now += 1
        await cache.aieng_cache_store(ask(f"question number {i}"), Completion(text=f"{i}"))
    await cache.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (3,)
    again = SemanticCache(options, embedder=HashEmbedder().aieng_embed, clock=clock,
                          monotonic=clock)
    found = [await again.aieng_cache_lookup(ask(f"question number {i}")) for i in range(5)]
    assert [None if f is None else f.text for f in found] == [None, None, "2", "3", "4"]
    await again.aclose()


def test_file_max_entries_is_a_count_and_needs_a_path() -> None:
    """``file_max_entries`` is an integer of at least 0, and bounds a file: without
    ``path`` it is refused, saying so."""
    with pytest.raises(ValueError, match="file_max_entries must be at least 0"):
        SemanticOptions(path="s.db", file_max_entries=-1)
    with pytest.raises(TypeError, match="file_max_entries must be an integer"):
        SemanticOptions(path="s.db", file_max_entries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="set path"):
        SemanticOptions(file_max_entries=10)


@pytest.mark.parametrize(("ttl", "error", "words"), [
    ({"default": "1h"}, ValueError, "a string: write the seconds as a number"),
    ({"default": "3600"}, ValueError, "a string"),
    ({"default": 0}, ValueError, "caches nothing"),
    ({"default": -5}, ValueError, "caches nothing"),
    ({"default": math.nan}, ValueError, "ttl.default must be a number of seconds > 0"),
    ({"default": True}, ValueError, "ttl.default must be a number of seconds > 0"),
    ({"default": 60, "json": -math.inf}, ValueError, "ttl.json must be"),
    (3600, TypeError, r"ttl = \{ default = 3600 \}"),
])
def test_a_ttl_that_is_no_positive_number_of_seconds_is_refused(
        ttl: object, error: type[Exception], words: str) -> None:
    """The TTL's unit is the second: a string (units or not), zero, a negative number,
    NaN or a boolean is refused naming the entry and why; a bare number says how to
    write the table. ``inf`` (never) and fractions are taken."""
    for options in (CacheOptions, SemanticOptions):
        with pytest.raises(error, match=words):
            options(ttl=ttl)  # type: ignore[arg-type]
    assert CacheOptions(ttl={"default": 0.5, "faq": math.inf}).ttl == {
        "default": 0.5, "faq": math.inf}


def test_a_row_stored_in_the_future_is_no_live_row(tmp_path: Path) -> None:
    """The SQLite store reads a row stored more than a second after its ``now`` as
    expired, in lookups, loads and purges alike; within a second it is live (clocks of
    machines sharing a file)."""
    store = SQLiteStore(tmp_path / "c.db")
    store.put("soon", "v", kind="chat", now=100.5, expires_at=200.0)
    store.put("ahead", "v", kind="chat", now=1000.0, expires_at=1060.0)
    assert [row.key for row in store.live(100.0, limit=5)] == ["soon"]
    assert store.get("soon", 100.0) is not None
    assert store.purge(100.0) == 1
    assert store.get("ahead", 1000.0) is None  # purged: gone for good
    store.close()
