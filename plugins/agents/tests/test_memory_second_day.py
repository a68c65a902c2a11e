"""``long-memory`` on the second day: a file written by a newer version or by another
program, a damaged row, a file on a read-only mount (a container), a file moved."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs.types import MemoryItem, Query

from aieng_core import Kernel
from aieng_core.testing import (
    HashEmbedder,
    can_unshare_mounts,
    run_on_read_only_mount,
    sqlite_layout,
)

pytestmark = pytest.mark.anyio


def long(text: str, **metadata: Any) -> MemoryItem:
    """A long-term memory item."""
    return MemoryItem(text=text, kind="long", metadata=metadata)


def words_only(path: Path | str) -> SQLiteMemory:
    """A memory on ``path`` that ranks by word overlap (no embedder is loaded)."""
    return SQLiteMemory(MemoryOptions(path=str(path), embeddings=False))


async def texts(memory: SQLiteMemory, query: str) -> list[str]:
    """The texts recalled for ``query``."""
    return [item.text for item in await memory.aieng_memory_recall(Query(text=query), 100)]


async def test_a_new_file_carries_its_layout_version(tmp_path: Path) -> None:
    """The layout is marked (``PRAGMA user_version = 1``), so that a later layout can
    tell this one."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("the deploy key rotates on mondays")])
    memory.close()
    assert sqlite_layout(path) == 1


async def test_a_file_from_before_the_marker_reads_as_version_1(tmp_path: Path) -> None:
    """A file written before the marker (``user_version`` 0, the same table) is read as
    it is, and marked."""
    path = tmp_path / "memory.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE memory (id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL,
            text TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL, vector BLOB,
            UNIQUE (namespace, text));
        CREATE INDEX memory_age ON memory (namespace, created);
        INSERT INTO memory (namespace, text, metadata, created)
            VALUES ('default', 'an old note', '{"who": "ada"}', 1.0);""")
    conn.commit()
    conn.close()
    memory = words_only(path)
    found = await memory.aieng_memory_recall(Query(text="note"), 5)
    assert [(item.text, item.metadata) for item in found] == [("an old note", {"who": "ada"})]
    await memory.aieng_memory_store([long("a new note")])
    memory.close()
    assert sqlite_layout(path) == 1


@pytest.mark.parametrize("call", ["store", "recall"])
async def test_a_file_of_a_newer_layout_is_refused_and_left_alone(tmp_path: Path,
                                                                  call: str) -> None:
    """A file a newer aieng-agents wrote (``user_version`` 2) is refused with its name,
    the version found and what to do, and is not changed."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("kept note")])
    memory.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # so that opening it in WAL would change it
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = path.read_bytes()
    memory = words_only(path)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        if call == "store":
            await memory.aieng_memory_store([long("new note")])
        else:
            await memory.aieng_memory_recall(Query(text="note"), 5)
    message = str(caught.value)
    assert str(path) in message and "version 2" in message and "newer" in message, message
    assert "upgrade aieng-agents" in message
    memory.close()
    assert path.read_bytes() == before and sqlite_layout(path) == 2


async def test_metadata_that_is_not_json_is_named(tmp_path: Path) -> None:
    """A damaged row (metadata that is not a JSON object) is an error naming the file and
    the item, not a raw ``JSONDecodeError``."""
    path = tmp_path / "memory.sqlite"
    memory = words_only(path)
    await memory.aieng_memory_store([long("a damaged note"), long("a sound note")])
    memory._connection().execute(
        "UPDATE memory SET metadata = '{broken' WHERE text = 'a damaged note'")
    with pytest.raises(sqlite3.DatabaseError) as caught:
        await memory.aieng_memory_recall(Query(text="note"), 5)
    message = str(caught.value)
    assert str(path) in message and "metadata" in message and "not a JSON object" in message
    memory.close()


async def test_a_vector_of_a_broken_size_is_embedded_again(aieng_kernel: Kernel,
                                                           tmp_path: Path) -> None:
    """A stored vector whose bytes are not whole floats (a damaged or foreign blob) is
    treated as missing: the item is embedded again, and its vector replaced."""
    path = tmp_path / "memory.sqlite"
    memory = SQLiteMemory(MemoryOptions(path=str(path)))
    async with aieng_kernel.compose({"memory": memory, "embed": HashEmbedder(16)}):
        await memory.aieng_memory_store([long("my car is red")])
        memory._connection().execute("UPDATE memory SET vector = x'0102030405'")
        items = await memory.aieng_memory_recall(Query(text="car"), 5)
        assert [item.text for item in items] == ["my car is red"] and items[0].score > 0
        blob = memory._connection().execute("SELECT vector FROM memory").fetchone()[0]
        assert len(blob) == 16 * 4


async def test_a_moved_file_still_opens(tmp_path: Path) -> None:
    """No path is stored inside: a file moved to another folder (spaces, non-ASCII) is
    recalled from and written to there."""
    first = tmp_path / "memory.sqlite"
    memory = words_only(first)
    await memory.aieng_memory_store([long("kept note")])
    memory.close()
    moved = tmp_path / "a folder é" / "mémoire.sqlite"
    moved.parent.mkdir()
    shutil.move(first, moved)
    memory = words_only(moved)
    await memory.aieng_memory_store([long("later note")])
    assert sorted(await texts(memory, "note")) == ["kept note", "later note"]
    memory.close()


_READER = """
import sys, sqlite3, anyio
sys.path.insert(0, {here!r})
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs.types import MemoryItem, Query

async def main() -> None:
    memory = SQLiteMemory(MemoryOptions(path=sys.argv[1], embeddings=False))
    found = await memory.aieng_memory_recall(Query(text="note"), 5)
    print("recalled", [item.text for item in found])
    try:
        await memory.aieng_memory_store([MemoryItem(text="new note", kind="long")])
    except sqlite3.Error as exc:
        print("refused", type(exc).__name__, exc)
    found = await memory.aieng_memory_recall(Query(text="note"), 5)
    print("recalled", [item.text for item in found])
    memory.close()

anyio.run(main)
"""


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs unshare -m (Linux, root) for a ro mount")
async def test_a_file_on_a_read_only_mount_recalls_and_says_why_it_cannot_store(
        tmp_path: Path) -> None:
    """A container mounts the memory read-only: no -wal or -shm file can be made beside
    it. Recall still works; a store is refused naming the file and what to do."""
    folder = tmp_path / "state dir"
    folder.mkdir()
    memory = words_only(folder / "memory.sqlite")
    await memory.aieng_memory_store([long("kept note")])
    memory.close()
    assert sorted(os.listdir(folder)) == ["memory.sqlite"]  # no -wal, no -shm left
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = _READER.format(here=str(Path(__file__).resolve().parents[1]))
    target = mount / "memory.sqlite"
    done = run_on_read_only_mount(folder, mount, script, str(target))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    lines = out.splitlines()
    assert lines[0] == lines[2] == "recalled ['kept note']", out
    assert lines[1].startswith("refused OperationalError"), out
    assert str(target) in lines[1] and "cannot be written" in lines[1], out
