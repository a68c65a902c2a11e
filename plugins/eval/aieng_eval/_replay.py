"""Replaying a run from its lockfile, and telling whether outputs and scores match."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import structlog

from ._agent import options_from_lock
from ._dataset import file_sha256s
from ._lock import lock_drift, sha256_file
from ._results import ItemResult, read_results
from ._runner import EvalError, PipelineSource, ProgressCallback, run_eval
from ._runner import _read_lock as read_lock
from ._secrets import REDACTED, redacted_options
from .report import locked_max_slices, locked_samples

if TYPE_CHECKING:
    from aieng_core import Kernel

__all__ = ["ReplayReport", "diff_results", "replay"]

log = structlog.get_logger(__name__)


@attrs.frozen
class ReplayReport:
    """How a replay compares with the run it replays.

    :param run_dir: the replayed run.
    :param new_dir: the replay's run directory.
    :param drift: versions and hashes that differ now from the lockfile.
    :param compared: items finished in both runs.
    :param output_diffs: ids whose output differs.
    :param score_diffs: ``(id, metric, old, new)`` for each score that differs.
    :param missing: ids finished in one run only.
    """

    run_dir: Path
    new_dir: Path
    drift: tuple[str, ...]
    compared: int
    output_diffs: tuple[str, ...]
    score_diffs: tuple[tuple[str, str, float | None, float | None], ...]
    missing: tuple[str, ...]

    @property
    def matches(self) -> bool:
        """Whether every output and score was reproduced."""
        return not (self.output_diffs or self.score_diffs or self.missing)


def _read_lock(run_dir: Path) -> dict[str, Any]:
    data = read_lock(run_dir)
    if data is None:
        raise EvalError(f"{run_dir}: no lock.json (not an eval run directory?)")
    if not isinstance(data.get("pipeline"), dict):
        raise EvalError(f"{run_dir / 'lock.json'}: not a valid lockfile (no pipeline entry)")
    return data


def _places(entry: dict[str, Any], run_dir: Path) -> list[Path]:
    """Where a locked file may lie now: its recorded path; where it lay relative to the
    run folder (``from_run_dir``: the run folder moved or copied with its project); and,
    by its name, the working directory (the run folder copied alone)."""
    recorded = Path(str(entry.get("path")))
    places = [recorded]
    relative = entry.get("from_run_dir")
    if isinstance(relative, str) and relative:
        places.append(Path(os.path.normpath(run_dir.resolve() / relative)))
    places.append(Path.cwd() / recorded.name)
    return list(dict.fromkeys(places))


def _locate(entry: dict[str, Any], run_dir: Path, digests: Callable[[Path], set[str]]
            ) -> tuple[Path | None, list[str]]:
    """The first of :func:`_places` holding the locked file (a hash of ``digests`` is the
    entry's ``sha256``), and a note on each place looked at that did not hold it."""
    notes = []
    for place in _places(entry, run_dir):
        try:  # read a chunk at a time: a dataset of gigabytes is not held whole
            found = digests(place)
        except OSError as exc:  # none there, a folder, no permission
            notes.append(f"{place} ({exc.strerror or exc})")
            continue
        if entry.get("sha256") in found:
            if place != Path(str(entry.get("path"))):
                log.info("eval.replay.moved", recorded=entry.get("path"), found=str(place))
            return place, notes
        notes.append(f"{place} (other content)")
    return None, notes


def _file_digest(path: Path) -> set[str]:
    return {sha256_file(path)}


def _dataset_digests(path: Path) -> set[str]:
    """A dataset's hash as lockfiles hold it: of its text with LF endings and no
    byte-order mark, or (earlier versions) of its bytes."""
    return set(file_sha256s(path))


def _dataset(lock: dict[str, Any], run_dir: Path) -> Path:
    """The locked dataset: where :func:`_locate` finds it, else at its recorded path with
    other content (replayed: the drift names the hashes); gone, an error saying where it
    was looked for and how to give it."""
    entry = lock.get("dataset") or {}
    recorded = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(recorded, str) or not recorded:
        raise EvalError(f"{run_dir / 'lock.json'} names no dataset: give it with "
                        "--dataset FILE")
    found, notes = _locate(entry, run_dir, _dataset_digests)
    if found is not None:
        return found
    if Path(recorded).is_file():  # edited since the run: replayed, its hash reported
        return Path(recorded)
    raise EvalError(
        f"the locked dataset {recorded} is gone: cannot replay; looked for a file of "
        f"its content at {'; '.join(notes)}; give the dataset with --dataset FILE "
        "(a file of other content is replayed with its hash difference reported)")


def _pipeline_source(entry: dict[str, Any] | None, what: str, warnings: list[str],
                     run_dir: Path) -> PipelineSource | None:
    """The pipeline file when it still has the locked hash (where :func:`_locate` finds
    it), else the locked config."""
    if entry is None:
        return None
    path = entry.get("path")
    if path:
        found, _ = _locate(entry, run_dir, _file_digest)
        if found is not None:
            return found
        if Path(path).exists():
            warnings.append(f"{what} file {path} changed since the run: replaying the "
                            "locked configuration")
        else:
            warnings.append(f"{what} file {path} is gone: replaying the locked "
                            "configuration")
    config = entry.get("config")
    if not isinstance(config, dict):
        raise EvalError(f"the lockfile has no usable {what} (no file, no config)")
    left_out = redacted_options(config)
    if left_out:  # the lockfile keeps no credential: these run as "***"
        warnings.append(f"the locked {what} configuration keeps no credentials: "
                        f"{', '.join(left_out)} replay as {REDACTED!r} (restore the "
                        "pipeline file, or take them from the environment: api_key_env)")
    return _restore_floats(config)  # type: ignore[no-any-return]


def _restore_floats(value: Any) -> Any:
    """Undo :func:`jsonable`: the strings ``inf`` / ``-inf`` / ``nan`` become floats."""
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _restore_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_floats(v) for v in value]
    return value


