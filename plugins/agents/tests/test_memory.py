"""The ``long-memory`` component: storing, ranking, namespaces, eviction, persistence."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import MemoryItem, Query
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.testing import HashEmbedder, ManualClock

pytestmark = pytest.mark.anyio


def long(text: str, **metadata: Any) -> MemoryItem:
    """A long-term memory item."""
    return MemoryItem(text=text, kind="long", metadata=metadata)


async def recall(memory: SQLiteMemory, text: str, k: int = 5, **filters: Any) -> list[str]:
    """The texts recalled for ``text``, best first."""
    items = await memory.aieng_memory_recall(Query(text=text, filters=filters), k)
    assert all(item.kind == "long" for item in items)
    scores = [item.score for item in items]
    assert scores == sorted(scores, reverse=True)
    return [item.text for item in items]


class SynonymEmbedder(HashEmbedder):
    """An embedder double that knows ``automobile`` means ``car``: only an embedding can
    relate the two, word overlap cannot."""

    @hookimpl
    def aieng_embed(self, texts: Sequence[str], model: str | None) -> list[list[float]]:
        self.calls += 1
        return [self.vector(text.lower().replace("automobile", "car")) for text in texts]


async def test_keeps_long_items_and_recalls_by_word_overlap() -> None:
    """Only ``long`` items are kept; a recall ranks them by shared words (rarer words weigh
    more), returns at most ``k`` and nothing that shares no word."""
    memory = SQLiteMemory()
    await memory.aieng_memory_store([
        long("The user's cat is called Miso"), long("The user lives in Lyon"),
        long("The user likes green tea"), MemoryItem(text="cat cat cat", kind="short"),
        long("   ")])
    assert (await recall(memory, "What is the name of the CAT?"))[0] == (
        "The user's cat is called Miso")
    assert await recall(memory, "where does the user live? Lyon", k=1) == [
        "The user lives in Lyon"]
    assert await recall(memory, "quantum chromodynamics") == []
    assert await recall(memory, "") == []
    assert await recall(memory, "user", k=0) == []
    assert len(await recall(memory, "user")) == 3


async def test_unicode_words_match_case_insensitively() -> None:
    """Words are Unicode words compared case-folded (``STRASSE`` finds ``straße``)."""
    memory = SQLiteMemory()
    await memory.aieng_memory_store([long("Wohnt in der Hauptstraße"), long("東京に住んでいる")])
    assert await recall(memory, "HAUPTSTRASSE") == ["Wohnt in der Hauptstraße"]
    assert await recall(memory, "東京に住んでいる") == ["東京に住んでいる"]


async def test_exact_duplicates_are_kept_once_and_refreshed() -> None:
    """Storing a text again keeps one item, now as recent as the last store."""
    clock = ManualClock()
    memory = SQLiteMemory(MemoryOptions(max_items=2), clock=clock)
    await memory.aieng_memory_store([long("alpha note"), long("alpha note")])
    clock.now += 10
    await memory.aieng_memory_store([long("beta note")])
    clock.now += 10
    await memory.aieng_memory_store([long("alpha note")])  # refreshed: beta is now oldest
    clock.now += 10
    await memory.aieng_memory_store([long("gamma note")])
    assert sorted(await recall(memory, "note")) == ["alpha note", "gamma note"]


async def test_the_oldest_items_are_evicted_past_max_items() -> None:
    """A namespace keeps ``max_items`` items; the oldest go first."""
    clock = ManualClock()
    memory = SQLiteMemory(MemoryOptions(max_items=3), clock=clock)
    for n in range(6):
        clock.now += 1
        await memory.aieng_memory_store([long(f"fact number {n}")])
    assert sorted(await recall(memory, "fact")) == [f"fact number {n}" for n in (3, 4, 5)]


async def test_recency_weight_prefers_recent_items() -> None:
    """Without recency the more relevant old item wins; with a strong recency weight the
    recent, less relevant one does."""
    clock = ManualClock()
    items = [long("paris trip hotel booked"), long("hotel")]
    for weight, first in [(0.0, "paris trip hotel booked"), (0.9, "hotel")]:
        memory = SQLiteMemory(MemoryOptions(recency_weight=weight, half_life_s=3600),
                              clock=clock)
        await memory.aieng_memory_store(items[:1])
        clock.now += 86400  # a day later: the first item's recency is 2**-24
        await memory.aieng_memory_store(items[1:])
        assert (await recall(memory, "paris hotel"))[0] == first


async def test_namespaces_keep_users_apart() -> None:
    """An item's ``namespace`` metadata (else the option) places it; a recall reads its
    query's ``namespace`` filter (else the option); other filters match metadata."""
    memory = SQLiteMemory(MemoryOptions(namespace="agent-1", max_items=1))
    await memory.aieng_memory_store([
        long("ann prefers email", namespace="ann"), long("bob prefers phone", namespace="bob"),
        long("default prefers fax")])
    await memory.aieng_memory_store([long("ann prefers letters", namespace="ann", topic="x")])
    assert await recall(memory, "prefers", namespace="ann") == ["ann prefers letters"]
    assert await recall(memory, "prefers", namespace="bob") == ["bob prefers phone"]
    assert await recall(memory, "prefers") == ["default prefers fax"]
    assert await recall(memory, "prefers", namespace="ann", topic="x") == [
        "ann prefers letters"]
    assert await recall(memory, "prefers", namespace="ann", topic="y") == []
    assert await recall(memory, "prefers", namespace=3) == []
    items = await memory.aieng_memory_recall(Query(text="letters",
                                                   filters={"namespace": "ann"}), 1)
    assert items[0].metadata == {"namespace": "ann", "topic": "x"}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_file_persists_across_reopening(tmp_path: Path) -> None:
    """Items kept in a file are recalled by a new instance; the file is in WAL mode."""
    path = str(tmp_path / "memory.sqlite")
    first = SQLiteMemory(MemoryOptions(path=path))
    await first.aieng_memory_store([long("the deploy key rotates on mondays")])
    first.close()
    second = SQLiteMemory(MemoryOptions(path=path))
    assert await recall(second, "when does the key rotate? mondays") == [
        "the deploy key rotates on mondays"]
    second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_writers_on_one_file_lose_nothing(tmp_path: Path) -> None:
    """Two memories on the same file, storing concurrently, keep every item."""
    path = str(tmp_path / "shared.sqlite")
    memories = [SQLiteMemory(MemoryOptions(path=path)) for _ in range(2)]

    async def write(memory: SQLiteMemory, writer: int) -> None:
        for n in range(15):
            await memory.aieng_memory_store([long(f"note {writer}-{n} shared")])

    async with anyio.create_task_group() as group:
        for writer in range(4):
            group.start_soon(write, memories[writer % 2], writer)
    assert len(await recall(memories[0], "shared", k=100)) == 60
    for memory in memories:
        memory.close()


