"""The feedback file holds what users wrote (corrections, comments): its owner's alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore

pytestmark = pytest.mark.anyio


@pytest.mark.usefixtures("usual_umask")
async def test_a_new_feedback_file_is_its_owners_alone(tmp_path: Path) -> None:
    """Created 0600 (the -wal and -shm files SQLite makes take the database's mode)."""
    path = tmp_path / ".aieng" / "feedback.sqlite3"
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    await store.aieng_feedback_record(Feedback(run_id="r", kind="correction",
                                               text="my address is 1 Main St"))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode)
             for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()}
    await store.aieng_pipeline_close()
    assert modes[path.name] == 0o600, modes
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes


@pytest.mark.usefixtures("usual_umask")
async def test_an_existing_feedback_file_keeps_its_mode(tmp_path: Path) -> None:
    """A file the user made readable by a group on purpose (a dashboard) stays so."""
    path = tmp_path / "feedback.sqlite3"
    path.touch()
    path.chmod(0o640)
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    await store.aieng_feedback_record(Feedback(run_id="r", kind="thumbs", value=1))
    await store.aieng_pipeline_close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
