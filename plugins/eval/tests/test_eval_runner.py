"""The runner's Python API: bounded concurrency, resumption, failures, the lockfile."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import pytest
from aieng_eval import EvalError, FileHasher, read_results, run_eval
from hypothesis import given, settings
from hypothesis import strategies as st


class Crash(Exception):
    """Stands for the process dying mid-run."""


def write_dataset(folder: Path, n: int = 6, *, extra: str = "") -> Path:
    """n items ``w0 .. w{i}`` whose reference is the input (the echo backend matches)."""
    lines = []
    for i in range(n):
        text = " ".join(f"w{j}" for j in range(i + 1)) + extra
        lines.append(json.dumps({"id": f"q{i}", "input": text, "reference": text,
                                 "metadata": {"parity": "even" if i % 2 == 0 else "odd"}}))
    path = folder / "ds.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(pipeline: Path, dataset: Path, out: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    """run_eval on a fresh test kernel, from sync code."""
    kwargs.setdefault("hash_cache", out.parent / "hashes.json")
    return anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                      **kwargs))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _reset() -> None:
    """Each test starts with no recorded calls."""
    kit.CALLS.clear()
    kit.IN_FLIGHT.update(now=0, peak=0)
    kit.reset_hold()


def test_scores_outputs_and_order(tmp_path: Path) -> None:
    """Every item runs once; results come back in dataset order with the judges' scores."""
    ds = write_dataset(tmp_path)
    result = run(kit.pipeline_file(tmp_path, mode="first"), ds, tmp_path / "run")
    assert [r.id for r in result.results] == [f"q{i}" for i in range(6)]
    assert [r.scores["exact_match"] for r in result.results] == [1.0] + [0.0] * 5
    assert all(r.output == "w0" and r.models == ("llm/echo-1",) for r in result.results)
    assert result.ran == 6 and result.skipped == 0 and sorted(kit.CALLS) == sorted(kit.CALLS)
    assert len(kit.CALLS) == 6


def test_blocked_items_count_as_done(tmp_path: Path) -> None:
    """An item a guardrail blocks is recorded as blocked, without scores, and a rerun does
    not run it again."""
    ds = tmp_path / "ds.jsonl"
    ds.write_text('{"id": "a", "input": "fine", "reference": "fine"}\n'
                  '{"id": "b", "input": "forbidden words", "reference": "x"}\n')
    pipeline = tmp_path / "guarded.toml"
    pipeline.write_text('[pipeline]\nname = "g"\n[components.guard]\nuse = "block-word"\n'
                        '[components.llm]\nuse = "scripted-echo"\n'
                        '[components.em]\nuse = "exact-match"\n')
    result = run(pipeline, ds, tmp_path / "run")
    assert [(r.id, r.status, r.scores) for r in result.results] == [
        ("a", "ok", {"exact_match": 1.0}), ("b", "blocked", {})]
    assert not result.failed
    again = run(pipeline, ds, tmp_path / "run")
    assert again.ran == 0 and again.skipped == 2


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    """At most ``concurrency`` items are in flight, and that many are reached: the backend
    holds its calls until 3 are in flight at once (on an event, whatever the machine's
    speed); with concurrency 1, one at a time."""
    ds = write_dataset(tmp_path, 12)
    kit.HOLD.update(peak=3)
    run(kit.pipeline_file(tmp_path, delay=0.001), ds, tmp_path / "run", concurrency=3,
        reports=False)
    assert kit.IN_FLIGHT["peak"] == 3
    kit.reset_hold()
    kit.IN_FLIGHT.update(peak=0)
    run(kit.pipeline_file(tmp_path, delay=0.001), ds, tmp_path / "seq", concurrency=1,
        reports=False)
    assert kit.IN_FLIGHT["peak"] == 1


