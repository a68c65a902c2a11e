"""The SQLite level under trouble: a damaged file, two processes on one file, a clock that
goes back, expiry under concurrent calls."""

from __future__ import annotations

import math
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_cache import CacheOptions, ExactCache, SemanticOptions, SQLiteLevel, SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request
from structlog.testing import capture_logs

from aieng_core.testing import ManualClock

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def sqlite_only(path: Path, clock: ManualClock, **options: Any) -> ExactCache:
    return ExactCache(CacheOptions(memory=False, sqlite=str(path), **options), clock=clock)


async def test_a_damaged_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A cache file whose pages were damaged (a disk error, a copy cut short) opens, but
    reading it fails: the error keeps SQLite's type and code and names the file and the
    way out (delete it), instead of SQLite's bare "database disk image is malformed"."""
    path = tmp_path / "cache.db"
    cache = sqlite_only(path, ManualClock())
    for i in range(200):
        await cache.aieng_cache_store(ask(f"question {i}"), Completion(text="x" * 500))
    await cache.aclose()
    with path.open("r+b") as file:  # pages 4-13: the table's and its key index's
        file.seek(4096 * 3)
        file.write(b"\xff" * 4096 * 10)
    cache = sqlite_only(path, ManualClock())
    errors: list[sqlite3.DatabaseError] = []
    for i in range(0, 200, 10):
        try:
            await cache.aieng_cache_lookup(ask(f"question {i}"))
        except sqlite3.DatabaseError as exc:
            errors.append(exc)
    await cache.aclose()
    assert errors, "the damage was not seen"
    for error in errors:
        assert type(error) is sqlite3.DatabaseError
        assert error.sqlite_errorname == "SQLITE_CORRUPT"
        assert re.search(rf"cache database {re.escape(str(path))} is damaged", str(error))
        assert "malformed" in str(error) and "delete it" in str(error)


