"""Feedback as a host program sends it: values checked against their kind's range, a
retried signal (same ``feedback_id``) stored once, under asyncio and trio."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore, InvalidFeedback

from aieng_core.testing import ScriptedBackend, isolated_kernel


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_thumbs_outside_minus_one_to_one_is_refused(tmp_path: Path) -> None:
    """A ``thumbs`` of 7 (or -2) is refused with a ValueError naming the range, nothing
    stored; -1, 0 and 1 are stored; a ``rating`` takes any finite value unless
    ``value_ranges`` bounds it, and then its bounds are inclusive."""
    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
    for bad in (7, -2, 1.5):
        with pytest.raises(InvalidFeedback, match=r"'thumbs'.* from -1 to 1"):
            await store.aieng_feedback_record(Feedback("r", "thumbs", bad))
    for good in (-1, 0, 1):
        await store.aieng_feedback_record(Feedback("r", "thumbs", good))
    await store.aieng_feedback_record(Feedback("r", "rating", 70))
    assert [r.value for r in await store.query()] == [-1.0, 0.0, 1.0, 70.0]
    await store.aieng_pipeline_close()

    rated = FeedbackStore(FeedbackOptions(path=str(tmp_path / "g.sqlite3"),
                                          value_ranges={"rating": [1, 5]}))
    with pytest.raises(ValueError, match="'rating'.* from 1 to 5"):
        await rated.aieng_feedback_record(Feedback("r", "rating", 7))
    await rated.aieng_feedback_record(Feedback("r", "rating", 5))
    await rated.aieng_feedback_record(Feedback("r", "thumbs", 9))  # a table replaces
    assert [r.value for r in await rated.query()] == [5.0, 9.0]
    await rated.aieng_pipeline_close()
    with pytest.raises(ValueError, match="value_ranges.rating"):
        FeedbackOptions(value_ranges={"rating": [5, 1]})


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_retried_signal_with_a_feedback_id_counts_once(tmp_path: Path) -> None:
    """The same signal sent three times (a client retrying a POST whose answer it lost)
    with one ``feedback_id`` is one row, and counts once in the summary; another id, or
    another kind or run with the same id, is another signal; without an id each call
    is a row, as before. Another store on the same file (another process) sees the id."""
    path = str(tmp_path / "f.sqlite3")
    store = FeedbackStore(FeedbackOptions(path=path))
    other = FeedbackStore(FeedbackOptions(path=path))
    for sink in (store, store, other):
        await sink.aieng_feedback_record(Feedback("r1", "thumbs", 1,
                                                  metadata={"feedback_id": "c-1"}))
    await store.aieng_feedback_record(Feedback("r1", "thumbs", -1,
                                               metadata={"feedback_id": "c-2"}))
    await store.aieng_feedback_record(Feedback("r1", "rating", 4,
                                               metadata={"feedback_id": "c-1"}))
    await store.aieng_feedback_record(Feedback("r2", "thumbs", 1,
                                               metadata={"feedback_id": "c-1"}))
    await store.aieng_feedback_record(Feedback("r3", "thumbs", 1))
    await store.aieng_feedback_record(Feedback("r3", "thumbs", 1))
    rows = await store.query()
    assert [(r.run_id, r.kind, r.value) for r in rows] == [
        ("r1", "thumbs", 1.0), ("r1", "thumbs", -1.0), ("r1", "rating", 4.0),
        ("r2", "thumbs", 1.0), ("r3", "thumbs", 1.0), ("r3", "thumbs", 1.0)]
    assert (await store.summary())["thumbs"]["count"] == 5
    with pytest.raises(InvalidFeedback, match="feedback_id"):
        await store.aieng_feedback_record(Feedback("r1", "thumbs", 1,
                                                   metadata={"feedback_id": 12}))
    # The id of a stored signal sent with another value or text is no retry: refused
    # (the IETF idempotency draft's 422), the first kept.
    for changed in (Feedback("r1", "thumbs", -1, metadata={"feedback_id": "c-1"}),
                    Feedback("r1", "thumbs", 1, "why", metadata={"feedback_id": "c-1"})):
        with pytest.raises(InvalidFeedback, match="sent before"):
            await other.aieng_feedback_record(changed)
    assert len(await store.query()) == 6
    await store.aieng_pipeline_close()
    await other.aieng_pipeline_close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_pipeline_feedback_through_the_sink(tmp_path: Path) -> None:
    """``pipeline.feedback`` under either backend: a retried signal reports it recorded
    (1 sink) and is stored once; an out-of-range thumbs fails, its cause the store's
    ``InvalidFeedback`` (status 422 for an HTTP front)."""
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
        pipe = kernel.compose({"llm": ScriptedBackend(lambda request: "ok"),
                               "feedback": store}, name="p")
        result = await pipe.run("q")
        for _ in range(2):
            assert await pipe.feedback(result.run_id, "thumbs", 1, feedback_id="x") == 1
        with pytest.raises(Exception) as caught:
            await pipe.feedback(result.run_id, "thumbs", 7)
        cause = getattr(caught.value, "cause", None)  # HookError's
        assert isinstance(cause, InvalidFeedback) and cause.status == 422
        assert len(await store.query(run_id=result.run_id)) == 1
        await pipe.aclose()


def _record_in_child(store: FeedbackStore) -> None:
    """A forked child's work: record a signal with the store it inherited, then close."""
    import anyio

    anyio.run(store.aieng_feedback_record, Feedback("child", "thumbs", 1))
    anyio.run(store.aieng_pipeline_close)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_records_with_its_own_lock_and_connection(tmp_path: Path) -> None:
    """A host forks a worker (multiprocessing "fork") while one of its threads is in the
    middle of a write (the store's lock held, the file open): the child records its signal
    on a lock and a connection of its own (it hung on the parent's lock, which no thread
    of the child would release), and the parent's connection still works after the
    child closed its store."""
    import anyio

    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
    anyio.run(store.aieng_feedback_record, Feedback("parent", "thumbs", 1))
    context = multiprocessing.get_context("fork")
    with store._lock:  # a worker thread of the host mid-write at the fork
        child = context.Process(target=_record_in_child, args=(store,))
        child.start()
    child.join(8)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0
    anyio.run(store.aieng_feedback_record, Feedback("parent", "thumbs", -1))
    rows = anyio.run(lambda: store.query())
    assert [(r.run_id, r.value) for r in rows] == [("parent", 1.0), ("child", 1.0),
                                                    ("parent", -1.0)]
    anyio.run(store.aieng_pipeline_close)
