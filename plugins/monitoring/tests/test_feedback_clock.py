"""The feedback store and time: times given as aware datetimes (naive ones refused, in any
``TZ``), read back as aware UTC datetimes, and a wall clock set forward past
``retention_days`` (a fake clock) that says so when it deletes every signal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore

from aieng_core.testing import ManualClock

pytestmark = pytest.mark.anyio

DAY = 86_400.0
#: 2024-05-01T00:00:00Z
T0 = 1_714_521_600.0


@pytest.fixture(params=["Pacific/Kiritimati", "America/St_Johns"])
def exotic_tz(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local zone set to UTC+14, then to UTC-3:30 (with DST)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


async def _three(path: Path, clock: ManualClock) -> FeedbackStore:
    """A store on ``path`` holding three signals, a day apart from T0 (fake clock)."""
    store = FeedbackStore(FeedbackOptions(path=str(path)), clock=clock)
    for n in range(3):
        clock.now = T0 + n * DAY
        await store.aieng_feedback_record(Feedback(run_id=f"r{n}", kind="thumbs", value=1))
    return store


async def test_aware_datetimes_select_as_epoch_seconds_whatever_tz(
        tmp_path: Path, exotic_tz: str) -> None:
    """``query(since=)`` and ``prune(before=)`` take an aware datetime in any zone as the
    instant it names, whatever the process's ``TZ``; ``recorded_at`` reads each ``ts``
    back as an aware UTC datetime."""
    store = await _three(tmp_path / "f.db", ManualClock())
    second = datetime(2024, 5, 2, tzinfo=UTC)
    in_kiribati = second.astimezone(timezone(timedelta(hours=14)))
    for since in (second, in_kiribati, T0 + DAY):
        assert [r.run_id for r in await store.query(since=since)] == ["r1", "r2"]
    rows = await store.query()
    assert [r.recorded_at.isoformat() for r in rows] == [
        "2024-05-01T00:00:00+00:00", "2024-05-02T00:00:00+00:00",
        "2024-05-03T00:00:00+00:00"]
    assert all(r.recorded_at.timestamp() == r.ts for r in rows)
    assert await store.prune(in_kiribati) == 1
    assert [r.run_id for r in await store.query()] == ["r1", "r2"]
    await store.aieng_pipeline_close()


async def test_a_naive_datetime_is_refused_naming_the_argument(
        tmp_path: Path, exotic_tz: str) -> None:
    """A datetime without a zone would be read in the local ``TZ`` (a different instant
    under each): ``since`` and ``before`` refuse it, saying what to give."""
    store = await _three(tmp_path / "f.db", ManualClock())
    naive = datetime(2024, 5, 2)
    with pytest.raises(ValueError, match="since is a datetime without a time zone"):
        await store.query(since=naive)
    with pytest.raises(ValueError, match="before is a datetime without a time zone"):
        await store.prune(naive)
    assert len(await store.query()) == 3
    await store.aieng_pipeline_close()


async def test_a_clock_set_forward_past_retention_says_it_deletes_every_signal(
        tmp_path: Path) -> None:
    """A store opened with the wall clock 200 days ahead (a VM's clock before NTP fixes
    it) and ``retention_days = 90`` deletes every signal, as retention says, but not
    silently: a ``feedback.prune_all`` warning names the clock, the newest signal and
    what to do."""
    path = tmp_path / "f.db"
    first = await _three(path, ManualClock())
    await first.aieng_pipeline_close()
    ahead = ManualClock(T0 + 200 * DAY)
    store = FeedbackStore(FeedbackOptions(path=str(path), retention_days=90), clock=ahead)
    with structlog.testing.capture_logs() as logs:
        assert await store.query() == []
    [warning] = [e for e in logs if e["event"] == "feedback.prune_all"]
    assert warning["log_level"] == "warning"
    assert warning["clock"] == "2024-11-17T00:00:00+00:00"
    assert warning["newest"] == "2024-05-03T00:00:00+00:00"
    assert "clock" in warning["hint"] and "backup" in warning["hint"]
    await store.aieng_pipeline_close()


async def test_a_pruning_that_keeps_signals_does_not_warn(tmp_path: Path) -> None:
    """Retention that deletes only some signals (the clock 91.5 days on) keeps the
    newer ones and warns of nothing."""
    path = tmp_path / "f.db"
    first = await _three(path, ManualClock())
    await first.aieng_pipeline_close()
    store = FeedbackStore(FeedbackOptions(path=str(path), retention_days=90),
                          clock=ManualClock(T0 + 91.5 * DAY))
    with structlog.testing.capture_logs() as logs:
        assert [r.run_id for r in await store.query()] == ["r2"]
    assert not [e for e in logs if e["event"] == "feedback.prune_all"]
    await store.aieng_pipeline_close()