def test_a_crash_then_a_rerun_completes_only_the_missing_items(tmp_path: Path) -> None:
    """A run killed at its 4th item keeps what it recorded; the rerun runs only the rest."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    kit.KILL_ON.append("w3")
    try:
        with pytest.raises(BaseException) as caught:
            run(pipeline, ds, out, concurrency=1)
    finally:
        kit.KILL_ON.clear()
    assert caught.group_contains(kit.Killed) if isinstance(caught.value, BaseExceptionGroup) \
        else isinstance(caught.value, kit.Killed)
    recorded = read_results(out / "results.jsonl")
    assert 1 <= len(recorded) <= 3 and set(recorded) <= {"q0", "q1", "q2"}
    kit.CALLS.clear()
    second = run(pipeline, ds, out)
    assert second.ran == 6 - len(recorded) == len(kit.CALLS) and second.skipped == len(recorded)
    assert [r.id for r in second.results] == [f"q{i}" for i in range(6)]
    lock = json.loads((out / "lock.json").read_text())
    assert [s["items"] for s in lock["sessions"]] == [len(recorded), 6 - len(recorded)]
    assert lock["finished_at"] is not None


def test_a_killed_session_gets_its_item_count_on_resume(tmp_path: Path) -> None:
    """A process killed outright (SIGKILL) leaves its session in the lockfile as written at
    its start: no finish time, 0 items. The next session counts the records it left, so
    the sessions' item counts add up to the records of the results file."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=4, reports=False)
    lock_path = out / "lock.json"
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    # what the killed session's lockfile says: the state _run_items writes before any item
    lock["sessions"][-1].update(finished_at=None, items=0)
    lock["finished_at"] = None
    lock_path.write_text(json.dumps(lock), encoding="utf-8")
    path = out / "results.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "q4", "sta')  # a write cut short
    resumed = run(pipeline, ds, out, reports=False)
    assert resumed.ran == 2
    sessions = json.loads(lock_path.read_text(encoding="utf-8"))["sessions"]
    assert [s["items"] for s in sessions] == [4, 2]
    assert sessions[0]["finished_at"] is None  # it never finished
    assert sum(s["items"] for s in sessions) == len(path.read_text().splitlines())


def test_a_truncated_last_line_is_ignored_and_rerun(tmp_path: Path) -> None:
    """A partial last line (a write cut by a crash) is dropped; its item runs again and
    the file is whole JSON Lines afterwards."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=4, reports=False)
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + lines[3][:25])  # the 4th record half-written
    assert len(read_results(path)) == 3
    kit.CALLS.clear()
    again = run(pipeline, ds, out)
    assert again.ran == 3 and len(kit.CALLS) == 3
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(6)]


def test_failed_items_are_recorded_and_retried(tmp_path: Path) -> None:
    """An item whose backend raises is recorded with the error; a rerun (the cause gone)
    retries just that item."""
    ds = write_dataset(tmp_path)
    out = tmp_path / "run"
    first = run(kit.pipeline_file(tmp_path, fail_on="w4"), ds, out, force=True)
    assert [r.id for r in first.failed] == ["q4", "q5"]
    assert "RuntimeError: scripted failure" in first.failed[0].error
    kit.CALLS.clear()
    second = run(kit.pipeline_file(tmp_path, name="p"), ds, out, force=True)
    # the pipeline file changed (fail_on removed): --force starts over
    assert second.ran == 6 and not second.failed
    assert list(out.glob("results.jsonl.bak-*"))


def test_forced_restarts_in_one_second_keep_every_backup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two --force restarts within the same second (the backup's name has the time in
    seconds) keep both earlier result files: the second backup does not replace the
    first one."""
    from aieng_eval import _runner

    monkeypatch.setattr(_runner, "time", types.SimpleNamespace(
        time=lambda: 1_700_000_000.0, perf_counter=time.perf_counter))
    ds = write_dataset(tmp_path, 2)
    out = tmp_path / "run"
    outputs = []
    for mode in ("echo", "upper", "first"):
        run(kit.pipeline_file(tmp_path, mode=mode), ds, out, force=True, reports=False)
        outputs.append((out / "results.jsonl").read_bytes())
    backups = sorted(out.glob("results.jsonl.bak-*"))
    assert len(backups) == 2
    assert sorted(b.read_bytes() for b in backups) == sorted(outputs[:2])


def test_retry_keeps_the_pipeline(tmp_path: Path) -> None:
    """Failed items are retried on a plain rerun of the same pipeline and dataset."""
    ds = write_dataset(tmp_path)
    out = tmp_path / "run"
    pipeline = kit.pipeline_file(tmp_path, mode="calls", fail_on="w5")
    first = run(pipeline, ds, out, concurrency=1)
    assert [r.id for r in first.failed] == ["q5"]
    kit.CALLS.clear()
    second = run(pipeline, ds, out)
    assert second.ran == 1 and kit.CALLS == [" ".join(f"w{j}" for j in range(6))]
    assert [r.status for r in second.results].count("error") == 1  # still failing


