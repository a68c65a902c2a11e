"""The second day, continued: run folders replayed after a move, model files swapped in
place with their mtime kept, and a ``results.jsonl`` copied without its lockfile."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import pytest
from aieng_eval import EvalError, FileHasher, replay
from aieng_eval._lock import CACHE_MIN_BYTES


def write_dataset(folder: Path, n: int = 3, name: str = "ds.jsonl") -> Path:
    return kit.echo_dataset(folder, n, name)


def run(pipeline: Path, dataset: Path, out: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("bootstrap_samples", 20)
    return kit.run_sync(pipeline, dataset, out, **kwargs)


def replayed(run_dir: Path, out: Path, **kwargs: Any) -> Any:
    """replay on a fresh test kernel."""
    return anyio.run(lambda: replay(run_dir, out=out, kernel=kit.make_kernel(),
                                    hash_cache=out.parent / "hashes.json", **kwargs))


@pytest.fixture(autouse=True)
def _reset() -> None:
    kit.CALLS.clear()


def _project(folder: Path) -> tuple[Path, Path, Path]:
    """A project: its pipeline and dataset, and a run of them in ``runs/r1``."""
    folder.mkdir()
    pipeline, ds = kit.pipeline_file(folder), write_dataset(folder)
    run(pipeline, ds, folder / "runs" / "r1")
    kit.CALLS.clear()
    return pipeline, ds, folder / "runs" / "r1"


# -- replay of a run folder that moved ------------------------------------------------------


def test_replay_of_a_project_moved_elsewhere_finds_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lockfile's paths are absolute; a project moved (its run folder with it) replays
    from another working directory: the dataset and the pipeline file are found where
    they lie relative to the run folder, as recorded, and accepted since their hashes
    are the lockfile's (the pipeline file itself, not its locked configuration)."""
    _project(tmp_path / "old place")
    moved = tmp_path / "new plàce"
    shutil.move(tmp_path / "old place", moved)
    monkeypatch.chdir(tmp_path)
    report = replayed(moved / "runs" / "r1", tmp_path / "again")
    assert report.matches and report.compared == 3, report
    assert not [line for line in report.drift if "gone" in line], report.drift
    lock = json.loads((tmp_path / "again" / "lock.json").read_text(encoding="utf-8"))
    assert lock["dataset"]["path"] == str(moved / "ds.jsonl")
    assert lock["pipeline"]["path"] == str(moved / "p.toml")


def test_replay_of_a_run_folder_copied_alone_finds_the_dataset_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder copied to another machine, the dataset beside the user (the working
    directory): found by its recorded name, and used since its hash matches."""
    _, ds, out = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(out, elsewhere / "r1")
    shutil.copy(ds, elsewhere / ds.name)
    shutil.rmtree(tmp_path / "project")
    monkeypatch.chdir(elsewhere)
    report = replayed(elsewhere / "r1", tmp_path / "again")
    assert report.matches and report.compared == 3


def test_a_file_of_the_recorded_name_with_other_content_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset of the same name but other content is never replayed in its place: the
    error names the recorded path, each place looked at (and why it was not used) and
    ``--dataset``; exit 1, no traceback, nothing ran."""
    _, ds, _ = _project(tmp_path / "project")
    recorded = str(ds)
    shutil.move(tmp_path / "project", tmp_path / "moved")
    write_dataset(tmp_path / "moved", n=2)  # the same name, other items
    monkeypatch.chdir(tmp_path)
    result = kit.invoke("replay", str(tmp_path / "moved" / "runs" / "r1"), "-q",
                        "--out", str(tmp_path / "again"))
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert recorded in message and "--dataset" in message
    assert str(tmp_path / "moved" / "ds.jsonl") in message and "other content" in message
    assert str(tmp_path / "ds.jsonl") in message  # the working directory was looked at
    assert not isinstance(result.exception, (KeyError, TypeError, ValueError, OSError))
    assert kit.CALLS == []