def _fresh_replay_dir(run_dir: Path) -> Path:
    """``run_dir/replay-<UTC time>Z``, one no replay made yet: the wall clock may show a
    time it showed before (set back by NTP, a VM restored), and a replay into an earlier
    one's directory would resume it instead of running again."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out = run_dir / f"replay-{stamp}"
    count = 2
    while out.exists():
        out = run_dir / f"replay-{stamp}-{count}"
        count += 1
    return out


def _locked_timeout(lock: dict[str, Any]) -> float | None:
    """The lockfile's ``item_timeout_s`` (``None``: none, or a lockfile of an earlier
    version, or a value this version would refuse)."""
    value = lock.get("item_timeout_s")
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and 0 < value < math.inf:
        return float(value)
    return None


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def diff_results(old: dict[str, ItemResult],
                 new: dict[str, ItemResult]) -> tuple[int, list[str], list[Any], list[str]]:
    """``(compared, output_diffs, score_diffs, missing)`` of two runs' finished items."""
    done_old = {k: v for k, v in old.items() if v.done}
    done_new = {k: v for k, v in new.items() if v.done}
    missing = sorted(set(done_old) ^ set(done_new))
    outputs: list[str] = []
    scores: list[tuple[str, str, float | None, float | None]] = []
    common = sorted(set(done_old) & set(done_new))
    for item in common:
        a, b = done_old[item], done_new[item]
        if a.output != b.output or a.status != b.status:
            outputs.append(item)
        for metric in sorted(set(a.scores) | set(b.scores)):
            x, y = a.scores.get(metric), b.scores.get(metric)
            if not _same(x, y):
                scores.append((item, metric, x, y))
    return len(common), outputs, scores, missing


async def replay(run_dir: str | Path, *, out: str | Path | None = None,
                 kernel: Kernel | None = None, progress: ProgressCallback | None = None,
                 hash_cache: Path | None = None,
                 dataset: str | Path | None = None) -> ReplayReport:
    """Run again what ``run_dir``'s lockfile records (pipeline, dataset, seed, limit,
    concurrency, ``item_timeout_s``, the agent's options in agent mode, the reports'
    slices per field and resamples) into a new run directory, and compare outputs and
    scores.

    Versions, hashes and files that differ now are logged as warnings and listed in the
    report's ``drift``.

    The dataset and pipeline files are used at their recorded paths, else where they lay
    relative to the run folder (a run folder moved or copied with its project), else by
    their names in the working directory, when their hashes are the lockfile's; a
    pipeline file found nowhere replays the locked configuration.

    :param out: the new run directory (default: ``RUN_DIR/replay-<UTC time>Z``, with
        ``-2``, ``-3``... when a replay already took that name).
    :param dataset: the dataset to replay over (default: the locked one, found as above);
        one of other content is replayed, its hash difference in ``drift``.
    :raises EvalError: when the lockfile is missing, or its dataset is found nowhere (and
        ``dataset`` is not given): the message names the places looked at.
    """
    run_dir = Path(run_dir)
    lock = await anyio.to_thread.run_sync(_read_lock, run_dir)
    warnings: list[str] = []
    dataset = Path(dataset) if dataset is not None else await anyio.to_thread.run_sync(
        _dataset, lock, run_dir)
    pipeline = await anyio.to_thread.run_sync(_pipeline_source, lock["pipeline"], "pipeline",
                                              warnings, run_dir)
    assert pipeline is not None
    judge = await anyio.to_thread.run_sync(_pipeline_source, lock.get("judge_pipeline"),
                                           "judge pipeline", warnings, run_dir)
    agent, unknown = options_from_lock(lock.get("agent"))
    warnings += unknown
    if out is None:
        out = await anyio.to_thread.run_sync(_fresh_replay_dir, run_dir)
    new = await run_eval(pipeline, dataset, out=out, concurrency=int(lock.get("concurrency")
                                                                      or 8),
                         limit=lock.get("limit"), seed=lock.get("seed"), judge_pipeline=judge,
                         kernel=kernel, progress=progress, hash_cache=hash_cache, agent=agent,
                         max_slices=locked_max_slices(lock),
                         bootstrap_samples=locked_samples(lock),
                         item_timeout_s=_locked_timeout(lock))
    drift = warnings + lock_drift(lock, new.lock)
    for line in drift:
        log.warning("eval.replay.drift", detail=line)
    before = await anyio.to_thread.run_sync(read_results, run_dir / "results.jsonl")
    # Only the replayed items: records of items past the locked limit (left by an earlier
    # session without it) are no part of the run.
    replayed = {item.id for item in new.dataset.items}
    before = {key: record for key, record in before.items() if key in replayed}
    compared, outputs, scores, missing = diff_results(before, {r.id: r for r in new.results})
    return ReplayReport(run_dir=run_dir, new_dir=Path(out), drift=tuple(dict.fromkeys(drift)),
                        compared=compared, output_diffs=tuple(outputs),
                        score_diffs=tuple(scores), missing=tuple(missing))