def test_an_output_with_half_an_emoji_is_recorded_and_not_rerun(tmp_path: Path) -> None:
    """A model output holding a lone surrogate (a reply cut in the middle of a UTF-16 pair)
    does not stop the run: it is recorded, reads back exactly, and a rerun skips it."""
    ds = write_dataset(tmp_path, n=3)
    pipeline = kit.pipeline_file(tmp_path, mode="half")
    out = tmp_path / "run"
    first = run(pipeline, ds, out)
    assert first.ran == 3 and not first.failed
    recorded = read_results(out / "results.jsonl")
    assert recorded["q0"].output == "w0 \ud83d" and recorded["q0"].scores["words"] == 2.0
    kit.CALLS.clear()
    again = run(pipeline, ds, out)
    assert again.ran == 0 and again.skipped == 3 and kit.CALLS == []

def test_another_pipeline_or_dataset_is_refused(tmp_path: Path) -> None:
    """A run directory of another pipeline, dataset or seed is refused with the reason,
    unless forced."""
    ds = write_dataset(tmp_path)
    out = tmp_path / "run"
    run(kit.pipeline_file(tmp_path), ds, out, reports=False)
    with pytest.raises(EvalError, match="different pipeline.*--force"):
        run(kit.pipeline_file(tmp_path, mode="upper"), ds, out)
    with pytest.raises(EvalError, match="different dataset"):
        run(kit.pipeline_file(tmp_path), write_dataset(tmp_path, 5), out)
    # The seeds are named: a rerun that left out --seed (the README's did) says which.
    with pytest.raises(EvalError, match=r"different seed \(none -> 1\)"):
        run(kit.pipeline_file(tmp_path), write_dataset(tmp_path), out, seed=1)


def test_a_resume_after_line_endings_changed_goes_on(tmp_path: Path) -> None:
    """A dataset checked out again with CRLF line endings (git's autocrlf) holds the same
    items: the resume goes on; an edited item is still refused."""
    ds = write_dataset(tmp_path)
    lf = ds.read_bytes()
    ds.write_bytes(lf.replace(b"\n", b"\r\n"))
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=3, reports=False)
    ds.write_bytes(lf)
    resumed = run(pipeline, ds, out, reports=False)
    assert resumed.ran == 3 and resumed.skipped == 3
    ds.write_bytes(lf.replace(b"w0", b"v0"))
    with pytest.raises(EvalError, match="different dataset"):
        run(pipeline, ds, out, reports=False)


def test_a_run_directory_of_an_earlier_version_resumes(tmp_path: Path) -> None:
    """Lockfiles of earlier versions hold the hash of the dataset's bytes as they were: a
    run directory made from a CRLF file resumes over that same file, and its lockfile then
    holds the hash that ignores line endings."""
    ds = write_dataset(tmp_path)
    ds.write_bytes(ds.read_bytes().replace(b"\n", b"\r\n"))
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=3, reports=False)
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    raw = hashlib.sha256(ds.read_bytes()).hexdigest()
    assert lock["dataset"]["file_sha256"] == raw != lock["dataset"]["sha256"]
    lock["dataset"] = {"path": lock["dataset"]["path"], "sha256": raw, "items": 6}
    (out / "lock.json").write_text(json.dumps(lock), encoding="utf-8")
    resumed = run(pipeline, ds, out, reports=False)
    assert resumed.ran == 3 and resumed.lock["dataset"]["sha256"] != raw
    ds.write_bytes(ds.read_bytes().replace(b"\r\n", b"\n"))
    assert run(pipeline, ds, out, reports=False).ran == 0


def test_a_changed_model_file_is_refused_on_resume(tmp_path: Path) -> None:
    """Weights (or indexed documents) edited between sessions would mix results of two
    models in one run: the resume is refused naming the file, and --force starts over."""
    ds = write_dataset(tmp_path)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"v1")
    pipeline = kit.pipeline_file(tmp_path, weights=str(weights))
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=3, reports=False)
    same = run(pipeline, ds, out, limit=4, reports=False)  # unchanged: resumes
    assert same.ran == 1 and same.skipped == 3 and same.warnings == ()
    weights.write_bytes(b"v2")
    with pytest.raises(EvalError, match=r"weights\.bin.*option 'weights'.*changed.*--force"):
        run(pipeline, ds, out, reports=False)
    assert len(read_results(out / "results.jsonl")) == 4  # nothing ran, nothing lost
    forced = run(pipeline, ds, out, force=True, reports=False)
    assert forced.ran == 6 and forced.skipped == 0
    assert len(list(out.glob("results.jsonl.bak-*"))) == 1
    assert [s["items"] for s in forced.lock["sessions"]] == [6]