def test_replay_takes_the_dataset_it_is_given(tmp_path: Path) -> None:
    """``--dataset FILE`` names the dataset when it is nowhere to be found (renamed)."""
    _, ds, out = _project(tmp_path / "project")
    renamed = ds.rename(tmp_path / "renamed.jsonl")
    result = kit.invoke("replay", str(out), "-q", "--out", str(tmp_path / "again"),
                        "--dataset", str(renamed), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["matches"] and report["compared"] == 3
    lock = json.loads((tmp_path / "again" / "lock.json").read_text(encoding="utf-8"))
    assert lock["dataset"]["path"] == str(renamed)


def test_a_lockfile_of_an_earlier_version_looks_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lockfiles written before the layout relative to the run folder was recorded:
    the working directory is still looked in."""
    _, _, out = _project(tmp_path / "project")
    path = out / "lock.json"
    lock = json.loads(path.read_text(encoding="utf-8"))
    for key in ("pipeline", "dataset"):
        lock[key].pop("from_run_dir", None)
    path.write_text(json.dumps(lock), encoding="utf-8")
    shutil.move(tmp_path / "project", tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")
    report = replayed(tmp_path / "moved" / "runs" / "r1", tmp_path / "again")
    assert report.matches and report.compared == 3


# -- the file-hash cache and a file swapped with its mtime kept ------------------------------


def _swap_keeping_mtime(path: Path, content: bytes, *, in_place: bool) -> None:
    """Put other bytes of the same size at ``path`` and set its times back, as ``cp -p``
    (in place: the same inode) or ``rsync -t`` (a new file renamed over it) do."""
    before = path.stat()
    times = (before.st_atime_ns, before.st_mtime_ns)
    if in_place:
        path.write_bytes(content)
        os.utime(path, ns=times)
        while path.stat().st_ctime_ns == before.st_ctime_ns:  # one clock tick, at most
            time.sleep(0.005)
            os.utime(path, ns=times)
    else:
        fresh = path.with_name(path.name + ".tmp")
        fresh.write_bytes(content)
        os.utime(fresh, ns=times)
        os.replace(fresh, path)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("in_place", [True, False], ids=["cp -p", "rsync -t"])
def test_a_same_size_file_swapped_with_its_mtime_kept_is_hashed_again(
        tmp_path: Path, in_place: bool) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(b"a" * CACHE_MIN_BYTES)
    cache = tmp_path / "hashes.json"
    first = FileHasher(cache)
    old = first.file(big)
    first.save()
    _swap_keeping_mtime(big, b"b" * CACHE_MIN_BYTES, in_place=in_place)
    second = FileHasher(cache)
    assert second.file(big) != old and second.reads == 1
    second.save()
    third = FileHasher(cache)  # and the new hash is cached as the file's only entry
    assert third.file(big) == second.file(big) and third.reads == 0
    assert len(json.loads(cache.read_text(encoding="utf-8"))) == 1


def test_a_cache_entry_of_an_earlier_version_is_a_miss_not_an_error(tmp_path: Path) -> None:
    """Entries keyed by (path, size, mtime), as earlier versions wrote them, are not
    trusted (they cannot tell a swapped file): the file is hashed once more and the old
    entry dropped; a value that is no hash is never returned as one."""
    big = tmp_path / "weights.bin"
    big.write_bytes(b"a" * CACHE_MIN_BYTES)
    stat = big.stat()
    cache = tmp_path / "hashes.json"
    other = tmp_path / "other.bin"
    other.write_bytes(b"12345")
    cache.write_text(json.dumps({
        f"{big.resolve()}|{stat.st_size}|{stat.st_mtime_ns}": "0" * 64,
        # another file's entry is kept (an earlier version's entry of a file, or one of a
        # file that is gone, is not: each would be a miss for ever)
        f"{other.resolve()}|5|7|1|2": "1" * 64,
        str(tmp_path / "gone.bin|5|7|1|2"): "2" * 64}), encoding="utf-8")
    hasher = FileHasher(cache)
    digest = hasher.file(big)
    assert digest != "0" * 64 and hasher.reads == 1
    hasher.save()
    kept = json.loads(cache.read_text(encoding="utf-8"))
    assert "0" * 64 not in kept.values() and "1" * 64 in kept.values()
    assert "2" * 64 not in kept.values()
    key = next(k for k, v in kept.items() if v == digest)
    cache.write_text(json.dumps({key: {"sha256": digest}}), encoding="utf-8")  # a newer form
    assert FileHasher(cache).file(big) == digest


def test_a_resume_after_a_model_swapped_with_its_mtime_kept_is_refused(
        tmp_path: Path) -> None:
    """The user's symptom: retrained weights of the same size copied over with ``cp -p``
    were reported unchanged, and the resume mixed results of both models."""
    big = tmp_path / "weights.bin"
    big.write_bytes(b"a" * CACHE_MIN_BYTES)
    pipeline, ds = kit.pipeline_file(tmp_path, weights=str(big)), write_dataset(tmp_path)
    run(pipeline, ds, tmp_path / "run", limit=1)
    _swap_keeping_mtime(big, b"b" * CACHE_MIN_BYTES, in_place=True)
    with pytest.raises(EvalError, match="weights.bin.*changed"):
        run(pipeline, ds, tmp_path / "run")


# -- results.jsonl without its lockfile -----------------------------------------------------


def test_compare_reads_results_copied_without_their_lockfile_and_says_so(
        tmp_path: Path) -> None:
    """A results file copied alone is compared (read as this version's layout, every
    record of it counted), with a warning naming the folder and what is missing."""
    pipeline, ds = kit.pipeline_file(tmp_path), write_dataset(tmp_path)
    run(pipeline, ds, tmp_path / "a")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "a" / "results.jsonl", alone / "results.jsonl")
    result = kit.invoke("compare", str(tmp_path / "a"), str(alone), "--samples", "20",
                        "--json")
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout[result.stdout.index("{"):])
    assert comparison["pairs"][0]["common_items"] == 3
    warning = " ".join(result.stderr.split())
    assert f"{alone}: no lock.json" in warning and "layout 1" in warning, result.stderr
    assert comparison["warnings"] and "no lock.json" in comparison["warnings"][0]


def test_report_refuses_results_without_their_lockfile_saying_what_to_do(
        tmp_path: Path) -> None:
    pipeline, ds = kit.pipeline_file(tmp_path), write_dataset(tmp_path)
    run(pipeline, ds, tmp_path / "a")
    (tmp_path / "a" / "lock.json").unlink()
    result = kit.invoke("report", str(tmp_path / "a"))
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "results.jsonl" in message and "no lock.json" in message
    assert "copy its lock.json" in message and "aieng eval compare" in message
