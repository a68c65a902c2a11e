"""``long-memory`` under failure: a full disk, a damaged or misplaced file, a write that
fails halfway, closing while a call is in flight. What was stored survives, and every
error names the file and says what to do."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs.types import MemoryItem, Query

from aieng_core.testing import open_files, umask

pytestmark = pytest.mark.anyio


def long(text: str, **metadata: Any) -> MemoryItem:
    """A long-term memory item."""
    return MemoryItem(text=text, kind="long", metadata=metadata)


async def texts(memory: SQLiteMemory, query: str, k: int = 100) -> list[str]:
    """The texts recalled for ``query``."""
    return [item.text for item in await memory.aieng_memory_recall(Query(text=query), k)]


def words_only(path: Path | str) -> SQLiteMemory:
    """A memory on ``path`` that ranks by word overlap (no embedder is loaded)."""
    return SQLiteMemory(MemoryOptions(path=str(path), embeddings=False))


async def test_a_full_disk_is_a_clear_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself when the disk is full: the error is that
    (naming the file), not the failed ROLLBACK after it, and the items already kept stay."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("the deploy key rotates on mondays")])
    conn = memory._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # no room for another page
    with pytest.raises(sqlite3.OperationalError) as caught:
        await memory.aieng_memory_store(
            [long(f"note {n} " + "x" * 4000) for n in range(20)])
    message = str(caught.value)
    assert "full" in message and str(path) in message, message
    assert "rollback" not in message.lower()
    assert caught.value.__cause__ is not None  # chained to SQLite's own error
    assert not conn.in_transaction
    assert await texts(memory, "deploy key") == ["the deploy key rotates on mondays"]
    memory.close()


async def test_a_write_failing_halfway_stores_none_of_its_items(tmp_path: Path) -> None:
    """One store is one transaction: an item that fails rolls back the items of the same
    call before it, and the memory keeps working."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("kept before note")])
    memory._connection().execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON memory WHEN NEW.text = 'poison note' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.Error, match="refused"):
        await memory.aieng_memory_store(
            [long("first new note"), long("second new note"), long("poison note")])
    assert await texts(memory, "note") == ["kept before note"]
    await memory.aieng_memory_store([long("later note")])
    assert sorted(await texts(memory, "note")) == ["kept before note", "later note"]
    memory.close()


async def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    """A damaged file (or one of another kind) is an error naming it and saying what to
    do; the file itself is left as it was."""
    path = tmp_path / "memory.sqlite"
    path.write_bytes(b"these are not the pages of a database\n" * 200)
    memory = words_only(path)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        await memory.aieng_memory_store([long("hello")])
    message = str(caught.value)
    assert str(path) in message and "delete" in message, message
    assert caught.value.__cause__ is not None
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        await memory.aieng_memory_recall(Query(text="hello"), 3)
    assert path.read_bytes().startswith(b"these are not")
    memory.close()


async def test_a_folder_as_path_is_named(tmp_path: Path) -> None:
    """A path that is a folder fails with its name and says it is a folder."""
    memory = words_only(tmp_path)
    with pytest.raises(sqlite3.OperationalError) as caught:
        await memory.aieng_memory_store([long("hello")])
    assert str(tmp_path) in str(caught.value) and "folder" in str(caught.value)
    memory.close()


async def test_close_while_a_store_is_in_flight_keeps_the_item(tmp_path: Path) -> None:
    """Closing waits for the write in flight (one transaction), and a new memory on the
    file recalls it; closing twice is harmless."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    items = [long(f"item {n} of the batch") for n in range(2000)]
    async with anyio.create_task_group() as group:
        group.start_soon(memory.aieng_memory_store, items)
        await anyio.lowlevel.checkpoint()
        await memory.aieng_pipeline_close()
    await memory.aieng_pipeline_close()
    memory.close()
    again = words_only(path)
    assert len(await texts(again, "batch", k=5000)) == 2000
    again.close()


async def test_a_cancelled_store_is_whole_or_absent(tmp_path: Path) -> None:
    """A store cancelled while its transaction runs (in a worker thread) is committed
    whole or not at all; the memory keeps working after it."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    with anyio.move_on_after(0.001):
        await memory.aieng_memory_store([long(f"cancelled {n} note") for n in range(3000)])
    found = len(await texts(memory, "cancelled", k=5000))
    assert found in (0, 3000)
    await memory.aieng_memory_store([long("after note")])
    assert await texts(memory, "after") == ["after note"]
    memory.close()


async def test_a_read_only_file_is_named_and_says_what_to_do(tmp_path: Path) -> None:
    """A file the process may not write is an error naming it and the permissions to
    give; what it holds is still recalled."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("kept note")])
    memory.close()
    # Root ignores file modes: open the file read-only the way SQLite would find it.
    memory._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
    with pytest.raises(sqlite3.OperationalError) as caught:
        await memory.aieng_memory_store([long("new note")])
    assert str(path) in str(caught.value) and "write access" in str(caught.value)
    assert await texts(memory, "note") == ["kept note"]
    memory.close()


def open_on(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    return open_files().count(str(path))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_a_call_after_close_keeps_its_item_and_leaves_the_file_closed(
        tmp_path: Path) -> None:
    """A store or recall that reaches the memory after its pipeline closed (a run still
    in flight) is done, and the file is closed again after it: nothing stays open until a
    pipeline that will never reopen it does."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("first note")])
    await memory.aieng_pipeline_close()
    assert open_on(path) == 0
    await memory.aieng_memory_store([long("late note")])
    assert sorted(await texts(memory, "note")) == ["first note", "late note"]
    assert open_on(path) == 0
    memory.aieng_pipeline_open(None)  # type: ignore[arg-type]  # reopened: kept open again
    await memory.aieng_memory_store([long("reopened note")])
    assert open_on(path) == 1
    await memory.aieng_pipeline_close()
    assert open_on(path) == 0
    again = words_only(path)
    assert len(await texts(again, "note")) == 3
    again.close()


posix_modes = pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")


@posix_modes
async def test_a_new_memory_file_is_its_owners_alone(tmp_path: Path) -> None:
    """What the agent remembers of its users is in the file: created 0600 whatever the
    umask (its -wal and -shm files take its mode); an existing file keeps its own."""
    with umask(0o022):
        memory = words_only(tmp_path / "memory.sqlite")
        await memory.aieng_memory_store([long("the deploy key rotates on mondays")])
        await memory.aieng_pipeline_close()
        shared = tmp_path / "shared.sqlite"
        shared.touch(mode=0o640)
        shared.chmod(0o640)
        other = words_only(shared)
        await other.aieng_memory_store([long("a note")])
        await other.aieng_pipeline_close()
    assert stat.S_IMODE((tmp_path / "memory.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