def test_a_file_the_run_writes_itself_only_warns_on_resume(tmp_path: Path) -> None:
    """A file the components write while running (a cache, a monitoring store) changes
    with every session: resuming is no mistake then, and a change made to it between
    sessions is a warning, not a refusal."""
    ds = write_dataset(tmp_path)
    journal = tmp_path / "journal.txt"
    journal.write_text("", encoding="utf-8")
    pipeline = kit.pipeline_file(tmp_path, journal=str(journal))
    out = tmp_path / "run"
    first = run(pipeline, ds, out, limit=2, reports=False)
    (entry,) = first.lock["files"]
    assert entry["written"] is True and entry["after"] != entry["sha256"]
    second = run(pipeline, ds, out, limit=4, reports=False)  # written by the run: resumes
    assert second.ran == 2 and second.warnings == ()
    with journal.open("a", encoding="utf-8") as handle:
        handle.write("another process\n")
    third = run(pipeline, ds, out, reports=False)
    assert third.ran == 2 and third.skipped == 4
    (warning,) = third.warnings
    assert "journal.txt" in warning and "changed" in warning


def test_a_resume_after_a_plugin_upgrade_warns(tmp_path: Path) -> None:
    """The lockfile keeps the latest session's versions only: a plugin upgraded between
    sessions (its metric may have changed) is a warning naming both versions, not a
    silent mix of both versions' results."""
    import sys

    import aieng_eval

    from aieng_core import Kernel

    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    first = run(pipeline, ds, out, limit=2, reports=False)
    assert first.warnings == ()
    upgraded = Kernel(entry_points=[], default_embedder=None, loop_block_threshold=None)
    upgraded.load()
    for module, name, dist, version in (
            (sys.modules["_evalkit"], "evalkit", "evalkit-test", "0.2.0"),
            (aieng_eval, "eval", "aieng-eval", "0.1.0")):
        upgraded.registry.register(module, name=name, distribution=dist, version=version)
    second = anyio.run(lambda: run_eval(pipeline, ds, out=out, kernel=upgraded,
                                        reports=False, hash_cache=tmp_path / "h.json"))
    assert second.ran == 4 and second.skipped == 2
    (warning,) = second.warnings  # the one plugin that changed
    assert "'evalkit'" in warning and "0.1.0" in warning and "0.2.0" in warning
    assert "--force" in warning


@pytest.mark.parametrize("lock", ["", '{"format'])
def test_results_without_a_readable_lockfile_are_not_reused_silently(
        tmp_path: Path, lock: str) -> None:
    """Results whose lockfile is gone (or unreadable) cannot be checked against the
    pipeline, dataset and seed: another pipeline's rerun is refused rather than mixing
    them in, and --force starts over, keeping them as a backup."""
    ds = write_dataset(tmp_path)
    out = tmp_path / "run"
    run(kit.pipeline_file(tmp_path), ds, out, reports=False)
    if lock:
        (out / "lock.json").write_text(lock, encoding="utf-8")
    else:
        (out / "lock.json").unlink()
    upper = kit.pipeline_file(tmp_path, mode="upper")
    with pytest.raises(EvalError, match="lock.json.*--force"):
        run(upper, ds, out, reports=False)
    kit.CALLS.clear()
    forced = run(upper, ds, out, force=True, reports=False)
    assert forced.ran == 6 and len(kit.CALLS) == 6
    assert {r.output for r in forced.results} == {r.output.upper() for r in forced.results}
    assert len(list(out.glob("results.jsonl.bak-*"))) == 1


