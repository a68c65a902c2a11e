"""The SQLite level: a real file in WAL mode, persistence across reopen, TTLs on an injected
clock, vacuum, and many concurrent lookups."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import anyio
import attrs
import pytest
from aieng_cache import CacheOptions, ExactCache, SQLiteLevel, SQLiteStore, request_key
from aieng_hookspecs.types import Completion, Message, Request, TokenLogprob, Usage
from hypothesis import HealthCheck, given, settings

from aieng_core.testing import ManualClock
from aieng_core.testing import strategies as aist

pytestmark = pytest.mark.anyio


def ask(text: str, **params: object) -> Request:
    return Request(messages=(Message("user", text),), **params)  # type: ignore[arg-type]


ANSWER = Completion(text="RRF sums 1/(k + rank).", finish_reason="length",
                    usage=Usage(prompt_tokens=7, completion_tokens=5), model="m",
                    logprobs=(TokenLogprob("RRF", -0.25), TokenLogprob(" sums", -1.5)))


def sqlite_only(path: Path, clock: ManualClock, **options: object) -> ExactCache:
    return ExactCache(CacheOptions(memory=False, sqlite=str(path), **options),  # type: ignore[arg-type]
                      clock=clock)


async def test_wal_mode_and_persistence_across_reopen(tmp_path: Path) -> None:
    """Entries written by one cache are found by a new cache on the same file, in WAL mode,
    every field intact."""
    path = tmp_path / "sub" / "cache.db"
    clock = ManualClock()
    first = sqlite_only(path, clock)
    await first.aieng_cache_store(ask("What is RRF?"), ANSWER)
    await first.aclose()
    second = sqlite_only(path, clock)
    found = await second.aieng_cache_lookup(ask("What  is RRF?"))
    assert found is not None and found.cached
    assert found.text == ANSWER.text and found.usage == ANSWER.usage
    assert found.logprobs == ANSWER.logprobs and found.finish_reason == "length"
    level = second.levels[0]
    assert isinstance(level, SQLiteLevel)
    assert await anyio.to_thread.run_sync(level.store.journal_mode) == "wal"
    await second.aclose()
    with sqlite3.connect(path) as conn:  # the file really holds the entry
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1


async def test_ttl_per_content_type_on_an_injected_clock(tmp_path: Path) -> None:
    """A chat entry expires after ttl.default, a json one after ttl.json; an expired entry
    is a miss and is deleted on lookup."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock, ttl={"default": 60, "json": 3600})
    chat_request = ask("hi")
    json_request = ask("hi", response_schema={"type": "object"})
    await cache.aieng_cache_store(chat_request, ANSWER)
    await cache.aieng_cache_store(json_request, ANSWER)
    clock.now += 59.9
    assert await cache.aieng_cache_lookup(chat_request) is not None
    clock.now += 0.1
    assert await cache.aieng_cache_lookup(chat_request) is None
    assert await cache.aieng_cache_lookup(json_request) is not None
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel)
    assert level.store.count() == 1  # the expired chat entry was purged lazily
    clock.now += 3600
    assert await cache.aieng_cache_lookup(json_request) is None
    await cache.aclose()


async def test_inf_ttl_never_expires_and_vacuum_purges(tmp_path: Path) -> None:
    """``inf`` keeps an entry for ever; ``vacuum`` deletes expired entries (never looked up
    again) and compacts the file."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock, ttl={"default": 10, "faq": math.inf})
    for i in range(50):
        await cache.aieng_cache_store(ask(f"question {i}"), Completion(text="x" * 2000))
    forever = ask("keep", metadata={"cache_type": "faq"})
    await cache.aieng_cache_store(forever, ANSWER)
    clock.now += 1e9
    assert await cache.vacuum() == 50
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 1
    assert await cache.aieng_cache_lookup(forever) is not None
    await cache.aclose()


async def store_and_find_at_once(cache: ExactCache, n: int) -> dict[int, str | None]:
    """``n`` tasks at once each store an answer and look it up: what each found."""
    results: dict[int, str | None] = {}

    async def worker(i: int) -> None:
        await cache.aieng_cache_store(ask(f"q{i}"), Completion(text=f"a{i}"))
        found = await cache.aieng_cache_lookup(ask(f"q{i}"))
        results[i] = None if found is None else found.text

    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(worker, i)
    return results


async def test_many_concurrent_lookups_and_stores(tmp_path: Path) -> None:
    """200 tasks storing and looking up at once on one file all see their own answers,
    through no more connections than the level's threads."""
    cache = sqlite_only(tmp_path / "c.db", ManualClock())
    assert await store_and_find_at_once(cache, 200) == {i: f"a{i}" for i in range(200)}
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and 1 <= level.store.idle_connections <= 4
    await cache.aclose()
    assert level.store.idle_connections == 0


