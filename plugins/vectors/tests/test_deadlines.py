"""``vectors`` and a host's deadline: a search or a write waiting for the store's lock
(another task flushing a snapshot, finishing a graph or loading the folder) ends with its
caller's cancellation instead of waiting out the other work. Threads are synchronised on
events, never on sleeps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aieng_vectors._store as store_module
import anyio
import anyio.to_thread
import pytest
from aieng_hookspecs.types import Document, Query
from aieng_vectors import VectorIndex, VectorsOptions

DOCS = [Document("rrf", "Reciprocal rank fusion merges ranked lists."),
        Document("bm25", "BM25 scores term frequency.")]
_GUARD_S = 30.0  # a hang guard only: every wait below ends on an event long before


@contextmanager
def _held_elsewhere(lock: Any) -> Iterator[threading.Event]:
    """``lock`` held by another thread (a long flush, say) inside the block, let go after
    it (or after the hang guard); yields the event set once it is let go."""
    held, let_go, released = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            let_go.wait(_GUARD_S)
        released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(_GUARD_S)
        yield released
    finally:
        let_go.set()
        thread.join(_GUARD_S)


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when a call waiting for the store's lock first looks whether its caller left."""
    event = threading.Event()
    original = store_module._stop_if_cancelled

    def noted() -> None:
        event.set()
        original()

    monkeypatch.setattr(store_module, "_stop_if_cancelled", noted)
    return event


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("call", ["retrieve", "index"])
async def test_a_call_waiting_for_the_store_ends_with_its_caller(
        hashing_embedder: Any, waiting: threading.Event, call: str) -> None:
    """The store's calls run in worker threads that anyio does not abandon: one waiting
    for the store's lock held the host's cancel scope (``anyio.fail_after``) until the
    other work let go, however long that took. It now ends at its caller's cancellation,
    while the lock is still held; a write cancelled so writes nothing."""
    index = VectorIndex(VectorsOptions(), embedder=hashing_embedder.aieng_embed)
    await index.aieng_index(DOCS)
    with _held_elsewhere(index._store.lock) as released:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                if call == "retrieve":
                    group.start_soon(index.aieng_retrieve, Query("rank fusion"), 2)
                else:
                    group.start_soon(index.aieng_index, [Document("late", "never written")])
                assert await anyio.to_thread.run_sync(waiting.wait, _GUARD_S)
                scope.cancel()
        assert scope.cancelled_caught
        assert not released.is_set()  # ended while the other work still held the store
    assert "late" not in index
    hits = await index.aieng_retrieve(Query("rank fusion"), 1)
    assert [hit.document.id for hit in hits] == ["rrf"]
    await index.aclose()