def test_a_second_run_on_a_busy_run_directory_is_refused(tmp_path: Path) -> None:
    """Two runs on one run directory at once would each run every item and append it twice
    (and overwrite each other's lockfile): the second is refused while the first runs, the
    first finishes alone, and the directory is free again afterwards."""
    ds = write_dataset(tmp_path)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run"
    kit.HOLD.update(after=1)  # the first run cannot finish before the second is refused

    async def both() -> None:
        started = anyio.Event()

        def progress(done: int, total: int, result: object) -> None:
            started.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_eval(pipeline, ds, out=out, kernel=kit.make_kernel(),
                                           concurrency=2, progress=progress, reports=False,
                                           hash_cache=tmp_path / "h.json"))
            await started.wait()
            try:
                with pytest.raises(EvalError, match="in use by another"):
                    await run_eval(pipeline, ds, out=out, kernel=kit.make_kernel(),
                                   reports=False, hash_cache=tmp_path / "h.json")
            finally:
                kit.release()

    anyio.run(both)
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [f"q{i}" for i in range(6)]
    assert len(kit.CALLS) == 6
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    assert [s["items"] for s in lock["sessions"]] == [6]
    again = run(pipeline, ds, out)  # the lock went with the first run
    assert again.ran == 0 and again.skipped == 6


def test_lockfile_records_what_ran(tmp_path: Path) -> None:
    """The lockfile has versions of aieng and every plugin, the pipeline's hash and config,
    the components' distributions, the models called, hashes of files named by options,
    the dataset's hash, the seed, Python and the times."""
    ds = write_dataset(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "a.bin").write_bytes(b"abc")
    pipeline = kit.pipeline_file(tmp_path, weights="weights", mode="seed")
    result = run(pipeline, ds, tmp_path / "run", seed=11)
    lock = json.loads((tmp_path / "run" / "lock.json").read_text())
    assert lock == result.lock
    assert lock["aieng"] == "0.1.0" and lock["python"]["version"]
    plugins = {p["name"]: p for p in lock["plugins"]}
    assert plugins["evalkit"]["distribution"] == "evalkit-test"
    assert plugins["eval"]["version"] == "0.1.0" and plugins["builtin"]["status"] == "loaded"
    assert lock["pipeline"]["sha256"] == hashlib.sha256(pipeline.read_bytes()).hexdigest()
    assert lock["pipeline"]["config"]["components"]["llm"]["mode"] == "seed"
    assert {"pipeline": "p", "component": "llm", "use": "scripted-echo", "plugin": "evalkit",
            "distribution": "evalkit-test 0.1.0"} in lock["components"]
    assert lock["dataset"]["sha256"] == hashlib.sha256(ds.read_bytes()).hexdigest()
    assert lock["dataset"]["items"] == 6 and lock["seed"] == 11
    assert lock["models"] == [{"component": "llm", "model": "echo-1"}]
    (entry,) = lock["files"]
    inner = hashlib.sha256(b"abc").hexdigest()
    assert entry["path"] == str(weights.resolve()) and entry["kind"] == "dir"
    assert entry["sha256"] == hashlib.sha256(f"a.bin\0{inner}\n".encode()).hexdigest()
    assert entry["component"] == "p.llm" and entry["option"] == "weights"
    assert lock["started_at"] <= lock["finished_at"]
    assert {r.output for r in result.results} == {"seed 11"}  # the seed reached the model


def test_large_files_are_hashed_once(tmp_path: Path) -> None:
    """A large file's hash is cached by (path, size, mtime): a second hasher does not
    read it again; a changed file is read again."""
    big = tmp_path / "model.bin"
    big.write_bytes(b"x" * (1 << 20) + b"y")
    cache = tmp_path / "cache.json"
    first = FileHasher(cache)
    digest = first.file(big)
    first.save()
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest() and first.reads == 1
    second = FileHasher(cache)
    assert second.file(big) == digest and second.reads == 0
    big.write_bytes(b"z" * (1 << 20) + b"y")
    third = FileHasher(cache)
    assert third.file(big) != digest and third.reads == 1


def test_hash_cache_keeps_one_entry_per_file(tmp_path: Path) -> None:
    """Rewriting a large file replaces its cached hash instead of adding one more: the
    cache file does not grow with every version of a model."""
    big, other = tmp_path / "model.bin", tmp_path / "other.bin"
    other.write_bytes(b"o" * (1 << 20))
    cache = tmp_path / "cache.json"
    for filler in (b"a", b"b", b"c"):
        big.write_bytes(filler * (1 << 20))
        hasher = FileHasher(cache)
        hasher.file(big)
        hasher.file(other)
        hasher.save()
    entries = json.loads(cache.read_text(encoding="utf-8"))
    assert len(entries) == 2
    assert hashlib.sha256(big.read_bytes()).hexdigest() in entries.values()