async def test_an_in_memory_database_serves_concurrent_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite = ":memory:"`` is one in-memory database for the whole level: concurrent
    stores and lookups all see it, instead of each new connection opening an empty
    database of its own (``no such table: entries``, lost entries). No file is created."""
    monkeypatch.chdir(tmp_path)
    cache = ExactCache(CacheOptions(memory=False, sqlite=":memory:"), clock=ManualClock())
    assert await store_and_find_at_once(cache, 50) == {i: f"a{i}" for i in range(50)}
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 50
    assert await cache.vacuum() == 0
    await cache.aclose()
    assert list(tmp_path.iterdir()) == []


def test_store_rows_and_live_listing(tmp_path: Path) -> None:
    """The store lists live rows newest first and reports a closed database clearly."""
    store = SQLiteStore(tmp_path / "s.db")
    for i in range(3):
        store.put(f"k{i}", "v", kind="chat", now=float(i), expires_at=100.0 if i else 5.0)
    assert [r.key for r in store.live(10.0, limit=10)] == ["k2", "k1"]
    assert store.get("k0", 10.0) is None and store.count() == 2
    store.close()
    with pytest.raises(RuntimeError, match="is closed"):
        store.get("k1", 0.0)


def test_a_file_made_before_scopes_gains_the_column(tmp_path: Path) -> None:
    """A file whose table predates the ``scope`` column opens, gains it, and keeps its rows
    (scope NULL: listed for every scope)."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                     "kind TEXT NOT NULL, tag TEXT, vector BLOB, created REAL NOT NULL, "
                     "expires REAL)")
        conn.execute("INSERT INTO entries VALUES ('old', 'v', 'chat', 'p', NULL, 1.0, NULL)")
    conn.close()
    store = SQLiteStore(path)
    store.put("new", "v", kind="chat", now=2.0, tag="p", scope="mine")
    store.put("other", "v", kind="chat", now=3.0, tag="p", scope="theirs")
    assert [r.key for r in store.live(10.0, limit=10, scope="mine")] == ["new", "old"]
    assert [r.key for r in store.live(10.0, limit=10)] == ["other", "new", "old"]
    store.close()


@pytest.mark.parametrize("what", ["folder", "text file"])
async def test_a_path_that_is_no_database_is_named(tmp_path: Path, what: str) -> None:
    """A SQLite level on a folder or on a file that is not a database fails with the
    SQLite error type, its message naming the path (not SQLite's bare message), and
    leaves the file as it was."""
    path = tmp_path / "cache.db"
    if what == "folder":
        path.mkdir()
        expected: type[sqlite3.Error] = sqlite3.OperationalError
        reason = "it is a folder"
    else:
        path.write_text("notes, not a database\n" * 100, encoding="utf-8")
        expected, reason = sqlite3.DatabaseError, "file is not a database"
    cache = sqlite_only(path, ManualClock())
    with pytest.raises(expected, match=rf"cache database {re.escape(str(path))}.*{reason}"):
        await cache.aieng_cache_lookup(ask("hi"))
    with pytest.raises(expected, match=re.escape(str(path))):
        await cache.aieng_cache_store(ask("hi"), ANSWER)
    await cache.aclose()
    if what == "text file":
        assert path.read_text(encoding="utf-8").startswith("notes, not a database")


async def test_unreadable_row_is_a_miss_and_deleted(tmp_path: Path) -> None:
    """A corrupted stored value is logged, deleted and missed, never raised to the run."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock)
    request = ask("hi")
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel)
    level.store.put(request_key(request, cache.scope), "not json", kind="chat", now=clock())
    assert await cache.aieng_cache_lookup(request) is None
    assert cache.stats.errors == 1 and level.store.count() == 0
    await cache.aclose()


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file for every example of the property below."""
    return tmp_path_factory.mktemp("prop") / "c.db"


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=aist.requests(), completion=aist.completions())
async def test_any_completion_round_trips_through_the_file(
    shared_db: Path, request: Request, completion: Completion
) -> None:
    """Any request stored with any completion is read back from disk by a fresh cache equal
    in every field, marked cached."""
    options = CacheOptions(memory=False, sqlite=str(shared_db), cache_sampled=True)
    writer = ExactCache(options)
    await writer.aieng_cache_store(request, completion)
    await writer.aclose()
    reader = ExactCache(options)
    found = await reader.aieng_cache_lookup(request)
    await reader.aclose()
    assert found == attrs.evolve(completion, cached=True)
