"""The SQLite file on the second day: its layout marked (``PRAGMA user_version``), a file
of a newer layout refused, a file on a read-only mount (a container) still answering, a
folder moved to another path."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from aieng_cache import CacheOptions, ExactCache, SQLiteStore
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing import can_unshare_mounts, run_on_read_only_mount, sqlite_layout

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def test_a_new_file_is_marked_with_its_layout(tmp_path: Path) -> None:
    """A file the cache creates says which layout it holds (version 1), so that a later
    layout can be told apart."""
    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    store.put("k", "v", kind="chat", now=1.0)
    store.close()
    assert sqlite_layout(path) == 1


def test_a_file_made_before_the_marker_is_read_and_marked(tmp_path: Path) -> None:
    """A file aieng-cache 0.1.0 wrote (no ``scope`` column, ``user_version`` 0) is read as
    layout 1, its rows kept, and marked."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                 "kind TEXT NOT NULL, tag TEXT, vector BLOB, created REAL NOT NULL, "
                 "expires REAL)")
    conn.execute("INSERT INTO entries VALUES ('old', 'v', 'chat', NULL, NULL, 1.0, NULL)")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    row = store.get("old", 2.0)
    store.close()
    assert row is not None and row.value == "v"
    assert sqlite_layout(path) == 1


async def test_a_file_of_a_newer_layout_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A file a newer aieng-cache wrote (``user_version`` 2) is refused, naming the file,
    the version found and what to do; it is neither read as this layout nor changed."""
    path = tmp_path / "newer.db"
    store = SQLiteStore(path)
    store.put("k", "v", kind="chat", now=1.0)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = path.read_bytes()
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(path)))
    with pytest.raises(sqlite3.DatabaseError) as caught:
        await cache.aieng_cache_lookup(ask("hi"))
    await cache.aclose()
    message = str(caught.value)
    assert str(path) in message and "version 2" in message
    assert "newer aieng-cache" in message and "upgrade" in message
    assert path.read_bytes() == before and sqlite_layout(path) == 2


async def test_a_moved_folder_with_spaces_and_accents_still_answers(tmp_path: Path) -> None:
    """The file stores no path: copied to another folder (spaces, non-ASCII) it answers
    what it stored."""
    first = tmp_path / "a" / "cache.db"
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(first)))
    await cache.aieng_cache_store(ask("hi"), Completion(text="hello"))
    await cache.aclose()
    moved = tmp_path / "état du cache" / "cache.db"
    shutil.copytree(first.parent, moved.parent)
    shutil.rmtree(first.parent)
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(moved)))
    found = await cache.aieng_cache_lookup(ask("hi"))
    await cache.aclose()
    assert found is not None and found.text == "hello"


_READER = """
import sys
import anyio
sys.path.insert(0, {here!r})
from aieng_cache import CacheOptions, ExactCache
from aieng_hookspecs.types import Completion, Message, Request

def ask(text):
    return Request(messages=(Message("user", text),))

async def main():
    cache = ExactCache(CacheOptions(memory=False, sqlite=sys.argv[1]))
    found = await cache.aieng_cache_lookup(ask("kept"))
    print("found", found.text if found else None)
    await cache.aieng_cache_store(ask("new"), Completion(text="lost"))
    print("stored without error")
    print("new", await cache.aieng_cache_lookup(ask("new")))
    print("vacuumed", await cache.vacuum())
    await cache.clear()
    print("found again", (await cache.aieng_cache_lookup(ask("kept"))).text)
    await cache.aclose()

anyio.run(main)
"""


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs unshare -m (Linux, root) for a ro mount")
async def test_a_file_on_a_read_only_mount_serves_lookups_and_skips_stores(
        tmp_path: Path) -> None:
    """A container mounts a warm cache read-only (no -wal or -shm file can be made): its
    entries still answer; a store, a vacuum and a clear write nothing and fail nothing
    (the cache is an optimisation), and a warning names the file and why."""
    folder = tmp_path / "warm cache"
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(folder / "c.db")))
    await cache.aieng_cache_store(ask("kept"), Completion(text="from the image"))
    await cache.aclose()
    assert sorted(os.listdir(folder)) == ["c.db"]
    before = (folder / "c.db").read_bytes()
    mount = tmp_path / "mnt"
    mount.mkdir()
    target = mount / "c.db"
    script = _READER.format(here=str(Path(__file__).resolve().parents[1]))
    done = run_on_read_only_mount(folder, mount, script, str(target))
    assert done.returncode == 0, done.stderr
    stdout = done.stdout
    printed = [line for line in stdout.splitlines() if "cache.read_only" not in line]
    assert printed == [
        "found from the image", "stored without error", "new None", "vacuumed 0",
        "found again from the image"], stdout
    warnings = [line for line in stdout.splitlines() if "cache.read_only" in line]
    assert warnings and all(str(target) in line for line in warnings)
    assert "stores, deletions, clear and vacuum write nothing" in warnings[0]
    assert (folder / "c.db").read_bytes() == before


async def test_a_value_of_a_newer_format_is_missed_and_left_for_its_writer(
        tmp_path: Path) -> None:
    """During a rolling upgrade a newer aieng-cache shares the file and writes values of
    a format this one cannot read: they are a miss (logged), never a wrong answer, and
    are not deleted (the newer workers still read them); a value that is no entry at all
    is deleted as before."""
    path = tmp_path / "shared.db"
    cache = ExactCache(CacheOptions(memory=False, sqlite=str(path)))
    newer, broken = ask("asked of a newer worker"), ask("broken")
    store = SQLiteStore(path)
    store.put(cache.key(newer), json.dumps({"f": 2, "text": "new shape"}), kind="chat",
              now=1.0)
    store.put(cache.key(broken), "{not json", kind="chat", now=1.0)
    assert await cache.aieng_cache_lookup(newer) is None
    assert await cache.aieng_cache_lookup(broken) is None
    await cache.aclose()
    assert cache.stats.errors == 2
    assert store.get(cache.key(newer), 2.0) is not None
    assert store.get(cache.key(broken), 2.0) is None
    store.close()
