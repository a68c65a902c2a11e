"""``long-memory`` and time: when the wall clock jumps (NTP stepping it back, a VM
restored from a snapshot, a second machine whose clock runs ahead writing the same file)
what is stored is kept, eviction still removes the oldest items, and no age is negative
(the clock is a fake one, set by the tests); a host's deadline ends a recall within one
block of rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from aieng_agents import MemoryOptions, SQLiteMemory, _memory
from aieng_hookspecs.types import MemoryItem, Query

from aieng_core.testing import ManualClock

pytestmark = pytest.mark.anyio


def long(text: str, **metadata: Any) -> MemoryItem:
    """A long-term memory item."""
    return MemoryItem(text=text, kind="long", metadata=metadata)


async def recall(memory: SQLiteMemory, text: str, k: int = 10) -> list[str]:
    """The texts recalled for ``text``, sorted."""
    return sorted(item.text for item in
                  await memory.aieng_memory_recall(Query(text=text), k))


async def test_items_stored_after_the_clock_was_set_back_are_kept() -> None:
    """With the namespace full, an item stored after the clock went back a day is kept and
    the oldest item is evicted (it was the new item that went, stamped older than all)."""
    clock = ManualClock(1_700_000_000.0)
    memory = SQLiteMemory(MemoryOptions(max_items=2, embeddings=False), clock=clock)
    await memory.aieng_memory_store([long("alpha note")])
    clock.now += 60
    await memory.aieng_memory_store([long("beta note")])
    clock.now -= 86_400  # set back a day
    await memory.aieng_memory_store([long("gamma note")])
    assert await recall(memory, "note") == ["beta note", "gamma note"]
    clock.now += 1
    await memory.aieng_memory_store([long("delta note")])
    assert await recall(memory, "note") == ["delta note", "gamma note"]


async def test_an_item_stamped_while_the_clock_ran_ahead_is_evicted_in_turn(
        tmp_path: Path) -> None:
    """An item another writer stamped years ahead (its clock was wrong) does not outlive
    the items stored after it: it is evicted as the oldest once ``max_items`` newer items
    came, and ranks as new (age 0, never negative) meanwhile."""
    path = str(tmp_path / "memory.sqlite")
    ahead = ManualClock(2_000_000_000.0)  # 2033
    other = SQLiteMemory(MemoryOptions(path=path, max_items=2, embeddings=False),
                         clock=ahead)
    await other.aieng_memory_store([long("future note")])
    other.close()
    clock = ManualClock(1_700_000_000.0)  # 2023
    memory = SQLiteMemory(MemoryOptions(path=path, max_items=2, embeddings=False,
                                        recency_weight=1.0), clock=clock)
    await memory.aieng_memory_store([long("first note")])
    items = await memory.aieng_memory_recall(Query(text="note"), 5)
    assert {item.text: item.score for item in items} == {"future note": 1.0,
                                                         "first note": 1.0}
    clock.now += 1
    await memory.aieng_memory_store([long("second note")])
    assert await recall(memory, "note") == ["first note", "second note"]
    memory.close()


async def test_a_refreshed_item_after_the_clock_went_back_is_kept_as_newest() -> None:
    """Storing a kept text again after the clock went back makes it the newest item
    (a refresh), so the next eviction takes another."""
    clock = ManualClock(1_700_000_000.0)
    memory = SQLiteMemory(MemoryOptions(max_items=2, embeddings=False), clock=clock)
    await memory.aieng_memory_store([long("alpha note")])
    clock.now += 10
    await memory.aieng_memory_store([long("beta note")])
    clock.now -= 3_600
    await memory.aieng_memory_store([long("alpha note")])  # refreshed: beta is now oldest
    await memory.aieng_memory_store([long("gamma note")])
    assert await recall(memory, "note") == ["alpha note", "gamma note"]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_cancelled_recall_stops_within_one_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A recall cancelled while its worker thread scans the namespace (a host's
    ``fail_after``) stops at the next block of rows, not after reading all of them: the
    cancellation comes from the first row read (synchronised, not timed)."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False))
    await memory.aieng_memory_store([long(f"note {n}", user="a") for n in range(40)])
    monkeypatch.setattr(_memory, "_BLOCK", 4)
    real = _memory._metadata
    seen: list[int] = []
    with anyio.CancelScope() as scope:
        def counting(item: int, raw: object) -> Any:
            seen.append(item)
            if len(seen) == 1:
                anyio.from_thread.run_sync(scope.cancel)
            return real(item, raw)

        monkeypatch.setattr(_memory, "_metadata", counting)
        await memory.aieng_memory_recall(Query(text="note", filters={"user": "a"}), 5)
    assert scope.cancelled_caught
    assert 1 <= len(seen) <= 4
    monkeypatch.setattr(_memory, "_metadata", real)
    assert len(await recall(memory, "note", k=50)) == 40  # the memory works on
