"""``vectors``: what a closed index answers, reopening a folder, ``len`` and ``in`` before a
folder index has loaded."""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aieng_hookspecs.types import Document, Query
from aieng_vectors import VectorIndex, VectorsOptions
from aieng_vectors._store import VectorStore

from aieng_core import Kernel

DOCS = [Document("rrf", "Reciprocal rank fusion merges ranked lists."),
        Document("bm25", "BM25 scores term frequency."),
        Document("hnsw", "HNSW is a layered graph for nearest neighbour search.")]


def index_with(embedder: Any, **options: Any) -> VectorIndex:
    return VectorIndex(VectorsOptions(**options), embedder=embedder.aieng_embed)


async def _seed(embedder: Any, path: Path) -> None:
    seed = index_with(embedder, path=str(path))
    await seed.aieng_index(DOCS)
    await seed.aclose()


def _calls(index: VectorIndex) -> dict[str, Callable[[], Awaitable[object]]]:
    return {"retrieve": lambda: index.aieng_retrieve(Query("graph search"), 3),
            "index": lambda: index.aieng_index([Document("new", "a new one")]),
            "upsert": lambda: index.upsert([Document("new", "a new one")]),
            "delete": lambda: index.delete(["rrf"]),
            "get": lambda: index.get("rrf"),
            "flush": index.flush}


@pytest.mark.anyio
@pytest.mark.parametrize("loaded", [True, False], ids=["used", "never-used"])
async def test_a_closed_folder_index_refuses_every_call_naming_its_folder(
        hashing_embedder: Any, tmp_path: Path, loaded: bool) -> None:
    """After ``aclose`` every call fails with an error naming the folder and saying what
    to do, never a silent empty result; a closed index is not opened again (not by
    ``aieng_pipeline_open`` either), and the folder is intact for a new component."""
    path = tmp_path / "idx"
    await _seed(hashing_embedder, path)
    index = index_with(hashing_embedder, path=str(path))
    if loaded:
        assert await index.get("rrf") == DOCS[0]
    await index.aclose()
    await index.aclose()  # closing twice is harmless
    pattern = re.escape(f"the vectors index at {path} is closed")
    for name, call in _calls(index).items():
        with pytest.raises(RuntimeError, match=pattern):
            await call()
            pytest.fail(f"{name} answered after close")
    with pytest.raises(RuntimeError, match="new VectorIndex"):
        await index.aieng_pipeline_open(None)  # type: ignore[arg-type]

    fresh = index_with(hashing_embedder, path=str(path))
    assert [hit.document.id for hit in await fresh.aieng_retrieve(Query("layered graph"), 1)] \
        == ["hnsw"]
    await fresh.aclose()


@pytest.mark.anyio
async def test_a_closed_memory_index_refuses_every_call(hashing_embedder: Any) -> None:
    """An in-memory index says so when closed (no path to name)."""
    index = index_with(hashing_embedder)
    await index.aieng_index(DOCS)
    await index.aclose()
    for call in _calls(index).values():
        with pytest.raises(RuntimeError, match="in-memory vectors index is closed"):
            await call()
    assert len(index) == len(DOCS) and "rrf" in index  # what it held when it closed
    unused = index_with(hashing_embedder)
    await unused.aclose()
    assert len(unused) == 0  # true: nothing to load


@pytest.mark.anyio
async def test_a_new_pipeline_opens_the_folder_its_predecessor_closed(
        aieng_kernel: Kernel, hashing_embedder: Any, tmp_path: Path) -> None:
    """Pipeline after pipeline on one folder: each finds what the last one wrote, and a
    pipeline closed without ever being used leaves the folder free."""
    path = str(tmp_path / "idx")
    for round_ in range(3):
        index = index_with(hashing_embedder, path=path)
        pipeline = aieng_kernel.compose({"dense": index}, stages=["retrieve"])
        await pipeline.open()
        assert len(index) == round_
        await index.upsert([Document(f"d{round_}", f"document number {round_}")])
        await pipeline.aclose()
        unused = aieng_kernel.compose({"dense": index_with(hashing_embedder, path=path)},
                                      stages=["retrieve"])
        await unused.aclose()
    last = index_with(hashing_embedder, path=path)
    assert await last.get("d2") == Document("d2", "document number 2") and len(last) == 3
    await last.aclose()