def test_judge_pipeline_scores_with_dataset_context(tmp_path: Path) -> None:
    """Both the pipeline's own judges and a second pipeline's see the dataset's context; a
    metric name both pipelines produce is kept twice, told apart by judge."""
    ds = tmp_path / "ds.jsonl"
    ds.write_text('{"id": "a", "input": "x y", "reference": "x y", "context": ["c1 c2", "c3"]}\n')
    judge = tmp_path / "judges.toml"
    judge.write_text('[pipeline]\nname = "judges"\n[components.llm]\nuse = "scripted-echo"\n'
                     '[components.count]\nuse = "word-count"\n')
    result = run(kit.pipeline_file(tmp_path), ds, tmp_path / "run", judge_pipeline=judge)
    scores = result.results[0].scores
    assert scores["context_words"] == 3.0 and scores["context_words@count"] == 3.0
    assert scores["words@count"] == 2.0 and result.results[0].judges["words@count"] == "count"
    assert result.lock["judge_pipeline"]["name"] == "judges"


def test_a_shared_metric_name_stays_with_its_judge_on_every_item(tmp_path: Path) -> None:
    """Two judges giving the same metric: on an item where the first gives no score (an AI
    judge whose answer could not be read), the other judge's value is still recorded
    under ``name@judge``, never under the plain name, whose mean is the first judge's
    alone; a resumed session keeps the same names."""
    ds = write_dataset(tmp_path)
    pipeline = tmp_path / "main.toml"
    pipeline.write_text('[pipeline]\nname = "main"\n[components.llm]\nuse = "scripted-echo"\n'
                        '[components.first]\nuse = "fixed-score"\nvalue = 1.0\n'
                        'skip_on = "w3"\n')
    judge = tmp_path / "judges.toml"
    judge.write_text('[pipeline]\nname = "judges"\n[components.llm]\nuse = "scripted-echo"\n'
                     '[components.second]\nuse = "fixed-score"\nvalue = 0.0\n')
    out = tmp_path / "run"
    result = run(pipeline, ds, out, judge_pipeline=judge, limit=3)
    assert result.ran == 3
    result = run(pipeline, ds, out, judge_pipeline=judge)  # resumed: q3..q5
    assert result.ran == 3
    by_id = {r.id: r.scores for r in result.results}
    assert by_id["q0"] == {"quality": 1.0, "quality@second": 0.0}
    for item in ("q3", "q4", "q5"):  # "first" gave no score
        assert by_id[item] == {"quality@second": 0.0}, item
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["quality"]["mean"] == 1.0
    assert summary["metrics"]["quality"]["n"] == 3
    assert summary["metrics"]["quality"]["judge"] == "first"
    assert summary["metrics"]["quality@second"]["n"] == 6


def test_ai_judges_of_the_judge_pipeline_generate_through_it(tmp_path: Path) -> None:
    """An AI judge of --judge-pipeline asks its model through that pipeline, which must be
    opened first (its judges are called without a run of it): no JudgeUnavailable."""
    ds = write_dataset(tmp_path, 2, extra=" 7")
    judge = tmp_path / "j.toml"
    judge.write_text('[pipeline]\nname = "j"\n\n[components.llm]\nuse = "scripted-echo"\n'
                     '\n[components.rate]\nuse = "asking-number"\n', encoding="utf-8")
    result = run(kit.pipeline_file(tmp_path), ds, tmp_path / "run", judge_pipeline=judge)
    assert [r.error for r in result.failed] == []
    assert [r.scores["rated"] for r in result.results] == [7.0, 7.0]


