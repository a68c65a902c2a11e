"""Evaluation and time: a per-item deadline (``item_timeout_s``) that records the item as
failed and lets the run go on, validated up front; session times in UTC with their zone
whatever ``TZ`` says; a replay's default directory when the wall clock shows a time it
showed before (a fake clock)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import pytest
from aieng_eval import _replay, read_results, replay, run_eval


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    kit.CALLS.clear()
    kit.HANG_ON.clear()
    yield
    kit.HANG_ON.clear()


def _dataset(folder: Path, *texts: str) -> Path:
    path = folder / "ds.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{n}", "input": text, "reference": text})
                            + "\n" for n, text in enumerate(texts)), encoding="utf-8")
    return path


def _run(pipeline: Path, dataset: Path, out: Path, backend: str = "asyncio",
         **kwargs: Any) -> Any:
    async def main() -> Any:
        with anyio.fail_after(120):  # only catches a hang: the item deadline never came
            return await run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                  hash_cache=out.parent / "hashes.json", reports=False,
                                  **kwargs)

    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_item_past_item_timeout_is_a_failed_item_and_the_run_goes_on(
        tmp_path: Path, backend: str) -> None:
    """An item whose backend never answers is cancelled at ``item_timeout_s``: it is
    recorded as an ``error`` naming the limit, its value and how to raise it, the run
    returns, and a resume (the backend answering again) runs it and records it ``ok``.
    The lockfile records the limit."""
    pipeline = kit.pipeline_file(tmp_path)
    dataset = _dataset(tmp_path, "stuck words")
    out = tmp_path / "run"
    kit.HANG_ON.add("stuck")
    first = _run(pipeline, dataset, out, backend, item_timeout_s=0.2)
    [record] = first.results
    assert record.status == "error" and first.failed == (record,)
    assert record.error.startswith("TimeoutError: the item ran past item_timeout_s = 0.2 s")
    assert "raise item_timeout_s (--item-timeout)" in record.error
    assert record.duration_s >= 0.2
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    assert lock["item_timeout_s"] == 0.2
    assert lock["sessions"][0]["finished_at"] is not None
    kit.HANG_ON.clear()
    again = _run(pipeline, dataset, out, backend)
    assert again.ran == 1 and [r.status for r in again.results] == ["ok"]
    assert read_results(out / "results.jsonl")["q0"].output == "stuck words"


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "10s", True])
def test_item_timeout_s_is_validated_before_anything_runs(tmp_path: Path,
                                                          value: object) -> None:
    """0, negative, NaN, infinite, text and boolean limits are refused naming the option
    (and its command-line flag), before the run directory is made."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"item_timeout_s \(--item-timeout\) must be a "
                                         r"positive, finite number of seconds"):
        _run(kit.pipeline_file(tmp_path), _dataset(tmp_path, "a"), out,
             item_timeout_s=value)
    assert not out.exists()


def test_the_command_line_refuses_a_bad_item_timeout(tmp_path: Path) -> None:
    """``--item-timeout 0`` is a usage error (exit 2); ``inf`` is refused naming it."""
    pipeline, dataset = kit.pipeline_file(tmp_path), _dataset(tmp_path, "a")
    result = kit.invoke("run", str(pipeline), str(dataset), "--out", str(tmp_path / "r"),
                        "--item-timeout", "0")
    assert result.exit_code == 2 and "--item-timeout" in result.output
    result = kit.invoke("run", str(pipeline), str(dataset), "--out", str(tmp_path / "r"),
                        "--item-timeout", "inf")
    assert result.exit_code == 1 and "--item-timeout" in result.output


@pytest.fixture(params=["Pacific/Kiritimati", "America/St_Johns"])
def exotic_tz(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_session_times_are_utc_with_their_zone_whatever_tz(tmp_path: Path,
                                                           exotic_tz: str) -> None:
    """The lockfile's ``started_at`` / ``finished_at`` (and each session's) are ISO 8601
    with ``+00:00``, the instant of the run, under a local zone of UTC+14 or UTC-3:30."""
    before = datetime.now(UTC).replace(microsecond=0)
    _run(kit.pipeline_file(tmp_path), _dataset(tmp_path, "a"), tmp_path / "run")
    after = datetime.now(UTC)
    lock = json.loads((tmp_path / "run" / "lock.json").read_text(encoding="utf-8"))
    times = [lock["started_at"], lock["finished_at"], lock["sessions"][0]["started_at"],
             lock["sessions"][0]["finished_at"]]
    for text in times:
        assert text.endswith("+00:00"), text
        assert before <= datetime.fromisoformat(text) <= after


class _Stopped(datetime):
    """``datetime`` whose ``now`` is always 2024-05-01T12:00:00Z (a clock that came back
    to a time it showed before)."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime(2024, 5, 1, 12, tzinfo=UTC).astimezone(tz or UTC)


def test_replays_at_the_same_wall_time_get_their_own_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replays while the wall clock shows the same instant (set back, or stopped)
    each run into a directory of their own, named with the UTC time and its ``Z``: the
    second does not resume the first's (which would run nothing)."""
    pipeline, dataset = kit.pipeline_file(tmp_path), _dataset(tmp_path, "a", "b")
    run_dir = tmp_path / "run"
    _run(pipeline, dataset, run_dir)
    monkeypatch.setattr(_replay, "datetime", _Stopped)

    async def twice() -> list[Any]:
        return [await replay(run_dir, kernel=kit.make_kernel(),
                             hash_cache=tmp_path / "hashes.json") for _ in range(2)]

    reports = anyio.run(twice)
    assert [r.new_dir.name for r in reports] == ["replay-20240501T120000000000Z",
                                                 "replay-20240501T120000000000Z-2"]
    assert all(r.matches and r.compared == 2 for r in reports)
    lock = json.loads((reports[1].new_dir / "lock.json").read_text(encoding="utf-8"))
    assert len(lock["sessions"]) == 1 and lock["sessions"][0]["items"] == 2
