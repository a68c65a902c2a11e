"""The second day: run directories written by another aieng-eval (a newer lockfile layout),
damaged ones (a folder where a file belongs, records of the wrong types), two processes on
one run directory, and containers without a home folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import _evalkit as kit
import pytest
from aieng_eval import EvalError, FileHasher, read_results
from aieng_eval._lock import CACHE_MIN_BYTES, LOCK_FORMAT
from aieng_eval._results import ItemResult
from hypothesis import given, settings
from hypothesis import strategies as st


def write_dataset(folder: Path, n: int = 4) -> Path:
    return kit.echo_dataset(folder, n)


def run(pipeline: Path, dataset: Path, out: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("bootstrap_samples", 50)
    return kit.run_sync(pipeline, dataset, out, **kwargs)


@pytest.fixture(autouse=True)
def _reset() -> None:
    kit.CALLS.clear()


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A finished run: (pipeline, dataset, run directory)."""
    pipeline, ds = kit.pipeline_file(tmp_path), write_dataset(tmp_path)
    run(pipeline, ds, tmp_path / "run")
    kit.CALLS.clear()
    return pipeline, ds, tmp_path / "run"


def newer_lock(run_dir: Path) -> tuple[bytes, bytes]:
    """Mark the run's lockfile as written by a later aieng-eval (a newer layout); returns
    the lockfile's and the results' bytes."""
    path = run_dir / "lock.json"
    lock = json.loads(path.read_text(encoding="utf-8"))
    lock.update(format=LOCK_FORMAT + 1, aieng_eval="9.0.0")
    path.write_text(json.dumps(lock), encoding="utf-8")
    return path.read_bytes(), (run_dir / "results.jsonl").read_bytes()


def test_a_run_directory_of_a_newer_layout_is_refused_not_resumed(
        finished: tuple[Path, Path, Path]) -> None:
    """A lockfile of a later layout is not read as this one: the resume stops, naming the
    file, the layout found, the aieng-eval that wrote it and the upgrade, and leaves both
    files as they were (nothing ran)."""
    pipeline, ds, out = finished
    lock_bytes, results_bytes = newer_lock(out)
    with pytest.raises(EvalError) as caught:
        run(pipeline, ds, out)
    message = str(caught.value)
    assert str(out / "lock.json") in message
    assert f"layout {LOCK_FORMAT + 1}" in message and "aieng-eval 9.0.0" in message
    assert "upgrade aieng-eval" in message and "--force" in message
    assert kit.CALLS == []
    assert (out / "lock.json").read_bytes() == lock_bytes
    assert (out / "results.jsonl").read_bytes() == results_bytes
    again = run(pipeline, ds, out, force=True)  # starting over is still the user's choice
    assert again.ran == 4 and again.lock["format"] == LOCK_FORMAT
    assert list(out.glob("results.jsonl.bak-*"))


