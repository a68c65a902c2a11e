"""Replaying a run from its lockfile, and telling whether outputs and scores match."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import structlog

from ._agent import options_from_lock
from ._lock import lock_drift
from ._results import ItemResult, read_results
from ._runner import EvalError, PipelineSource, ProgressCallback, run_eval
from ._runner import _read_lock as read_lock
from ._secrets import REDACTED, redacted_options

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


def _pipeline_source(entry: dict[str, Any] | None, what: str,
                     warnings: list[str]) -> PipelineSource | None:
    """The pipeline file when it still has the locked hash, else the locked config."""
    if entry is None:
        return None
    path = entry.get("path")
    if path and Path(path).exists():
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest == entry.get("sha256"):
            return Path(path)
        warnings.append(f"{what} file {path} changed since the run: replaying the locked "
                        "configuration")
    elif path:
        warnings.append(f"{what} file {path} is gone: replaying the locked configuration")
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
                 hash_cache: Path | None = None) -> ReplayReport:
    """Run again what ``run_dir``'s lockfile records (pipeline, dataset, seed, limit,
    concurrency, the agent's options in agent mode) into a new run directory, and compare
    outputs and scores.

    Versions, hashes and files that differ now are logged as warnings and listed in the
    report's ``drift``.

    :param out: the new run directory (default: ``RUN_DIR/replay-<UTC time>``).
    :raises EvalError: when the lockfile is missing or names a dataset that is gone.
    """
    run_dir = Path(run_dir)
    lock = await anyio.to_thread.run_sync(_read_lock, run_dir)
    warnings: list[str] = []
    pipeline = await anyio.to_thread.run_sync(_pipeline_source, lock["pipeline"], "pipeline",
                                              warnings)
    assert pipeline is not None
    judge = await anyio.to_thread.run_sync(_pipeline_source, lock.get("judge_pipeline"),
                                           "judge pipeline", warnings)
    agent, unknown = options_from_lock(lock.get("agent"))
    warnings += unknown
    dataset = Path(str((lock.get("dataset") or {}).get("path")))
    if not dataset.exists():
        raise EvalError(f"the locked dataset {dataset} is gone: cannot replay")
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        out = run_dir / f"replay-{stamp}"
    new = await run_eval(pipeline, dataset, out=out, concurrency=int(lock.get("concurrency")
                                                                      or 8),
                         limit=lock.get("limit"), seed=lock.get("seed"), judge_pipeline=judge,
                         kernel=kernel, progress=progress, hash_cache=hash_cache, agent=agent)
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
