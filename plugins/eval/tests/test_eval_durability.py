"""Long runs: a full disk, a failing write or an early stop leave a run directory the next
run resumes, close every file and pipeline, and say which file could not be written."""

from __future__ import annotations

import errno
import gc
import json
import warnings
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import pytest
from aieng_eval import EvalError, read_results, run_eval
from aieng_eval._results import ResultsFile
from aieng_eval.report import write_reports

from aieng_core import Pipeline
from aieng_core.testing import open_files

_FULL = Path("/dev/full")  # every write to it fails with ENOSPC, as on a full disk


def write_dataset(folder: Path, n: int = 6) -> Path:
    """n items ``q0 .. q{n-1}`` whose reference is the input (the echo backend matches)."""
    path = folder / "ds.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "input": f"w{i} é 😀",
                                        "reference": f"w{i} é 😀"}) + "\n" for i in range(n)),
                    encoding="utf-8")
    return path


def run(pipeline: Path, dataset: Path, out: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    """run_eval on a fresh test kernel, running already (as an application's is): the
    runner closes the pipelines it builds itself, the kernel does not do it for it."""
    kwargs.setdefault("hash_cache", out.parent / "hashes.json")

    async def main() -> Any:
        CLOSED.clear()
        async with kit.make_kernel() as kernel:
            try:
                return await run_eval(pipeline, dataset, out=out, kernel=kernel, **kwargs)
            finally:
                CLOSED_IN_RUN[:] = CLOSED

    return anyio.run(main)




def full_disk(monkeypatch: pytest.MonkeyPatch, name: str, *, written: int = 0) -> None:
    """After ``written`` whole writes of a file whose name holds ``name`` (the scratch file
    written before its rename), each further ``Path.write_text`` of one writes half its
    text and fails as a full disk does."""
    original = Path.write_text
    seen = [0]

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if name in self.name:
            seen[0] += 1
            if seen[0] > written:
                original(self, data[: len(data) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


#: the names of the pipelines closed (``Pipeline.aclose``) in the test, and those closed
#: by the end of the last ``run_eval`` (before its kernel closed what was left)
CLOSED: list[str] = []
CLOSED_IN_RUN: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    kit.CALLS.clear()
    CLOSED.clear()
    CLOSED_IN_RUN.clear()


@pytest.fixture()
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the pipelines closed: what ``run_eval`` closed is in ``CLOSED_IN_RUN``."""
    original = Pipeline.aclose

    async def aclose(self: Pipeline) -> None:
        CLOSED.append(self.name)
        await original(self)

    monkeypatch.setattr(Pipeline, "aclose", aclose)
    return CLOSED_IN_RUN


@pytest.mark.skipif(not _FULL.exists() or not Path("/proc/self/fd").exists(),
                    reason="needs Linux's /dev/full and /proc")
def test_a_full_disk_names_the_results_file_and_keeps_what_was_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed: list[str]) -> None:
    """The second session's records cannot be written (ENOSPC): the run stops with an
    EvalError naming results.jsonl (chained to the OSError), the file handle is closed,
    the pipeline closed and the session recorded; the first session's records are intact
    and the next run, with space again, runs only the missing items."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    first = run(pipeline, ds, out, limit=3)
    assert first.ran == 3
    stored = (out / "results.jsonl").read_bytes()

    def full(self: ResultsFile) -> None:  # what an append on a full disk does
        self._handle = _FULL.open("ab")

    monkeypatch.setattr(ResultsFile, "open", full)
    with pytest.raises(EvalError) as caught:
        run(pipeline, ds, out)
    message = str(caught.value)
    assert str(out / "results.jsonl") in message and "No space left" in message
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert "rerun" in message
    assert str(_FULL) not in open_files()
    assert closed == ["p"]
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    assert [s["items"] for s in lock["sessions"]] == [3, 0]
    assert lock["sessions"][-1]["finished_at"] is not None
    assert (out / "results.jsonl").read_bytes() == stored
    monkeypatch.undo()
    again = run(pipeline, ds, out)
    assert (again.ran, again.skipped, len(again.failed)) == (3, 3, 0)
    assert sorted(read_results(out / "results.jsonl")) == [f"q{i}" for i in range(6)]


def test_a_failing_lockfile_write_still_closes_the_pipelines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed: list[str]) -> None:
    """The lockfile cannot be written when the session ends: the pipelines are closed all
    the same, the error names the lockfile, the earlier lockfile stays as it was and no
    temporary file is left behind."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=2)
    before = (out / "lock.json").read_bytes()
    full_disk(monkeypatch, "lock.json", written=1)  # the session's start; not its end
    with pytest.raises(OSError) as caught:
        run(pipeline, ds, out, reports=False)
    assert "lock.json" in str(caught.value)
    assert closed == ["p"]
    monkeypatch.undo()
    after = json.loads((out / "lock.json").read_text(encoding="utf-8"))  # whole JSON
    assert len(after["sessions"]) == 2 or (out / "lock.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if ".tmp" in p.name) == []


def test_reports_cut_short_by_a_full_disk_leave_the_earlier_ones_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json, report.md and report.html are each replaced whole or not at all: a
    write that fails half-way leaves the earlier file and no temporary file."""
    ds = write_dataset(tmp_path)
    out = tmp_path / "run"
    done = run(kit.pipeline_file(tmp_path), ds, out)
    names = ("summary.json", "report.md", "report.html")
    before = {name: (out / name).read_bytes() for name in names}
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    for failing in names:
        full_disk(monkeypatch, failing)
        with pytest.raises(OSError):
            write_reports(out, list(done.results[:2]), lock, samples=20)
        monkeypatch.undo()
        assert (out / failing).read_bytes() == before[failing], failing
        assert json.loads((out / "summary.json").read_text(encoding="utf-8"))
        assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []


def test_a_progress_callback_that_raises_leaves_no_stream_open(tmp_path: Path) -> None:
    """A progress callback raising at the start (a Ctrl-C in the terminal's progress bar,
    a bug in the caller's) stops the run before any item; the runner's internal streams
    are closed (no ResourceWarning when they are collected), and a rerun runs every
    item."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"

    def progress(done: int, total: int, result: object) -> None:
        raise KeyboardInterrupt

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(BaseException):  # noqa: B017 (a KeyboardInterrupt or a group)
            run(pipeline, ds, out, concurrency=3, progress=progress)
        gc.collect()
    leaks = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert leaks == []
    again = run(pipeline, ds, out)
    assert (again.ran, again.skipped) == (6, 0)


def test_a_comparison_cut_short_leaves_the_earlier_files_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``compare --out`` replaces comparison.json, compare.md and report.html whole or not
    at all."""
    from aieng_eval._compare import compare_runs, write_comparison

    ds = write_dataset(tmp_path)
    runs = [tmp_path / "a", tmp_path / "b"]
    for out, mode in zip(runs, ("echo", "upper"), strict=True):
        run(kit.pipeline_file(tmp_path, mode=mode, name=out.name), ds, out, reports=False)
    comparison = compare_runs(runs, samples=20, seed=0)
    cmp = tmp_path / "cmp"
    write_comparison(comparison, cmp)
    names = ("comparison.json", "compare.md", "report.html")
    before = {name: (cmp / name).read_bytes() for name in names}
    for failing in names:
        full_disk(monkeypatch, failing)
        with pytest.raises(OSError):
            write_comparison(comparison, cmp)
        monkeypatch.undo()
        assert {name: (cmp / name).read_bytes() for name in names} == before, failing
        assert [p.name for p in cmp.iterdir() if ".tmp" in p.name] == []


def test_the_reports_of_an_interrupted_run_say_it_is_incomplete(tmp_path: Path) -> None:
    """A run stopped at its 4th of 6 items (a BaseException, as Ctrl-C or a kill raises)
    and reported with ``aieng eval report``: the summary, report.md, report.html and the
    command say how many items have no result and how to resume, instead of reading as a
    finished run of fewer items. A finished run reports none missing."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    kit.KILL_ON.append("w3")
    try:
        with pytest.raises(BaseException):  # noqa: B017 (Killed, maybe in a group)
            run(pipeline, ds, out, concurrency=1)
    finally:
        kit.KILL_ON.clear()
    stored = len(read_results(out / "results.jsonl"))
    assert stored <= 3
    note = f"{6 - stored} of 6 items have no result"
    shown = kit.invoke("report", str(out))
    assert shown.exit_code == 0, shown.output
    assert note in shown.output and "rerun the same aieng eval command" in shown.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["not_run"] == 6 - stored and summary["counts"]["total"] == stored
    assert note in (out / "report.md").read_text(encoding="utf-8")
    assert note in (out / "report.html").read_text(encoding="utf-8")
    finished = run(pipeline, ds, out)
    assert (finished.ran, finished.skipped) == (6 - stored, stored)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["not_run"] == 0
    assert "no result" not in (out / "report.md").read_text(encoding="utf-8")
