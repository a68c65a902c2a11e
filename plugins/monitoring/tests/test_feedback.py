"""The ``feedback-sqlite`` sink: stored off the loop in WAL mode, read back by the query API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore

from aieng_core.kernel import Kernel
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio


async def test_record_and_query(tmp_path: Path) -> None:
    """Explicit and implicit signals come back in order, filtered by run and kind."""
    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "fb" / "f.sqlite3")))
    await store.aieng_feedback_record(Feedback("r1", "thumbs", 1.0, metadata={"key": "k1"}))
    await store.aieng_feedback_record(Feedback("r1", "correction", text="Paris, not Lyon"))
    await store.aieng_feedback_record(Feedback("r2", "early_stop"))
    await store.aieng_feedback_record(Feedback("r2", "rating", 4))
    rows = await store.query(run_id="r1")
    assert [(r.kind, r.value, r.text) for r in rows] == [("thumbs", 1.0, ""),
                                                         ("correction", 0.0, "Paris, not Lyon")]
    assert rows[0].metadata == {"key": "k1"}
    assert [r.run_id for r in await store.query(kind="early_stop")] == ["r2"]
    assert len(await store.query(limit=2)) == 2
    assert await store.query(since=rows[-1].ts + 3600) == []
    summary = await store.summary()
    assert summary["rating"] == {"count": 4 - 3, "mean": 4.0}
    with pytest.raises(ValueError, match="limit"):
        await store.query(limit=0)
    await store.aieng_pipeline_close()


async def test_lone_surrogates_from_a_json_body_are_stored(tmp_path: Path) -> None:
    """A ``"\\ud800"`` escape in a feedback body (a lone surrogate in the ``str``) is
    stored, not a UnicodeEncodeError: in the text as U+FFFD, in the metadata exactly."""
    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
    await store.aieng_feedback_record(Feedback("r\ud800", "correction", text="a\udc00b",
                                               metadata={"note": "x\ud800"}))
    rows = await store.query(run_id="r\ud800")
    assert [(r.run_id, r.text, r.metadata) for r in rows] == [
        ("r\ufffd", "a\ufffdb", {"note": "x\ud800"})]
    await store.aieng_pipeline_close()


async def test_wal_and_persistence(tmp_path: Path) -> None:
    """The file is in WAL mode and another connection (another process) reads the rows."""
    path = tmp_path / "f.sqlite3"
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(store.aieng_feedback_record, Feedback(f"r{i}", "thumbs", -1))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 50
    await store.aieng_pipeline_close()
    reopened = FeedbackStore(FeedbackOptions(path=str(path)))
    assert len(await reopened.query()) == 50
    await reopened.aieng_pipeline_close()


async def test_through_pipeline_feedback(aieng_kernel: Kernel, tmp_path: Path) -> None:
    """``Pipeline.feedback`` reaches the sink; the run id of a real run is stored."""
    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
    pipe = aieng_kernel.compose({"llm": ScriptedBackend(), "feedback": store})
    result = await pipe.run("hello")
    assert await pipe.feedback(result.run_id, "regenerate", source="gateway") == 1
    rows = await store.query(run_id=result.run_id)
    assert [(r.kind, r.metadata) for r in rows] == [("regenerate", {"source": "gateway"})]


def test_options_refuse_blank_path() -> None:
    """A blank path is refused with the option named."""
    with pytest.raises(ValueError, match="path"):
        FeedbackOptions(path=" ")


async def test_large_values_and_bounds_are_stored_and_queried(tmp_path: Path) -> None:
    """A finite value past SQLite's 64-bit integers (a Python int) is stored as the REAL
    the column holds, not an OverflowError; a huge limit or ``since`` reads as "no
    bound"; a NaN ``since`` is refused (it silently matched nothing)."""
    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
    await store.aieng_feedback_record(Feedback("r", "rating", 2**63))
    await store.aieng_feedback_record(Feedback("r", "rating", -(10**30)))
    await store.aieng_feedback_record(Feedback("r", "note", text="é" * 100_000,
                                               metadata={"big": 2**80}))
    rows = await store.query(limit=2**63)
    assert [r.value for r in rows] == [float(2**63), -1e30, 0.0]
    assert rows[2].text == "é" * 100_000 and rows[2].metadata == {"big": 2**80}
    assert await store.query(since=2**64) == [] == await store.query(since=10**400)
    assert len(await store.query(since=-(2**64))) == 3
    with pytest.raises(ValueError, match="since"):
        await store.query(since=float("nan"))
    await store.aieng_pipeline_close()
    reopened = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.sqlite3")))
    assert (await reopened.summary())["rating"]["count"] == 2
    await reopened.aieng_pipeline_close()
