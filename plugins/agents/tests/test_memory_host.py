"""Long-term memory inside a host program that forks workers (multiprocessing "fork", a
server's workers forked after a preload): a child uses a lock and a connection of its own,
never the parent's."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import anyio
import pytest
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs.types import MemoryItem, Query


def _texts(memory: SQLiteMemory, text: str) -> list[str]:
    items = anyio.run(memory.aieng_memory_recall, Query(text=text), 10)
    return sorted(item.text for item in items)


def _store_in_child(memory: SQLiteMemory) -> None:
    """A forked child's work: store an item with the memory it inherited, then close."""
    anyio.run(memory.aieng_memory_store, [MemoryItem(text="child note shared", kind="long")])
    memory.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_stores_with_its_own_lock_and_connection(tmp_path: Path) -> None:
    """The host forks while one of its threads holds the memory (a store in a worker
    thread: the lock held, the file open): the child stores on a lock and a connection of
    its own (it hung on the parent's lock, which no thread of the child releases), and
    the parent's connection still reads and writes after the child closed its memory."""
    memory = SQLiteMemory(MemoryOptions(path=str(tmp_path / "memory dir é" / "m.sqlite")))
    anyio.run(memory.aieng_memory_store, [MemoryItem(text="parent note shared", kind="long")])
    context = multiprocessing.get_context("fork")
    with memory._lock:  # a worker thread of the host mid-store at the fork
        child = context.Process(target=_store_in_child, args=(memory,))
        child.start()
    child.join(8)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0
    anyio.run(memory.aieng_memory_store, [MemoryItem(text="later note shared", kind="long")])
    assert _texts(memory, "note shared") == ["child note shared", "later note shared",
                                             "parent note shared"]
    memory.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_an_in_memory_database_is_the_child_s_copy() -> None:
    """Without a file, the forked child keeps its copy of what the parent remembered (an
    in-memory database has no file to share); what it adds stays its own."""
    memory = SQLiteMemory(MemoryOptions())
    anyio.run(memory.aieng_memory_store, [MemoryItem(text="parent note shared", kind="long")])
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)

    def child() -> None:
        anyio.run(memory.aieng_memory_store, [MemoryItem(text="child note shared",
                                                         kind="long")])
        writer.send(_texts(memory, "note shared"))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    assert reader.poll(8)
    assert reader.recv() == ["child note shared", "parent note shared"]
    process.join(8)
    assert process.exitcode == 0
    assert _texts(memory, "note shared") == ["parent note shared"]
    memory.close()
