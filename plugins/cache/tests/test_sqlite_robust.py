"""The SQLite level under trouble: a damaged file, two processes on one file, a clock that
goes back, expiry under concurrent calls."""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_cache import CacheOptions, ExactCache, SQLiteLevel, SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request

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


_WRITER = """
import sys, anyio
from aieng_cache import CacheOptions, ExactCache, SQLiteLevel, SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request

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


async def test_a_clock_going_back_keeps_entries_and_they_still_expire(tmp_path: Path) -> None:
    """A clock that jumps back (NTP) makes no entry unreadable: one stored before is
    served until the clock passes its expiry again, one stored after lives its TTL by the
    clock's new time."""
    clock = ManualClock()
    cache = sqlite_only(tmp_path / "c.db", clock, ttl={"default": 60})
    await cache.aieng_cache_store(ask("hi"), Completion(text="hello"))
    clock.now -= 3600
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    await cache.aieng_cache_store(ask("later"), Completion(text="x"))
    clock.now += 59
    assert await cache.aieng_cache_lookup(ask("later")) is not None
    clock.now += 2
    assert await cache.aieng_cache_lookup(ask("later")) is None
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    clock.now += 3600
    assert await cache.aieng_cache_lookup(ask("hi")) is None
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