def _echo_and_instructions(tmp_path: Path, name: str) -> Path:
    """A pipeline file: the scripted echo backend and the instructions judge."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[pipeline]\nname = "{name}"\n\n[components.llm]\nuse = "scripted-echo"'
                    '\n\n[components.ifeval]\nuse = "instructions"\n', encoding="utf-8")
    return path


def _run_with_instructions(tmp_path: Path, rows: list[dict[str, Any]], pipeline: Path,
                           **options: Any) -> Any:
    """``rows`` as a dataset, run through ``pipeline`` by a kernel with aieng-judge."""
    ds = tmp_path / "ds.jsonl"
    ds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    kernel = kit.make_kernel()
    import aieng_judge

    kernel.registry.register(aieng_judge, name="judge", distribution="aieng-judge",
                             version="0.1.0")
    return anyio.run(lambda: run_eval(pipeline, ds, out=tmp_path / "run", kernel=kernel,
                                      hash_cache=tmp_path / "h.json", **options))


def test_an_items_instructions_reach_the_instructions_judge(tmp_path: Path) -> None:
    """IFEval style: each dataset item brings its own checks in metadata.instructions; the
    instructions judge of --judge-pipeline reads them from Sample.metadata and scores the
    scripted backend's output (the echo of the input) against them."""
    rows = [{"id": "short", "input": "one two",
             "metadata": {"lang": "en", "instructions": [{"kind": "words", "at_most": 3}]}},
            {"id": "long", "input": "one two three four",
             "metadata": {"lang": "en", "instructions": [
                 {"kind": "words", "at_most": 3}, {"kind": "lowercase"}]}},
            {"id": "none", "input": "plain", "metadata": {"lang": "de"}}]
    result = _run_with_instructions(tmp_path, rows, kit.pipeline_file(tmp_path, judges=False),
                                    judge_pipeline=_echo_and_instructions(tmp_path, "j"))
    by_id = {r.id: r for r in result.results}
    assert [r.error for r in result.failed] == []
    assert by_id["short"].scores == {"instruction.words": 1.0}
    assert by_id["long"].scores == {"instruction.words": 0.0, "instruction.lowercase": 1.0,
                                    "instruction.all": 0.0}
    assert by_id["none"].scores == {}
    assert by_id["long"].metadata == {"lang": "en"}  # the checks are no slice
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["slices"]) == {"lang"}


def test_an_items_instructions_reach_the_pipelines_own_judge_stage(tmp_path: Path) -> None:
    """The same checks reach an instructions judge in the evaluated pipeline itself: its
    judge stage gets the item's metadata as Sample.metadata."""
    rows = [{"id": "short", "input": "one two",
             "metadata": {"instructions": [{"kind": "words", "at_most": 3}]}},
            {"id": "long", "input": "One two three four",
             "metadata": {"instructions": [{"kind": "lowercase"}]}}]
    result = _run_with_instructions(tmp_path, rows, _echo_and_instructions(tmp_path, "p"))
    by_id = {r.id: r for r in result.results}
    assert [r.error for r in result.failed] == []
    assert by_id["short"].scores == {"instruction.words": 1.0}
    assert by_id["long"].scores == {"instruction.lowercase": 0.0}


def test_judge_failures_are_recorded_per_item(tmp_path: Path) -> None:
    """An AI judge whose verdict cannot be read (after its retry), or a judge that raises
    under a fallback policy, gives no score: the item stays ok, and the record says which
    judge failed on it, in the pipeline's judge stage and in --judge-pipeline's."""
    rows = [{"id": "a", "input": "one 1"}, {"id": "b", "input": "two x"},
            {"id": "c", "input": "boom three 3"}]
    ds = tmp_path / "ds.jsonl"
    ds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        '[pipeline]\nname = "p"\n\n[stage.judge]\non_error = "fallback"\n\n'
        '[components.llm]\nuse = "scripted-echo"\n\n[components.rate]\n'
        'use = "asking-number"\n\n[components.fixed]\nuse = "fixed-score"\n'
        'raise_on = "boom"\n', encoding="utf-8")
    judge = tmp_path / "j.toml"
    judge.write_text(
        '[pipeline]\nname = "j"\non_error = "fallback"\n\n[components.llm]\n'
        'use = "scripted-echo"\n\n[components.rate2]\nuse = "asking-number"\n\n'
        '[components.fixed2]\nuse = "fixed-score"\nmetric = "q2"\nraise_on = "boom"\n',
        encoding="utf-8")
    result = run(pipeline, ds, tmp_path / "run", judge_pipeline=judge)
    by_id = {r.id: r for r in result.results}
    assert all(r.status == "ok" for r in result.results)
    assert by_id["a"].judge_failures == [] and by_id["a"].scores["rated"] == 1.0
    assert by_id["a"].scores["rated@rate2"] == 1.0
    assert {(f["judge"], f["metric"]) for f in by_id["b"].judge_failures} == {
        ("rate", "rated"), ("rate2", "rated")}
    assert "no number" in by_id["b"].judge_failures[0]["error"]
    assert "rated" not in by_id["b"].scores
    assert {f["judge"] for f in by_id["c"].judge_failures} == {"fixed", "fixed2"}
    assert all("judge broke" in f["error"] for f in by_id["c"].judge_failures)
    assert by_id["c"].scores["rated"] == 3.0
    again = read_results(tmp_path / "run" / "results.jsonl")
    assert again["b"].judge_failures == by_id["b"].judge_failures  # written and read back
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["judge_failures"]["rate"] == {
        "failures": 1, "items": 1, "item": "b",
        "error": by_id["b"].judge_failures[0]["error"]}
    assert summary["judge_failures"]["fixed"]["items"] == 1
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "## Judge failures" in report and "| rate | 1 | 1 | `b`: no number" in report