async def test_ranks_by_embeddings_when_the_pipeline_embeds(aieng_kernel: Kernel) -> None:
    """In a pipeline with an embedder, recall ranks by cosine: a synonym is found that word
    overlap misses; items kept before are embedded once, at the first recall."""
    plain = SQLiteMemory()
    await plain.aieng_memory_store([long("my car is red"), long("my bike is blue")])
    assert await recall(plain, "automobile") == []  # no shared word

    memory = SQLiteMemory()
    await memory.aieng_memory_store([long("my bike is blue")])  # not opened: no vector yet
    embedder = SynonymEmbedder()
    async with aieng_kernel.compose({"memory": memory, "embed": embedder}):
        await memory.aieng_memory_store([long("my car is red")])
        assert (await recall(memory, "automobile"))[0] == "my car is red"
        calls = embedder.calls
        assert (await recall(memory, "automobile"))[0] == "my car is red"
        assert embedder.calls == calls + 1  # only the query: the items keep their vectors


async def test_word_overlap_without_an_embedder_or_when_disabled(aieng_kernel: Kernel) -> None:
    """A pipeline that cannot embed (no embedder, no default one installed) and the
    ``embeddings = false`` option both recall by word overlap, without an error."""
    memory = SQLiteMemory()
    async with aieng_kernel.compose({"memory": memory}, name="no-embedder"):
        await memory.aieng_memory_store([long("my car is red")])
        assert await recall(memory, "red car") == ["my car is red"]
    embedder = SynonymEmbedder()
    off = SQLiteMemory(MemoryOptions(embeddings=False))
    async with aieng_kernel.compose({"memory": off, "embed": embedder}, name="off"):
        await off.aieng_memory_store([long("my car is red")])
        assert await recall(off, "automobile") == []
    assert embedder.calls == 0


