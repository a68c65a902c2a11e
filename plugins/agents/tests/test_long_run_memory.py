"""Long memory over thousands of turns of many users: memory flat, the file the size of
what is kept (evictions give their pages back once they are many), the WAL file cut back
after a large store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_agents._memory import _WAL_LIMIT
from aieng_hookspecs.types import MemoryItem, Query

from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio


class _Clock:
    """A wall clock a second further at each reading."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _size(path: Path) -> int:
    return os.path.getsize(path) if path.exists() else 0


def _item(text: str, user: str) -> MemoryItem:
    return MemoryItem(text=text, kind="long", metadata={"namespace": user})


async def test_many_users_turns_keep_memory_and_file_flat(tmp_path: Path) -> None:
    """Turns of 20 users, each storing a fact and recalling: once every user's memory is
    full (max_items), nothing is retained per turn and the file does not grow."""
    path = tmp_path / "memory.db"
    memory = SQLiteMemory(MemoryOptions(path=str(path), max_items=5, embeddings=False),
                          clock=_Clock())

    async def turn(i: int) -> None:
        user = f"user-{i % 20}"
        await memory.aieng_memory_store([_item(f"turn {i}: the user likes topic {i % 13}",
                                               user)])
        await memory.aieng_memory_recall(
            Query(text=f"topic {i % 13}", filters={"namespace": user}), 3)

    # 1,000 calls: sqlite3 keeps up to 200 dead cursor weakrefs a connection (16 KB of
    # bounded noise, cleared every 200 cursors), which fewer calls would not divide down.
    growth = await ameasure_growth(turn, warmup=200, calls=1_000)
    assert growth.per_call < 32 and not growth.held, growth.report()
    size = _size(path)
    for i in range(200):
        await turn(10_000 + i)
    assert _size(path) <= size + 16 * 4096, (_size(path), size)
    await memory.aieng_pipeline_close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_lowering_max_items_gives_the_space_back(tmp_path: Path) -> None:
    """A memory of 3,000 items reopened with max_items = 50: the next store evicts the
    others and the file shrinks to what the 50 need (it kept its size before: SQLite keeps
    freed pages), and the large store's WAL file is cut back by the next stores."""
    path = tmp_path / "memory.db"
    text = "a fact the user told the agent, kept for later turns " * 4
    first = SQLiteMemory(MemoryOptions(path=str(path), embeddings=False), clock=_Clock())
    await first.aieng_memory_store([_item(f"{n}: {text}", "alice") for n in range(3_000)])
    await first.aieng_pipeline_close()
    full = _size(path)
    assert full > 1_000_000
    clock = _Clock()
    clock.now += 10_000
    smaller = SQLiteMemory(MemoryOptions(path=str(path), max_items=50, embeddings=False),
                           clock=clock)
    await smaller.aieng_memory_store([_item("the newest fact", "alice")])
    assert _size(path) < full // 5, (_size(path), full)
    found = await smaller.aieng_memory_recall(
        Query(text="newest", filters={"namespace": "alice"}), 5)
    assert [item.text for item in found] == ["the newest fact"]
    big = [_item(f"burst {n}: {text}", "bob") for n in range(3_000)]
    await smaller.aieng_memory_store(big)  # one large transaction: a large WAL
    for n in range(3):
        await smaller.aieng_memory_store([_item(f"later {n}", "bob")])
    assert _size(Path(f"{path}-wal")) <= 2 * _WAL_LIMIT, _size(Path(f"{path}-wal"))
    await smaller.aieng_pipeline_close()