def test_records_of_older_versions_read_without_judge_failures(tmp_path: Path) -> None:
    """A results.jsonl written before judge failures were recorded reads back (none)."""
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "q", "status": "ok", "scores": {"m": 1}}) + "\n",
                    encoding="utf-8")
    assert read_results(path)["q"].judge_failures == []


def test_bad_arguments(tmp_path: Path) -> None:
    """Concurrency below 1, a missing pipeline file and a negative seed are refused with
    the reason."""
    ds = write_dataset(tmp_path)
    with pytest.raises(ValueError, match="concurrency"):
        run(kit.pipeline_file(tmp_path), ds, tmp_path / "r", concurrency=0)
    with pytest.raises(EvalError, match="cannot read the pipeline file"):
        run(tmp_path / "missing.toml", ds, tmp_path / "r")
    with pytest.raises(ValueError, match="seed must not be negative"):  # before any item
        run(kit.pipeline_file(tmp_path), ds, tmp_path / "s", seed=-1)
    assert kit.CALLS == [] and not (tmp_path / "s").exists()


def _outcome(results: object) -> dict[str, tuple[str, str, dict[str, float]]]:
    """What must not depend on interruptions: each item's status, output and scores."""
    return {r.id: (r.status, r.output, r.scores) for r in results}  # type: ignore[attr-defined]


_BASELINE: dict[str, object] = {}


@settings(max_examples=12, deadline=None)
@given(split=st.integers(0, 6), concurrency=st.integers(1, 4),
       crash=st.sampled_from(["cancel", "raise"]))
def test_resumed_run_equals_uninterrupted_run(split: int, concurrency: int,
                                              crash: str) -> None:
    """For any split point and concurrency, a run stopped after ``split`` items (cancelled
    or crashed) and then resumed has exactly the results of an uninterrupted run, and the
    resumed session runs only the items the first one did not record."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ds = write_dataset(folder)
        pipeline = kit.pipeline_file(folder, mode="upper")
        if "full" not in _BASELINE:
            _BASELINE["full"] = _outcome(run(pipeline, ds, folder / "full", reports=False)
                                         .results)
        out = folder / "split"

        async def interrupted() -> None:
            with anyio.CancelScope() as scope:
                def stop(done: int, total: int, result: object) -> None:
                    if done >= split:
                        if crash == "cancel":
                            scope.cancel()
                        else:
                            raise Crash
                await run_eval(pipeline, ds, out=out, kernel=kit.make_kernel(),
                               concurrency=concurrency, progress=stop, reports=False,
                               hash_cache=folder / "h.json")

        try:
            anyio.run(interrupted)
        except BaseException as exc:  # noqa: BLE001  (the simulated crash)
            assert crash == "raise", exc
        recorded = len(read_results(out / "results.jsonl"))
        assert recorded >= split  # everything reported finished was on disk
        kit.CALLS.clear()
        resumed = run(pipeline, ds, out, concurrency=concurrency, reports=False)
        assert len(kit.CALLS) == 6 - recorded == resumed.ran
        assert _outcome(resumed.results) == _BASELINE["full"]


@pytest.mark.anyio
async def test_runs_on_a_started_kernel(aieng_kernel, register_plugin,  # type: ignore[no-untyped-def]
                                        tmp_path: Path) -> None:
    """On a kernel the caller started (the kit's), the runner builds its pipelines there
    and closes them when done, leaving the kernel running."""
    ds = write_dataset(tmp_path, 3)
    with register_plugin(kit, "evalkit") as info:
        assert info.status == "loaded", info.error
        result = await run_eval(kit.pipeline_file(tmp_path), ds, out=tmp_path / "run",
                                kernel=aieng_kernel, reports=False,
                                hash_cache=tmp_path / "h.json")
    assert [r.scores["exact_match"] for r in result.results] == [1.0, 1.0, 1.0]
    assert aieng_kernel.thread_limiter is not None  # still running
    assert result.lock["plugins"][-1]["name"] == "evalkit"