@pytest.mark.parametrize("options", [
    {"max_items": 0}, {"max_items": True}, {"recency_weight": 1.5}, {"half_life_s": 0},
    {"half_life_s": float("inf")}, {"path": None}, {"embeddings": "yes"},
])
def test_options_are_validated(options: dict[str, Any]) -> None:
    """Options out of range or of the wrong type are refused."""
    with pytest.raises((ValueError, TypeError)):
        MemoryOptions(**options)


async def test_reopened_with_an_embedder_it_embeds_again(aieng_kernel: Kernel) -> None:
    """A memory that found no embedder in one pipeline embeds in the next one that has."""
    memory = SQLiteMemory()
    async with aieng_kernel.compose({"memory": memory}, name="first"):
        await memory.aieng_memory_store([long("my car is red")])
        assert await recall(memory, "automobile") == []
    embedder = SynonymEmbedder()
    async with aieng_kernel.compose({"memory": memory, "embed": embedder}, name="second"):
        assert await recall(memory, "automobile") == []  # closed: in-memory items are gone
        await memory.aieng_memory_store([long("my car is red")])
        assert await recall(memory, "automobile") == ["my car is red"]


async def test_a_file_in_a_missing_folder_is_created(tmp_path: Path) -> None:
    """``path`` in a folder that does not exist yet (``.aieng/agent/memory.sqlite3`` on a
    first run) makes the folder, as the other stores do, and the memory persists there."""
    file = tmp_path / "not" / "yet" / "memory.sqlite3"
    memory = SQLiteMemory(MemoryOptions(path=str(file)))
    await memory.aieng_memory_store([long("The user's cat is called Miso")])
    memory.close()
    again = SQLiteMemory(MemoryOptions(path=str(file)))
    assert await recall(again, "cat") == ["The user's cat is called Miso"]
    again.close()


async def test_a_text_that_is_not_utf8_is_kept_with_replacement_characters() -> None:
    """SQLite keeps UTF-8: lone surrogates (bytes read with surrogateescape) in a text, its
    namespace or its metadata become U+FFFD instead of failing the store."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False))
    await memory.aieng_memory_store([long("caf\udce9 menu", note="\udc80")])
    assert await recall(memory, "menu", namespace="x\udc80") == []
    [item] = await memory.aieng_memory_recall(Query(text="menu"), 3)
    assert item.text == "caf\ufffd menu" and item.metadata == {"note": "\ufffd"}


_NAMESPACES = st.sampled_from(["ann", "bob", "Ann", "", "ünï", "default"])


@settings(max_examples=40, deadline=None)
@given(stored=st.lists(st.tuples(_NAMESPACES, st.sampled_from(["tea", "coffee", "tea cup"])),
                       max_size=12),
       asked=_NAMESPACES)
async def test_recall_never_crosses_namespaces(stored: list[tuple[str, str]],
                                               asked: str) -> None:
    """Whatever was stored where, a recall returns only items of the namespace it asks
    for (exact, case-sensitive), each at most once, at most ``k``."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False, max_items=5))
    for number, (namespace, words) in enumerate(stored):
        await memory.aieng_memory_store([long(f"{words} {number}", namespace=namespace)])
    items = await memory.aieng_memory_recall(
        Query(text="tea coffee cup", filters={"namespace": asked}), 1000)
    assert all(item.metadata["namespace"] == asked for item in items)
    assert len({item.text for item in items}) == len(items) <= 5
    memory.close()