@pytest.mark.anyio
async def test_len_and_in_load_a_fresh_folder_index(hashing_embedder: Any,
                                                    tmp_path: Path) -> None:
    """``len`` and ``in`` on a component that has not loaded its folder yet count what
    the folder holds (they answered 0 and False), and the component then works on."""
    path = tmp_path / "idx"
    await _seed(hashing_embedder, path)
    counted = index_with(hashing_embedder, path=str(path))
    assert len(counted) == len(DOCS)
    await counted.aieng_index([Document("more", "one more document")])
    assert len(counted) == len(DOCS) + 1
    await counted.aclose()

    asked = index_with(hashing_embedder, path=str(path))
    assert "rrf" in asked and "missing" not in asked
    other = index_with(hashing_embedder, path=str(path))
    with pytest.raises(RuntimeError, match="open in another component"):
        len(other)  # the folder is held by the component that loaded it
    await asked.aclose()
    assert len(other) == len(DOCS) + 1  # and free again once it closed
    await other.aclose()
    assert len(other) == len(DOCS) + 1  # what it held when it closed

    never = index_with(hashing_embedder, path=str(path))
    await never.aclose()
    with pytest.raises(RuntimeError, match="is closed"):
        len(never)  # closed before loading: it cannot know (0 would be a wrong answer)


@pytest.mark.anyio
async def test_len_while_a_load_runs_in_a_thread(hashing_embedder: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``len`` while a load runs in a worker thread waits for it and counts, instead of
    opening the folder a second time (which failed: the folder looked held by another)."""
    path = tmp_path / "idx"
    await _seed(hashing_embedder, path)
    entered, release = _hold_loads(monkeypatch)
    index = index_with(hashing_embedder, path=str(path))
    found: list[Document | None] = []

    async def load() -> None:
        found.append(await index.get("bm25"))

    async with anyio.create_task_group() as group:
        group.start_soon(load)
        await anyio.to_thread.run_sync(entered.wait, 10)
        threading.Timer(0.05, release.set).start()
        assert len(index) == len(DOCS)  # blocks until the thread's load ends
    assert found == [DOCS[1]]
    await index.aclose()



def _hold_loads(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make folder loads wait: the first event is set when one starts, and it goes on once
    the second is set."""
    entered, release = threading.Event(), threading.Event()
    real_load = VectorStore._load

    def slow_load(store: VectorStore, folder: Any) -> None:
        entered.set()
        release.wait(10)
        real_load(store, folder)

    monkeypatch.setattr(VectorStore, "_load", slow_load)
    return entered, release

@pytest.mark.anyio
async def test_a_load_cancelled_midway_leaves_the_folder_usable(
        hashing_embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first call cancelled (a timeout) while the folder loads: its thread runs on and
    opens the folder. The component must then know it is loaded, so that its next call
    works and its close releases the folder (else the folder stayed locked until the
    process exited, and the next call failed as if another component held it)."""
    path = tmp_path / "idx"
    await _seed(hashing_embedder, path)
    real_load = VectorStore._load
    entered, release = _hold_loads(monkeypatch)
    index = index_with(hashing_embedder, path=str(path))
    async with anyio.create_task_group() as group:
        group.start_soon(index.get, "rrf")
        await anyio.to_thread.run_sync(entered.wait, 10)
        group.cancel_scope.cancel()
        release.set()
    monkeypatch.setattr(VectorStore, "_load", real_load)
    assert await index.get("rrf") == DOCS[0]
    await index.aclose()
    fresh = index_with(hashing_embedder, path=str(path))
    assert len(fresh) == len(DOCS)
    await fresh.aclose()