def test_report_replay_and_compare_refuse_a_newer_layout(
        finished: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The commands that read a run directory say the same, exit 1, no traceback; compare
    does not fall back to reading the records as this layout's."""
    pipeline, ds, out = finished
    other = tmp_path / "other"
    run(pipeline, ds, other)
    newer_lock(out)
    for args in (["report", str(out)], ["replay", str(out), "--out", str(tmp_path / "r")],
                 ["compare", str(other), str(out)]):
        result = kit.invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "aieng-eval 9.0.0" in result.output and "upgrade" in result.output, args
        assert not isinstance(result.exception, (KeyError, TypeError, ValueError))


@pytest.mark.parametrize("value", ["2", None, 0, 1.5, True])
def test_a_lockfile_format_that_is_no_layout_number_is_refused(
        finished: tuple[Path, Path, Path], value: object) -> None:
    """``format`` is a whole number from 1: anything else is not read as layout 1."""
    out = finished[2]
    path = out / "lock.json"
    lock = json.loads(path.read_text(encoding="utf-8"))
    lock["format"] = value
    path.write_text(json.dumps(lock), encoding="utf-8")
    result = kit.invoke("report", str(out))
    assert result.exit_code == 1 and "not a layout number" in result.output


def test_a_lockfile_without_format_reads_as_layout_1(finished: tuple[Path, Path, Path]
                                                      ) -> None:
    pipeline, ds, out = finished
    path = out / "lock.json"
    lock = json.loads(path.read_text(encoding="utf-8"))
    del lock["format"]
    path.write_text(json.dumps(lock), encoding="utf-8")
    again = run(pipeline, ds, out)
    assert again.ran == 0 and again.skipped == 4


def test_a_folder_where_the_lockfile_belongs_is_a_clear_error(
        finished: tuple[Path, Path, Path]) -> None:
    """``lock.json`` a folder (a bad copy, a volume mounted on it): the resume and the
    report name it and say it cannot be read, instead of an IsADirectoryError."""
    pipeline, ds, out = finished
    (out / "lock.json").unlink()
    (out / "lock.json").mkdir()
    with pytest.raises(EvalError, match="lock.json: cannot read the lockfile"):
        run(pipeline, ds, out)
    result = kit.invoke("report", str(out))
    assert result.exit_code == 1 and "cannot read the lockfile" in result.output
    assert kit.CALLS == []


def test_a_run_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    """``--out`` under a file (or on a read-only mount): an EvalError naming the folder
    and what to do, before anything runs."""
    pipeline, ds = kit.pipeline_file(tmp_path), write_dataset(tmp_path)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(EvalError, match="cannot use .* as the run directory.*--out"):
        run(pipeline, ds, tmp_path / "file" / "run")
    assert kit.CALLS == []


_BAD_FIELDS = [("scores", []), ("scores", "0.5"), ("judges", ["em"]), ("metadata", [1]),
               ("models", 5), ("models", "ab"), ("line", "3"), ("duration_s", "slow"),
               ("output", 5), ("error", ["x"]), ("label", "good"), ("models", [1, 2]),
               ("judges", {"m": 1}), ("label", {"m": "good"})]


@pytest.mark.parametrize(("key", "value"), _BAD_FIELDS)
def test_a_record_with_a_field_of_another_type_is_skipped_not_misread(
        tmp_path: Path, key: str, value: object) -> None:
    """A record whose field has another type than every version wrote (a damaged file, a
    later layout) is a bad line: skipped (its item runs again), never read as a record
    that breaks the reports later (``line`` "3" fails the sort by line)."""
    path = tmp_path / "results.jsonl"
    good = {"id": "a", "status": "ok", "output": "x", "scores": {"m": 1.0}, "line": 1}
    bad = {**good, "id": "b", key: value}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    assert list(read_results(path)) == ["a"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
_FIELDS = st.sampled_from(["output", "scores", "judges", "error", "duration_s", "models",
                           "metadata", "label", "line", "judge_failures", "agent"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_FIELDS, _JSON, max_size=4))
def test_any_record_reads_as_typed_or_is_refused(fields: dict[str, Any]) -> None:
    """Whatever JSON a record holds, it reads as a record of the documented types or
    raises TypeError / ValueError (read_results skips it): never another exception, never
    a record the reports cannot sort or sum."""
    try:
        record = ItemResult.from_json({"id": "a", "status": "ok", **fields})
    except (TypeError, ValueError):
        return
    assert isinstance(record.output, str) and isinstance(record.error, str)
    assert isinstance(record.line, int) and isinstance(record.duration_s, (int, float))
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in record.scores.items())
    assert isinstance(record.metadata, dict)
    assert all(isinstance(v, str) for v in record.judges.values())
    if isinstance(record.label, dict):
        assert all(isinstance(v, (int, float)) for v in record.label.values())
    assert all(isinstance(m, str) for m in record.models)
    assert record.label is None or isinstance(record.label, (int, float, dict))


def _no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """No home folder and no cache variable: a container run under a user id without a
    passwd entry."""
    for name in ("HOME", "AIENG_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))


def test_no_home_folder_hashes_without_a_cache(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The file-hash cache is an optimisation: without a folder to keep it in, files are
    hashed on every run (nothing is written), and the run goes on."""
    _no_home(monkeypatch)
    big = tmp_path / "weights.bin"
    big.write_bytes(b"w" * CACHE_MIN_BYTES)
    first, second = FileHasher(), FileHasher()
    assert first.cache_path is None
    assert first.file(big) == second.file(big)
    first.save()
    assert first.reads == second.reads == 1  # each hashed it: no cache shared
    pipeline = kit.pipeline_file(tmp_path, weights=str(big))
    result = run(pipeline, write_dataset(tmp_path), tmp_path / "run", hash_cache=None)
    assert result.ran == 4 and result.lock["files"][0]["path"] == str(big)


_HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    handle = open(sys.argv[1], "a+b")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.truncate(0)
    handle.write(f"{os.getpid()}\\n".encode())
    handle.flush()
    print("held", flush=True)
    sys.stdin.read()
""")


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_another_process_holding_the_run_directory(tmp_path: Path) -> None:
    """Another process (a second ``aieng eval``) holding the run directory: refused at
    once naming its process id; once that process is gone (even killed), the directory
    is free again: no stale lock to remove by hand."""
    pipeline, ds = kit.pipeline_file(tmp_path), write_dataset(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out / ".aieng-eval.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(EvalError, match=f"process {holder.pid}\\b"):
            run(pipeline, ds, out)
        assert kit.CALLS == [] and not (out / "results.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run(pipeline, ds, out).ran == 4
    assert (out / ".aieng-eval.lock").read_text(encoding="ascii").strip() == str(os.getpid())


def _project(folder: Path) -> tuple[Path, Path, Path]:
    """A project folder: a pipeline naming ``weights/`` (relative), the dataset, and its
    run directory inside it."""
    folder.mkdir()
    weights = folder / "weights"
    weights.mkdir()
    (weights / "a.bin").write_bytes(b"first")
    return kit.pipeline_file(folder, weights="weights"), write_dataset(folder), folder / "run"


def test_a_run_moved_with_its_project_resumes_checking_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lockfile keeps absolute paths; a project moved (or copied to another machine)
    with its run directory resumes: each file is matched with the one its component and
    option name now, so an unchanged file says nothing and a changed input is refused as
    it would be in place (not a warning that the old path is gone, the new one unchecked).
    """
    import shutil

    pipeline, ds, out = _project(tmp_path / "old place")
    monkeypatch.chdir(tmp_path / "old place")
    run(pipeline, ds, out, limit=2)
    moved = tmp_path / "new plàce"
    shutil.copytree(tmp_path / "old place", moved)
    monkeypatch.chdir(moved)
    again = run(moved / pipeline.name, moved / ds.name, moved / "run", limit=3)
    assert again.ran == 1 and again.warnings == ()
    assert [f["path"] for f in again.lock["files"]] == [str(moved / "weights")]
    (moved / "weights" / "a.bin").write_bytes(b"retrained")
    copy = tmp_path / "third"
    shutil.copytree(moved, copy)
    monkeypatch.chdir(copy)
    with pytest.raises(EvalError, match="weights.*changed"):
        run(copy / pipeline.name, copy / ds.name, copy / "run")


def test_a_folder_where_the_results_belong_is_a_clear_error(
        finished: tuple[Path, Path, Path]) -> None:
    """``results.jsonl`` a folder: the resume names it (nothing runs), ``--force`` sets it
    aside and starts over, and the report command names it."""
    pipeline, ds, out = finished
    (out / "results.jsonl").unlink()
    (out / "results.jsonl").mkdir()
    with pytest.raises(EvalError, match="results.jsonl is not a file"):
        run(pipeline, ds, out)
    assert kit.CALLS == []
    result = kit.invoke("report", str(out))
    assert result.exit_code == 1 and "results.jsonl: Is a directory" in result.output
    assert run(pipeline, ds, out, force=True).ran == 4
    assert [p.is_dir() for p in out.glob("results.jsonl.bak-*")] == [True]


def test_a_read_only_run_directory_is_read_and_says_what_it_cannot_do(
        finished: tuple[Path, Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a read-only mount (a container): compare reads the run as it is; report says it
    cannot write there (no traceback); replay says to give a writable --out."""
    import errno

    import aieng_eval.report

    pipeline, ds, out = finished
    other = tmp_path / "other"
    run(pipeline, ds, other)
    readonly = str(out)

    def refuse(path: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(aieng_eval.report, "replace_file", refuse)
    original_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if str(self).startswith(readonly):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        original_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    compared = kit.invoke("compare", str(other), str(out), "--samples", "20")
    assert compared.exit_code == 0, compared.output
    reported = kit.invoke("report", str(out))
    assert reported.exit_code == 1
    assert "Read-only file system" in reported.output and "cannot rebuild" in reported.output
    replayed = kit.invoke("replay", str(out))
    assert replayed.exit_code == 1
    assert "Read-only file system" in replayed.output and "writable --out" in replayed.output