async def test_eviction_keeps_the_newest_across_stores_and_reopening(tmp_path: Path) -> None:
    """Past ``max_items`` the oldest go, in store order (one batch at one instant keeps
    its last items), and a reopened file keeps evicting from what it holds."""
    path = str(tmp_path / "m.sqlite")
    clock = ManualClock()
    memory = SQLiteMemory(MemoryOptions(path=path, max_items=3, embeddings=False), clock=clock)
    await memory.aieng_memory_store([long(f"item {n}") for n in range(5)])  # one instant
    assert sorted(await recall(memory, "item")) == ["item 2", "item 3", "item 4"]
    memory.close()
    clock.now += 1
    again = SQLiteMemory(MemoryOptions(path=path, max_items=3, embeddings=False), clock=clock)
    await again.aieng_memory_store([long("item 5")])
    assert sorted(await recall(again, "item", k=10)) == ["item 3", "item 4", "item 5"]
    again.close()


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "?!", "…"])
async def test_a_query_without_words_recalls_nothing(text: str) -> None:
    """A blank query, or one of punctuation only, recalls nothing (by word overlap)."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False))
    await memory.aieng_memory_store([long("?! … punctuation")])
    assert await recall(memory, text) == []


async def test_huge_items_and_a_k_past_the_store() -> None:
    """A megabyte item is kept and recalled whole; ``k`` larger than the store returns
    every relevant item."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False))
    huge = "needle " + "hay " * 250_000
    await memory.aieng_memory_store([long(huge), long("needle small")])
    found = await recall(memory, "needle", k=10**9)
    assert sorted(found, key=len) == ["needle small", huge]


async def test_an_embedder_of_another_size_re_embeds(aieng_kernel: Kernel,
                                                     tmp_path: Path) -> None:
    """A file embedded by a 64-dimension model and recalled through a 16-dimension one
    re-embeds its items (no error, no zero scores), and keeps the new vectors."""
    path = str(tmp_path / "m.sqlite")
    first = SQLiteMemory(MemoryOptions(path=path))
    async with aieng_kernel.compose({"memory": first, "embed": HashEmbedder(64)}, name="a"):
        await first.aieng_memory_store([long("my car is red"), long("tea time")])
    second, small = SQLiteMemory(MemoryOptions(path=path)), HashEmbedder(16)
    async with aieng_kernel.compose({"memory": second, "embed": small}, name="b"):
        items = await second.aieng_memory_recall(Query(text="car"), 5)
        assert items[0].text == "my car is red" and items[0].score > 0
        calls = small.calls
        await second.aieng_memory_recall(Query(text="car"), 5)
        assert small.calls == calls + 1  # only the query this time


_WRITER = """
import sys, anyio
sys.path.insert(0, {here!r})
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs.types import MemoryItem

async def main() -> None:
    memory = SQLiteMemory(MemoryOptions(path={path!r}, embeddings=False))
    for n in range(25):
        await memory.aieng_memory_store([MemoryItem(text=f"note {{sys.argv[1]}}-{{n}} shared",
                                                    kind="long")])
    memory.close()

anyio.run(main)
"""


async def test_two_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    """Two processes storing into one file at once (WAL, waiting on each other's
    transactions) both finish, and every item is there."""
    path = str(tmp_path / "shared.sqlite")
    script = _WRITER.format(here=str(Path(__file__).resolve().parents[1]), path=path)
    done: list[subprocess.CompletedProcess[bytes]] = []

    async def write(writer: int) -> None:
        done.append(await anyio.run_process([sys.executable, "-c", script, str(writer)],
                                            check=False))

    async with anyio.create_task_group() as group:
        for writer in range(2):
            group.start_soon(write, writer)
    assert [process.returncode for process in done] == [0, 0], [p.stderr for p in done]
    memory = SQLiteMemory(MemoryOptions(path=path, embeddings=False))
    assert len(await recall(memory, "shared", k=100)) == 50
    memory.close()
