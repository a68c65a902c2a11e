"""``bm25`` and time: how long a write waits for another writer (``lock_timeout``), a
host's deadline ending a write that waits (the kernel abandons its worker thread), and a
process forked while another thread is mid-write. Threads are synchronised on events,
never on sleeps."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aieng_bm25._index as index_module
import aieng_bm25._locks as locks_module
import anyio
import anyio.to_thread
import pytest
import tantivy
from aieng_bm25 import BM25Index, BM25Options, BM25Retriever, IndexLockedError
from aieng_hookspecs.types import Document

from aieng_core import Kernel

DOCS = [Document("a", "Laminar flow over a flat plate."),
        Document("b", "Heat transfer in boundary layers.")]
_GUARD_S = 30.0  # a hang guard only: every wait below ends on an event long before


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder holding an index of DOCS."""
    made = BM25Index(BM25Options(path=str(tmp_path / "idx")))
    made.add(DOCS)
    made.close()
    return tmp_path / "idx"


@pytest.fixture
def holder(folder: Path) -> Iterator[tantivy.IndexWriter]:
    """Another writer (another process, as far as the index can tell) holding the folder's
    lock for the whole test."""
    writer = tantivy.Index.open(str(folder)).writer(heap_size=15 * 1024 * 1024,
                                                   num_threads=1)
    yield writer
    with contextlib.suppress(RuntimeError):  # ended by the test already
        writer.wait_merging_threads()


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when a wait for a lock first looks whether its caller left (it found the lock
    held, and waits)."""
    event = threading.Event()
    original = locks_module.stop_if_cancelled

    def noted() -> None:
        event.set()
        original()

    monkeypatch.setattr(locks_module, "stop_if_cancelled", noted)
    monkeypatch.setattr(index_module, "stop_if_cancelled", noted)
    return event


@pytest.mark.parametrize(("value", "error", "words"), [
    (-1, ValueError, "at least 0"), (math.nan, ValueError, "finite"),
    (math.inf, ValueError, "finite"), ("5s", TypeError, "the unit is always seconds"),
    (True, TypeError, "must be a number of seconds"),
])
def test_lock_timeout_is_a_finite_number_of_seconds(value: object, error: type[Exception],
                                                    words: str) -> None:
    """The wait for another writer was fixed (5 s); it is an option, validated, its
    errors naming it."""
    with pytest.raises(error, match="lock_timeout") as caught:
        BM25Options(path="idx", lock_timeout=value)  # type: ignore[arg-type]
    assert words in str(caught.value)


def test_lock_timeout_zero_fails_at_once_naming_the_option(
        folder: Path, holder: tantivy.IndexWriter) -> None:
    """``lock_timeout = 0``: a write finding the folder locked fails at its first try,
    the error naming the limit, its value and how to raise it; nothing is written."""
    index = BM25Index(BM25Options(path=str(folder), lock_timeout=0))
    with pytest.raises(IndexLockedError) as caught:
        index.add([Document("c", "never written")])
    message = str(caught.value)
    assert "0 s (lock_timeout" in message and "raise lock_timeout (seconds)" in message
    assert index.get("c") is None


def _ended_within_guard(lock: Any) -> bool:
    """Whether ``lock`` can be taken (its holder ended) within the hang guard."""
    if lock.acquire(timeout=_GUARD_S):
        lock.release()
        return True
    return False


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_hosts_deadline_ends_a_write_waiting_for_another_writer(
        aieng_kernel: Kernel, folder: Path, holder: tantivy.IndexWriter,
        waiting: threading.Event) -> None:
    """A host's cancel scope around ``Pipeline.index`` while another process holds the
    folder: the kernel abandons the worker thread, which went on waiting (up to
    ``lock_timeout``, here 60 s) holding the index's lock, then wrote after its caller
    had given up. It now ends at its next poll: the index's lock is free while the other
    writer still holds the folder, and nothing of the batch is written."""
    retriever = BM25Retriever(BM25Options(path=str(folder), lock_timeout=60))
    pipeline = aieng_kernel.compose({"search": retriever}, name="lexical",
                                    stages=["retrieve"])
    async with pipeline:
        scope = anyio.CancelScope()

        async def index() -> None:
            with scope:
                await pipeline.index([Document("late", "written after the deadline")])

        async with anyio.create_task_group() as group:
            group.start_soon(index)
            assert await anyio.to_thread.run_sync(waiting.wait, _GUARD_S)
            scope.cancel()
        assert scope.cancelled_caught
        assert await anyio.to_thread.run_sync(_ended_within_guard, retriever.index._lock)
        holder.wait_merging_threads()  # the other writer lets go
        retriever.index._open().reload()
        assert retriever.index.get("late") is None


@pytest.mark.anyio
async def test_a_write_waiting_for_another_threads_write_ends_with_its_caller(
        folder: Path, waiting: threading.Event) -> None:
    """A write queued behind another thread's write (the index's lock) waited for it
    however long, after its caller left, then wrote. It now ends with its caller's
    cancellation while the other write still runs, and writes nothing."""
    index = BM25Index(BM25Options(path=str(folder)))
    ended = threading.Event()

    def write() -> None:
        try:
            index.add([Document("queued", "written after its caller left")])
        finally:
            ended.set()

    index._lock.acquire()  # another thread's write, as far as this one can tell
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: anyio.to_thread.run_sync(write,
                                                                  abandon_on_cancel=True))
                assert await anyio.to_thread.run_sync(waiting.wait, _GUARD_S)
                scope.cancel()
        assert await anyio.to_thread.run_sync(ended.wait, _GUARD_S)
    finally:
        index._lock.release()
    assert index.get("queued") is None



@contextlib.contextmanager
def _mid_write(index: BM25Index) -> Iterator[None]:
    """Another thread in the middle of a write (a delete holding the index's lock and
    tantivy's writer) for the duration of the block; it ends after the block."""
    inside, go = threading.Event(), threading.Event()
    original = index._count_key
    calls: list[str] = []

    def counting(searcher: Any, key: str) -> int:
        calls.append(key)
        if len(calls) == 2:  # the look inside the write (the first is before it)
            inside.set()
            go.wait(_GUARD_S)
        return original(searcher, key)

    index._count_key = counting  # type: ignore[method-assign]
    thread = threading.Thread(target=index.delete, args=(["a"],))
    thread.start()
    try:
        assert inside.wait(_GUARD_S)
        yield
    finally:
        go.set()
        thread.join(_GUARD_S)
        del index._count_key


def _child_writes(index: BM25Index, results: Any) -> None:
    try:
        index.add([Document("child", "written by the child")])
        index.close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - told to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def _fork(target: Callable[..., object], *args: object) -> Any:
    context = multiprocessing.get_context("fork")
    child = context.Process(target=target, args=args)
    child.start()
    return child


def _joined(child: Any) -> int | None:
    child.join(_GUARD_S)
    if child.exitcode is None:  # hung: the test fails, the suite goes on
        child.kill()
        child.join()
        return None
    return int(child.exitcode)


@pytest.mark.parametrize("where", ["folder", "memory"])
def test_a_child_forked_mid_write_writes_or_says_why_not(tmp_path: Path, where: str) -> None:
    """A process forked while another thread was mid-write inherited the index's lock
    held, by a thread it does not have: its first write (or close) hung for good. A child
    now takes a lock of its own and a tantivy index of its own: on a folder it writes
    once the parent's write is done; an in-memory copy, whose writer lock the fork left
    held, refuses writes saying why."""
    path = str(tmp_path / "idx") if where == "folder" else ":memory:"
    index = BM25Index(BM25Options(path=path, lock_timeout=_GUARD_S))
    index.add(DOCS)
    results = multiprocessing.get_context("fork").SimpleQueue()
    with _mid_write(index):
        child = _fork(_child_writes, index, results)
    assert _joined(child) == 0
    said = results.get()
    if where == "memory":
        assert "being written by another thread when the process forked" in said
        return
    assert said == "ok"
    index._open().reload()
    assert index.get("child") is not None and index.get("a") is None


def test_the_parent_writes_while_a_child_forked_mid_write_lives(tmp_path: Path) -> None:
    """A child forked while the parent held tantivy's writer kept a copy of the lock
    file's descriptor, and with it the folder's lock: every write of the parent failed
    with ``IndexLockedError`` until the child exited. The child lets go of it at the
    fork: the parent's next write goes through while the child lives."""
    index = BM25Index(BM25Options(path=str(tmp_path / "idx"), lock_timeout=2))
    index.add(DOCS)
    stop = multiprocessing.get_context("fork").Event()
    with _mid_write(index):
        child = _fork(stop.wait, _GUARD_S)
    try:
        assert index.add([Document("after", "written while the child lives")]) == 1
        assert index.get("after") is not None and child.is_alive()
    finally:
        stop.set()
        assert _joined(child) == 0