async def test_a_locked_file_names_the_file(tmp_path: Path) -> None:
    """A write that waits past the busy timeout for another writer's lock fails with
    SQLite's OperationalError naming the file."""
    path = tmp_path / "cache.db"
    level = SQLiteLevel(path)
    level.store = SQLiteStore(path, busy_timeout=0.0)  # no waiting for the lock
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(path)), levels=[level])
    await cache.aieng_cache_store(ask("first"), Completion(text="a"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        with pytest.raises(sqlite3.OperationalError,
                           match=rf"cache database {re.escape(str(path))}: database is locked"):
            await cache.aieng_cache_store(ask("second"), Completion(text="b"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await cache.aclose()


async def test_a_lock_held_past_the_busy_timeout_names_the_limit_and_the_option(
        tmp_path: Path) -> None:
    """The busy timeout was fixed (5 s) and its error said "database is locked" only; it
    is an option (``sqlite_busy_timeout``, seconds), and the error names the limit, its
    value and the option that raises it."""
    path = tmp_path / "cache.db"
    cache = sqlite_only(path, ManualClock(), sqlite_busy_timeout=0)
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.busy_timeout == 0
    await cache.aieng_cache_store(ask("first"), Completion(text="a"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            await cache.aieng_cache_store(ask("second"), Completion(text="b"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await cache.aclose()
    assert "database is locked" in str(caught.value)
    assert "busy timeout (0 s)" in str(caught.value)
    assert "sqlite_busy_timeout" in str(caught.value)


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "5s", True])
def test_a_busy_timeout_that_is_no_finite_number_of_seconds_is_refused(value: object) -> None:
    """Both caches' busy timeouts (and the store's own) are finite seconds of at least 0:
    anything else is refused naming the option."""
    with pytest.raises(ValueError, match="sqlite_busy_timeout must be a finite number"):
        CacheOptions(sqlite="c.db", sqlite_busy_timeout=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="file_busy_timeout must be a finite number"):
        SemanticOptions(path="s.db", file_busy_timeout=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_timeout must be a finite number"):
        SQLiteStore(":memory:", busy_timeout=value)  # type: ignore[arg-type]


_WRITER = """
import sys, anyio
from aieng_cache import CacheOptions, ExactCache, SemanticOptions, SQLiteLevel, SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request
from structlog.testing import capture_logs

async def main() -> None:
    cache = ExactCache(CacheOptions(memory=False, sqlite=sys.argv[1]))
    for i in range(int(sys.argv[2]), int(sys.argv[2]) + 50):
        request = Request(messages=(Message("user", f"q{i}"),))
        await cache.aieng_cache_store(request, Completion(text=f"a{i}"))
    await cache.aclose()

anyio.run(main)
"""


async def test_two_processes_write_one_file_and_each_reads_the_other(tmp_path: Path) -> None:
    """Two processes storing into one file at once (WAL, busy timeout) both succeed, and
    a third cache reads every entry either wrote."""
    path = tmp_path / "shared.db"
    async with anyio.create_task_group() as group:
        for start in (0, 50):  # check=True: a writer that fails fails the test
            group.start_soon(anyio.run_process, [sys.executable, "-c", _WRITER, str(path),
                                                 str(start)])
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(path)))
    for i in range(100):
        found = await cache.aieng_cache_lookup(ask(f"q{i}"))
        assert found is not None and found.text == f"a{i}"
    await cache.aclose()


async def test_a_clock_going_back_keeps_no_entry_past_its_ttl(tmp_path: Path) -> None:
    """A wall clock set back an hour (an NTP step, a VM resumed) kept an entry stored just
    before an hour past its 60 s TTL (its expiry, by the new time, an hour away). A row
    stored "in the future" is now a miss (deleted, stored again on the next answer); one
    stored after the step lives its TTL by the clock's new time; nothing fails."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock, ttl={"default": 60})
    await cache.aieng_cache_store(ask("hi"), Completion(text="hello"))
    clock.now += 10
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    clock.now -= 3600
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 0  # deleted as read
    await cache.aieng_cache_store(ask("hi"), Completion(text="again"))
    await cache.aieng_cache_store(ask("later"), Completion(text="x"))
    clock.now += 59
    found = await cache.aieng_cache_lookup(ask("hi"))
    assert found is not None and found.text == "again"
    assert await cache.aieng_cache_lookup(ask("later")) is not None
    clock.now += 2
    assert await cache.aieng_cache_lookup(ask("later")) is None
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    await cache.aclose()


async def test_a_clock_going_forward_expires_what_is_due_and_says_so(tmp_path: Path) -> None:
    """A wall clock set forward a day expires the file's entries by the new time (other
    processes read the same clock), logging the step (``cache.clock_step``) rather than
    wiping silently; the memory level counts on the monotonic clock and keeps its own."""
    wall, mono = ManualClock(), ManualClock(50.0)
    cache = ExactCache(CacheOptions(sqlite=str(tmp_path / "c.db"), ttl={"default": 60}),
                       clock=wall, monotonic=mono)
    await cache.aieng_cache_store(ask("hi"), Completion(text="hello"))
    wall.now += 86_400
    mono.now += 1
    with capture_logs() as logs:
        found = await cache.aieng_cache_lookup(ask("hi"))
    assert found is not None and cache.stats.hits == {"memory": 1}
    steps = [entry for entry in logs if entry["event"] == "cache.clock_step"]
    assert len(steps) == 1 and steps[0]["step_s"] == 86_399.0
    assert cache.memory is not None
    cache.memory.clear()
    assert await cache.aieng_cache_lookup(ask("hi")) is None  # the file's entry: expired
    await cache.aclose()


async def test_the_bound_keeps_new_entries_after_the_clock_went_back(tmp_path: Path) -> None:
    """With ``sqlite_max_entries``, entries stored before the clock went back were the
    newest by their time: each store past the bound deleted itself (the oldest), and
    nothing new was kept until the clock caught up. Rows stored in the future are dead and
    go first; the new entries stay and answer."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock, sqlite_max_entries=2)
    for i in range(2):
        clock.now += 1
        await cache.aieng_cache_store(ask(f"before {i}"), Completion(text="old"))
    clock.now -= 3600
    for i in range(2):
        clock.now += 1
        await cache.aieng_cache_store(ask(f"after {i}"), Completion(text=f"new {i}"))
    for i in range(2):
        found = await cache.aieng_cache_lookup(ask(f"after {i}"))
        assert found is not None and found.text == f"new {i}"
    await cache.aclose()


async def test_expiry_under_concurrent_lookups_and_stores(tmp_path: Path) -> None:
    """Lookups of expired entries (each deleting its row) racing stores that replace them
    never lose a fresh entry nor serve an expired one."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock, ttl={"default": 10})
    for i in range(40):
        await cache.aieng_cache_store(ask(f"q{i}"), Completion(text="old"))
    clock.now += 11
    served: list[str | None] = []

    async def look(i: int) -> None:
        found = await cache.aieng_cache_lookup(ask(f"q{i}"))
        served.append(None if found is None else found.text)

    async with anyio.create_task_group() as group:
        for i in range(40):
            group.start_soon(look, i)
            group.start_soon(cache.aieng_cache_store, ask(f"q{i}"), Completion(text="new"))
    assert "old" not in served
    for i in range(40):
        found = await cache.aieng_cache_lookup(ask(f"q{i}"))
        assert found is not None and found.text == "new"
    await cache.aclose()
