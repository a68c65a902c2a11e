"""The evaluation runner: a pipeline over a dataset, bounded, resumable and locked."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import attrs
import structlog
from aieng_hookspecs import replace_file
from aieng_hookspecs.types import Sample, Score

from ._agent import agent_changes, agent_lock, agent_problem
from ._dataset import Dataset, DatasetItem, load_dataset
from ._lock import (
    LOCK_FORMAT,
    FileHasher,
    add_layout,
    environment,
    format_problem,
    jsonable,
    same_input,
)
from ._lockfill import _add_files, _add_models, _components, _files_after
from ._results import ItemResult, ResultsFile, read_results, utf8_json
from ._resume import (
    _VERSIONS,
    _count_killed_session,
    _file_changes,
    _set_aside,
    _version_changes,
)
from ._secrets import redact_config

if TYPE_CHECKING:
    from aieng_core import Kernel, Pipeline, RunResult
    from aieng_core.agent import AgentOptions

__all__ = ["EvalError", "EvalRun", "ProgressCallback", "run_eval"]

log = structlog.get_logger(__name__)

#: Called with ``(0, total, None)`` when the items start, then after each finished item
#: with ``(finished, total, result)``; ``total`` counts the items this call runs.
ProgressCallback = Callable[[int, int, ItemResult | None], None]
PipelineSource = str | Path | Mapping[str, Any]


class EvalError(Exception):
    """An evaluation cannot start or continue (say, a run directory of another pipeline)."""


class LockFormatError(EvalError):
    """A run directory's ``lock.json`` is of a layout this aieng-eval cannot read (a later
    version wrote it): it is neither resumed nor read as this version's."""


class PipelineFileError(EvalError):
    """The pipeline file cannot be read (missing, a folder, no permission): bad input, as a
    malformed pipeline file is (``aieng eval`` exits 2)."""


class AgentPipelineError(EvalError):
    """The pipeline cannot run as an agent over a dataset (it runs the ``judge`` stage, or
    nothing decides the steps): bad input (``aieng eval`` exits 2)."""


@attrs.frozen
class EvalRun:
    """The outcome of :func:`run_eval`.

    :param run_dir: the run directory.
    :param results: every item's latest result, in dataset order (items of earlier sessions
        included).
    :param ran: items run by this call.
    :param skipped: items finished by an earlier session and not run again.
    :param lock: the lockfile's content.
    :param dataset: the dataset (cut to ``limit``).
    :param warnings: what the user should know about the resume (say, a file a component
        writes itself, such as a cache, that changed between sessions).
    :param rejudged: items of earlier sessions whose failed judges ran again on the stored
        answer (``retry_judge_failures``); counted in ``skipped`` too.
    """

    run_dir: Path
    results: tuple[ItemResult, ...]
    ran: int
    skipped: int
    lock: dict[str, Any]
    dataset: Dataset
    warnings: tuple[str, ...] = ()
    rejudged: int = 0

    @property
    def failed(self) -> tuple[ItemResult, ...]:
        """The items whose run raised."""
        return tuple(r for r in self.results if r.status == "error")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _source_info(source: PipelineSource) -> dict[str, Any]:
    if isinstance(source, Mapping):
        canonical = json.dumps(jsonable(source), sort_keys=True).encode("utf-8")
        return {"path": None, "sha256": hashlib.sha256(canonical).hexdigest()}
    path = Path(source)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise PipelineFileError(f"{path}: cannot read the pipeline file: {exc.strerror}") \
            from None
    return {"path": str(path.resolve()), "sha256": digest}


def _read_lock(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "lock.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EvalError(f"{path}: not a valid lockfile: {exc}") from None
    except OSError as exc:  # a folder where the file belongs, no permission
        raise EvalError(f"{path}: cannot read the lockfile ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path}: not a valid lockfile (not a JSON object)")
    if problem := format_problem(data):
        raise LockFormatError(f"{path}: cannot read this lockfile: {problem}")
    return data


def locked_records(records: Mapping[str, ItemResult], lock: Mapping[str, Any]
                   ) -> list[ItemResult]:
    """The records of the run's items, in dataset order: with the lockfile's ``limit``,
    those of its first ``limit`` items only (a resume with a smaller ``--limit`` leaves
    the earlier records of the items past it in ``results.jsonl``; the run's reports do
    not count them). Every item a finished session ran has a record, so the first
    ``limit`` records by line are those items'."""
    ordered = sorted(records.values(), key=lambda r: r.line)
    limit = lock.get("limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        return ordered[:limit]
    return ordered


#: The file a running evaluation holds locked (``flock``) in its run directory, so that a
#: second run (or a replay) on the same directory is refused instead of running every item
#: again and interleaving its records; the operating system releases it when the process
#: ends, however it ends (SIGKILL included).
RUN_LOCK = ".aieng-eval.lock"


def _lock_run_dir(run_dir: Path) -> IO[bytes]:
    """Make the run directory and take its lock (blocking: run in a worker thread).

    :returns: the open lock file; closing it releases the lock.
    :raises EvalError: when another run holds the directory, or it cannot be made or
        written (a read-only mount, a file in the way).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = (run_dir / RUN_LOCK).open("a+b")
    except OSError as exc:
        raise EvalError(f"cannot use {run_dir} as the run directory ({exc.strerror or exc}: "
                        f"{exc.filename}); give a writable --out") from None
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory lock; one run per directory is the user's job
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # EWOULDBLOCK: another process holds it
        handle.seek(0)
        holder = handle.read(32).decode("ascii", "replace").strip()
        handle.close()
        raise EvalError(
            f"{run_dir} is in use by another aieng eval (process {holder or '?'}); wait "
            "for it to finish, or use another --out") from None
    except OSError as exc:  # a file system without locks (ENOLCK): run, unguarded
        log.warning("eval.run_dir.unlocked", run_dir=str(run_dir), error=str(exc))
        return handle
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode("ascii"))
    handle.flush()
    return handle


def _check_resume(run_dir: Path, old: Mapping[str, Any], new: Mapping[str, Any],
                  force: bool) -> bool:
    """Whether the earlier results may be kept; raises unless ``force`` when the inputs
    changed (``force`` starts over, keeping the old results as a backup)."""
    changed = [key for key in ("pipeline", "judge_pipeline", "dataset")
               if not same_input(key, old, new)]
    if old.get("seed") != new.get("seed"):
        seeds = ["none" if seed is None else repr(seed) for seed in (old.get("seed"),
                                                                   new.get("seed"))]
        changed.append(f"seed ({' -> '.join(seeds)})")
    if agent := agent_changes(old.get("agent"), new.get("agent")):
        changed.append(agent)
    if not changed:
        return True
    if not force:
        raise EvalError(
            f"{run_dir} holds a run of a different {', '.join(changed)} "
            f"(recorded in {run_dir / 'lock.json'}); use another --out, or --force to start "
            "over (the old results are kept as a backup)")
    return False


def _prepare_run_dir(run_dir: Path, lock: Mapping[str, Any], force: bool
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Make the run folder and decide on resuming (blocking: run in a worker thread).

    :returns: the earlier sessions, the earlier lockfile's ``files`` and its versions
        (``aieng``, ``plugins``, ``python``) when the run resumes, else ``([], [], {})``
        (with ``force`` and changed inputs the old results are renamed to a backup first).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_dir / "results.jsonl"
    if not results_path.exists() or results_path.stat().st_size == 0:
        return [], [], {}
    if not results_path.is_file():  # a folder where the file belongs: nothing to read
        if not force:
            raise EvalError(f"{results_path} is not a file; move it away, use another --out, "
                            "or --force to set it aside and start over")
        _set_aside(results_path)
        return [], [], {}
    # Without a readable lockfile the results cannot be checked against the pipeline,
    # dataset and seed: they are never reused unchecked (--force sets them aside).
    try:
        previous = _read_lock(run_dir)
        problem = "" if previous is not None else f"no {run_dir / 'lock.json'}"
    except LockFormatError as exc:
        if not force:
            raise LockFormatError(f"{exc}; or use another --out, or --force to start over "
                                  "(the old results are kept as a backup)") from None
        previous, problem = None, str(exc)
    except EvalError as exc:
        previous, problem = None, str(exc)
    if previous is None:
        if not force:
            raise EvalError(
                f"{results_path} cannot be resumed: {problem}, so which pipeline, dataset "
                "and seed made it is unknown; use another --out, or --force to start over "
                "(the old results are kept as a backup)")
    elif _check_resume(run_dir, previous, lock, force):
        files = previous.get("files")
        return (_count_killed_session(list(previous.get("sessions", [])), results_path),
                [f for f in files if isinstance(f, dict)] if isinstance(files, list) else [],
                {key: previous[key] for key in _VERSIONS if key in previous})
    _set_aside(results_path)
    return [], [], {}


def _metric_names(scores: list[Score], into: dict[str, float], judges: dict[str, str],
                  owners: dict[str, str]) -> None:
    """Record ``scores`` by metric name. Two judges may share a metric name: the plain
    name belongs, for the whole run, to the judge that first gave it (``owners``: metric ->
    judge), and the others' scores are ``name@judge``, on every item, so an item where the
    owner gave no score does not put another judge's value under the owner's name."""
    for score in scores:
        owner = owners.setdefault(score.name, score.judge)
        name = score.name
        if owner != score.judge or name in into:
            name = f"{score.name}@{score.judge}"
        into[name] = score.value
        judges[name] = score.judge


def _owners(records: Any) -> dict[str, str]:
    """The judge owning each plain metric name in earlier records (``name@judge`` keys are
    another judge's)."""
    owners: dict[str, str] = {}
    for record in records:
        for name, judge in record.judges.items():
            if not name.endswith(f"@{judge}"):
                owners.setdefault(name, judge)
    return owners


def _judge_errors(result: RunResult) -> list[dict[str, str]]:
    """The judges of the pipeline's own judge stage that raised without failing the run
    (a ``fallback`` or ``skip`` policy): the ``error`` events of the run's trace."""
    return [{"judge": str(getattr(e, "plugin", "")), "metric": "",
             "error": str(getattr(e, "message", ""))}
            for e in result.events
            if e.name == "error" and getattr(e, "stage", "") == "judge"]


def _models(result: RunResult) -> tuple[str, ...]:
    completion_model = result.raw_completion.model if result.raw_completion else ""
    found = []
    for call in result.model_calls:
        model = call.parameters.get("model") or completion_model or "?"
        label = f"{call.component}/{model}"
        if label not in found:
            found.append(label)
    return tuple(found)


_BLANK = ItemResult(id="", status="")


def _failed(base: ItemResult, exc: Exception, started: float) -> ItemResult:
    """An item whose run raised: an ``error`` record (retried on resume), logged."""
    error = f"{type(exc).__name__}: {exc}"
    log.warning("eval.item.failed", id=base.id, error=error)
    return attrs.evolve(base, status="error", error=error,
                        duration_s=time.perf_counter() - started)


class _Session:
    """What running one item needs: the pipelines, the seed and the agent's options."""

    def __init__(self, pipeline: Pipeline, judge: Pipeline | None, seed: int | None,
                 owners: dict[str, str], agent: AgentOptions | None = None) -> None:
        self.pipeline = pipeline
        self.judge = judge
        self.seed = seed
        self.agent = agent
        #: metric name -> the judge its plain name belongs to (see :func:`_metric_names`)
        self.owners = owners

    async def item(self, item: DatasetItem) -> ItemResult:
        """Run one item through the pipeline (and the judge pipeline's judges)."""
        started = time.perf_counter()
        base = attrs.evolve(_BLANK, id=item.id, metadata=item.metadata, label=item.label,
                            line=item.line)
        if self.agent is not None:
            return await self.agent_item(item, base, started)
        from aieng_judge import collect_failures

        failures: list[dict[str, str]] = []
        try:
            with collect_failures() as gave_up:
                result = await self.pipeline.run(item.request(self.seed),
                                                 reference=item.reference,
                                                 context=item.context or None,
                                                 metadata=item.sample_metadata)
                failures += _judge_errors(result)
                scores: dict[str, float] = {}
                judges: dict[str, str] = {}
                _metric_names(list(result.scores), scores, judges, self.owners)
                if self.judge is not None and result.status == "ok":
                    hits = tuple(h.document.text for h in result.hits)
                    _metric_names(await self._judge(item, result.answer, hits, failures),
                                  scores, judges, self.owners)
            failures[:0] = [{"judge": f.judge, "metric": f.metric, "error": f.error}
                            for f in gave_up]
        except Exception as exc:  # noqa: BLE001  (any failure is recorded and retried)
            return _failed(base, exc, started)
        # What a retry of the failed judges needs to judge the answer on the same passages.
        seen = (tuple(h.document.text for h in result.hits)
                if failures and not item.context else None)
        return attrs.evolve(base, status=result.status, output=result.answer, scores=scores,
                            judges=judges, duration_s=time.perf_counter() - started,
                            models=_models(result), judge_failures=failures,
                            judge_context=seen,
                            judge_input=result.query.text if failures else None)

    async def bounded(self, item: DatasetItem, timeout: float | None) -> ItemResult:
        """:meth:`item` within ``timeout`` seconds (``item_timeout_s``; ``None``: no
        limit): an item still running then is cancelled and recorded as an ``error``
        naming the limit (retried on resume), and the run goes on."""
        if timeout is None:
            return await self.item(item)
        started = time.perf_counter()
        with anyio.move_on_after(timeout):
            return await self.item(item)
        base = attrs.evolve(_BLANK, id=item.id, metadata=item.metadata, label=item.label,
                            line=item.line)
        return _failed(base, TimeoutError(
            f"the item ran past item_timeout_s = {timeout:g} s (monotonic clock) and was "
            "cancelled; raise item_timeout_s (--item-timeout) if it needs longer"), started)

    async def rejudge(self, item: DatasetItem, record: ItemResult) -> ItemResult:
        """Run again, on the stored answer, the judges that failed on the item
        (``retry_judge_failures``): their scores on it are replaced, their failures by
        those of this try; the other judges' scores and the answer stay as stored."""
        started = time.perf_counter()
        failed = {f["judge"] for f in record.judge_failures}
        context = item.context or record.judge_context or ()
        request = item.request(self.seed)
        raw = request if isinstance(request, str) else request.prompt
        samples = [  # as the run made them: the judge stage's, then the judge pipeline's
            # (the judge stage saw the question after the input guards: redacted, maybe)
            Sample(input=raw if record.judge_input is None else record.judge_input,
                   output=record.output, reference=item.reference, context=context,
                   metadata=item.sample_metadata),
            Sample(input=item.prompt, output=record.output, reference=item.reference,
                   context=context, id=item.id, metadata=item.sample_metadata)]
        plan = [(built, sample, _retried(built, failed))
                for built, sample in zip((self.pipeline, self.judge), samples, strict=True)
                if built is not None]
        retried = set().union(*(names for _, _, names in plan))
        failures: list[dict[str, str]] = []
        found: list[Score] = []
        from aieng_judge import collect_failures

        try:
            with collect_failures() as gave_up:
                for built, sample, names in plan:
                    if names:
                        await built.open()  # AI judges generate through their pipeline
                        found += await _judge_each(built, list(names), sample, failures)
            failures[:0] = [{"judge": f.judge, "metric": f.metric, "error": f.error}
                            for f in gave_up]
        except Exception as exc:  # noqa: BLE001  (the answer stays; the judges failed)
            log.warning("eval.item.rejudge_failed", id=item.id,
                        error=f"{type(exc).__name__}: {exc}")
            found, failures = [], [{"judge": name, "metric": "",
                                    "error": f"{type(exc).__name__}: {exc}"}
                                   for name in sorted(failed & retried)]
        scores = {k: v for k, v in record.scores.items() if record.judges.get(k) not in retried}
        judges = {k: v for k, v in record.judges.items() if k in scores}
        _metric_names(found, scores, judges, self.owners)
        kept = [f for f in record.judge_failures if f["judge"] not in retried]
        return attrs.evolve(record, scores=scores, judges=judges,
                            judge_failures=kept + failures,
                            judge_context=(context if (kept or failures) and not item.context
                                           else None),
                            judge_input=record.judge_input if kept or failures else None,
                            duration_s=record.duration_s + time.perf_counter() - started)

    async def agent_item(self, item: DatasetItem, base: ItemResult,
                         started: float) -> ItemResult:
        """Run one item as an agent task (``run_eval(agent=...)``): the answer is judged
        once, by the pipeline's judges and the judge pipeline's. A run that raises is an
        ``error`` (retried on resume); a blocked one is ``blocked``; any other ending is
        ``ok``, its metrics saying how it went."""
        from aieng_judge import collect_failures

        from ._agent import agent_summary, policy_models, run_agent

        assert self.agent is not None
        failures: list[dict[str, str]] = []
        request = item.request(self.seed)
        try:
            with collect_failures() as gave_up:
                outcome, runs = await run_agent(self.pipeline, self.agent, request)
                status = "blocked" if outcome.status == "blocked" else "ok"
                metrics, summary = agent_summary(outcome)
                scores: dict[str, float] = {}
                judges: dict[str, str] = {}
                _metric_names(metrics, scores, judges, self.owners)
                if status == "ok":
                    raw = request if isinstance(request, str) else request.prompt
                    sample = Sample(input=raw, output=outcome.answer,
                                    reference=item.reference, context=item.context,
                                    metadata=item.sample_metadata)
                    _metric_names(await _stage_judges(self.pipeline, sample, failures),
                                  scores, judges, self.owners)
                    if self.judge is not None:
                        _metric_names(await self._judge(item, outcome.answer, (), failures),
                                      scores, judges, self.owners)
            failures[:0] = [{"judge": f.judge, "metric": f.metric, "error": f.error}
                            for f in gave_up]
        except Exception as exc:  # noqa: BLE001  (any failure is recorded and retried)
            return _failed(base, exc, started)
        models = [label for run in runs for label in _models(run)] + policy_models(outcome)
        # The judges saw the item's context only (no retrieved passages): a retry of the
        # failed ones judges the stored answer again on that, never runs the item whole.
        return attrs.evolve(base, status=status, output=outcome.answer, scores=scores,
                            judges=judges, duration_s=time.perf_counter() - started,
                            models=tuple(dict.fromkeys(models)), judge_failures=failures,
                            judge_context=() if failures and not item.context else None,
                            agent=summary)

    async def _judge(self, item: DatasetItem, answer: str, hits: tuple[str, ...],
                     failures: list[dict[str, str]]) -> list[Score]:
        """The judge pipeline's scores of the item's ``answer`` (on the item's context, else
        the passages the run retrieved, ``hits``); a judge failing under a ``fallback``
        policy is added to ``failures`` (other policies fail the item, as in a run)."""
        assert self.judge is not None
        sample = Sample(input=item.prompt, output=answer, reference=item.reference,
                        context=item.context or hits, id=item.id,
                        metadata=item.sample_metadata)
        policy = self.judge.config.policy("judge")
        dispatcher = self.judge.dispatcher
        if policy.on_error == "fallback":  # each judge on its own: which one failed is known
            names = [impl.plugin_name for impl in dispatcher.impls("aieng_judge")]
            return await _judge_each(self.judge, names, sample, failures)
        gathered = await dispatcher.gather("aieng_judge", {"sample": sample}, stage="judge",
                                           policy=policy)
        return _scores_of(gathered, self.judge)


async def _stage_judges(pipeline: Pipeline, sample: Sample,
                        failures: list[dict[str, str]]) -> list[Score]:
    """The scores of ``pipeline``'s judge components on ``sample``, called directly as its
    ``judge`` stage calls them, under the stage's policy: ``fallback`` leaves a failing
    judge out (in ``failures``), ``skip`` leaves every judge's scores out (the failure in
    ``failures``), ``fail`` raises."""
    from aieng_core import HookError

    policy = pipeline.config.policy("judge")
    names = [impl.plugin_name for impl in pipeline.dispatcher.impls("aieng_judge")]
    if not names:
        return []
    if policy.on_error == "fallback":
        return await _judge_each(pipeline, names, sample, failures)
    try:
        gathered = await pipeline.dispatcher.gather("aieng_judge", {"sample": sample},
                                                    stage="judge", policy=policy)
    except HookError as exc:
        if policy.on_error != "skip" or exc.final:
            raise
        failures.append({"judge": exc.plugin, "metric": "", "error": str(exc)})
        return []
    return _scores_of(gathered, pipeline)


def _retried(pipeline: Pipeline, failed: set[str]) -> set[str]:
    """The judges of ``pipeline`` a retry runs again: those named in ``failed`` (by
    component, or by the ``name`` an AI judge reports), all of them when its judge stage
    skips on an error (a failing judge then cost every judge of the stage its scores)."""
    impls = pipeline.dispatcher.impls("aieng_judge")
    names = {impl.plugin_name: {impl.plugin_name, getattr(impl.plugin, "name", None)}
             for impl in impls}
    hit = {plugin for plugin, known in names.items() if known & failed}
    if hit and pipeline.config.policy("judge").on_error == "skip":
        hit = set(names)
    return {n for plugin in hit for n in names[plugin] if isinstance(n, str)}


async def _judge_each(pipeline: Pipeline, names: list[str], sample: Sample,
                      failures: list[dict[str, str]]) -> list[Score]:
    """The scores of the named judges of ``pipeline``, each called on its own (under the
    pipeline's judge policy); a judge that fails is added to ``failures``."""
    from aieng_core import HookError

    policy = pipeline.config.policy("judge")
    dispatcher = pipeline.dispatcher
    plugins = [impl.plugin_name for impl in dispatcher.impls("aieng_judge", names)]
    found: dict[str, Any] = {}

    async def one(name: str) -> None:
        try:
            value = await dispatcher.first("aieng_judge", {"sample": sample}, stage="judge",
                                           policy=policy, only=[name])
        except HookError as exc:
            failures.append({"judge": name, "metric": "", "error": str(exc)})
            return
        if value is not None:
            found[name] = value[0]

    async with anyio.create_task_group() as tg:
        for name in plugins:
            tg.start_soon(one, name)
    return _scores_of([(found[name], name) for name in plugins if name in found], pipeline)


def _scores_of(gathered: list[tuple[Any, str]], pipeline: Pipeline) -> list[Score]:
    """The judges' values as scores, each attributed to its judge."""
    scores: list[Score] = []
    for value, plugin in gathered:
        for score in [value] if isinstance(value, Score) else list(value):
            if not isinstance(score, Score):
                raise TypeError(f"judge {plugin!r} of pipeline {pipeline.name!r} returned "
                                f"{type(score).__name__}, expected Score")
            scores.append(score if score.judge else attrs.evolve(score, judge=plugin))
    return scores


async def run_eval(
    pipeline: PipelineSource,
    dataset: str | Path,
    *,
    out: str | Path,
    concurrency: int = 8,
    limit: int | None = None,
    seed: int | None = None,
    force: bool = False,
    judge_pipeline: PipelineSource | None = None,
    kernel: Kernel | None = None,
    progress: ProgressCallback | None = None,
    hash_cache: Path | None = None,
    reports: bool = True,
    bootstrap_samples: int = 1000,
    retry_judge_failures: bool = False,
    agent: AgentOptions | None = None,
    max_slices: int = 50,
    item_timeout_s: float | None = None,
) -> EvalRun:
    """Run ``pipeline`` over ``dataset``, appending each item's result to
    ``out/results.jsonl`` as it finishes, and write the lockfile and the reports.

    A second call with the same ``out`` runs only the items without a finished result
    (failed ones are retried).

    :param pipeline: a pipeline file, or a pipeline config in its dict form.
    :param dataset: a JSON Lines dataset (see :func:`load_dataset`).
    :param out: the run directory (created when missing).
    :param concurrency: items in flight at once.
    :param limit: run only the first ``limit`` items.
    :param seed: the sampling seed put on every request (and the reports' bootstrap seed),
        ``>= 0``.
    :param force: start over when ``out`` holds a run of another pipeline, dataset or seed.
    :param judge_pipeline: a second pipeline whose judges also score each output.
    :param kernel: the kernel to load the pipelines on (a fresh one by default; started
        here when it is not running).
    :param progress: called after each finished item.
    :param hash_cache: the file-hash cache file (default: under ``~/.cache/aieng``).
    :param reports: write ``report.md``, ``report.html`` and ``summary.json``.
    :param bootstrap_samples: resamples for the reports' confidence intervals; recorded in
        the lockfile, for ``aieng eval report`` and :func:`replay`.
    :param max_slices: the reports' slices per ``metadata`` field (the largest by items;
        the reports say how many values were left out), ``>= 1``; recorded in the
        lockfile, for ``aieng eval report`` and :func:`replay`.
    :param retry_judge_failures: on a resume, also run again the judges that failed on
        items of earlier sessions (``judge_failures``), on the stored answers: their
        scores are replaced, the answers and the other judges' scores kept. An item of an
        older version whose judges saw retrieved passages (not stored then) runs again
        whole.
    :param agent: run each item as an agent task: ``Agent(pipeline, agent).run(input)``
        instead of ``pipeline.run(input)``; the item's output is the agent's answer, judged
        once by the pipeline's judge components (the pipeline must not list the ``judge``
        stage, which would judge every step) and the judge pipeline's; the agent metrics
        (``agent_answered``, ``agent_steps``, ``agent_tokens``, ``agent_tool_calls``,
        ``agent_tool_errors``) are scores of every item. The lockfile records the options:
        a resume with others is refused unless ``force``.
    :param item_timeout_s: seconds (monotonic) each item may take, judges included; an
        item still running then is cancelled and recorded as an ``error`` (``TimeoutError``
        naming the limit), retried on resume, and the run goes on. ``None`` (the default):
        no limit but the pipeline's own stage timeouts. Recorded in the lockfile (for
        :func:`replay`); a resume may change it.
    :raises ValueError: on an ``item_timeout_s`` that is not a positive, finite number.
    :raises EvalError: when ``out`` holds another run (without ``force``), a pipeline
        file cannot be read, or (``agent``) the pipeline cannot run as an agent.
    :raises DatasetError: naming the line of a malformed dataset.
    :raises ConfigError: for an invalid pipeline file.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if seed is not None and seed < 0:  # it seeds the reports' bootstraps: refused up front,
        raise ValueError(f"seed must not be negative, got {seed}")  # not once all items ran
    if max_slices < 1:
        raise ValueError(f"max_slices must be at least 1, got {max_slices}")
    if item_timeout_s is not None and (isinstance(item_timeout_s, bool)
                                       or not isinstance(item_timeout_s, int | float)
                                       or not 0 < item_timeout_s < float("inf")):
        raise ValueError("item_timeout_s (--item-timeout) must be a positive, finite number "
                         f"of seconds (or None: no limit), got {item_timeout_s!r}")
    run_dir = Path(out)
    data = await anyio.to_thread.run_sync(load_dataset, dataset)
    if limit is not None:
        data = attrs.evolve(data, items=data.items[:limit])
    # The pipeline files are read and hashed in a worker thread (never on the loop).
    pipeline_info, judge_info = await anyio.to_thread.run_sync(
        lambda: (_source_info(pipeline),
                 None if judge_pipeline is None else _source_info(judge_pipeline)))
    lock: dict[str, Any] = {
        "format": LOCK_FORMAT,
        "pipeline": pipeline_info,
        "judge_pipeline": judge_info,
        "dataset": {"path": str(Path(dataset).resolve()), "sha256": data.sha256,
                    "file_sha256": data.file_sha256, "items": len(data.items)},
        "seed": seed,
        "bootstrap_seed": 0 if seed is None else seed,
        "concurrency": concurrency,
        "limit": limit,
        "agent": agent_lock(agent),
        "max_slices": max_slices,
        "bootstrap_samples": bootstrap_samples,
        "item_timeout_s": item_timeout_s,
    }
    add_layout(lock, run_dir)
    held = await anyio.to_thread.run_sync(_lock_run_dir, run_dir)
    try:
        return await _locked_run(pipeline, data, run_dir, lock, force=force,
                                 concurrency=concurrency, seed=seed,
                                 judge_pipeline=judge_pipeline, kernel=kernel,
                                 progress=progress, hash_cache=hash_cache, reports=reports,
                                 bootstrap_samples=bootstrap_samples,
                                 retry_judge_failures=retry_judge_failures, agent=agent,
                                 max_slices=max_slices, item_timeout_s=item_timeout_s)
    finally:
        held.close()


async def _locked_run(pipeline: PipelineSource, data: Dataset, run_dir: Path,
                      lock: dict[str, Any], *, force: bool, concurrency: int,
                      seed: int | None, judge_pipeline: PipelineSource | None,
                      kernel: Kernel | None, progress: ProgressCallback | None,
                      hash_cache: Path | None, reports: bool,
                      bootstrap_samples: int, retry_judge_failures: bool,
                      agent: AgentOptions | None = None, max_slices: int = 50,
                      item_timeout_s: float | None = None) -> EvalRun:
    """:func:`run_eval`'s work once the run directory is locked."""
    results_path = run_dir / "results.jsonl"
    sessions, old_files, old_versions = await anyio.to_thread.run_sync(
        _prepare_run_dir, run_dir, lock, force)
    owned = kernel is None
    if kernel is None:
        from aieng_core import Kernel

        kernel = Kernel()
    started_at = _utc_now()
    state = _Resume(sessions=sessions, old_files=old_files, force=force,
                    retry_judges=retry_judge_failures, old_versions=old_versions, agent=agent,
                    item_timeout_s=item_timeout_s)
    if owned or kernel.thread_limiter is None:
        async with kernel:
            finished = await _run_items(kernel, pipeline, judge_pipeline, seed, data,
                                        results_path, concurrency, progress, lock, run_dir,
                                        state, started_at, hash_cache)
    else:
        finished = await _run_items(kernel, pipeline, judge_pipeline, seed, data,
                                    results_path, concurrency, progress, lock, run_dir,
                                    state, started_at, hash_cache)
    merged = {**state.earlier, **finished}
    ordered = tuple(merged[item.id] for item in data.items if item.id in merged)
    rejudged = sum(1 for key in finished if key in state.rejudge)
    run = EvalRun(run_dir=run_dir, results=ordered, ran=len(finished) - rejudged,
                  skipped=len(data.items) - len(state.todo), lock=lock, dataset=data,
                  warnings=tuple(state.warnings), rejudged=rejudged)
    if reports:
        from .report import write_reports

        await anyio.to_thread.run_sync(
            lambda: write_reports(run_dir, ordered, lock, samples=bootstrap_samples,
                                  max_slices=max_slices))
    return run


@attrs.define
class _Resume:
    """What the earlier sessions left, and what this session runs (set once the files the
    components name are hashed and compared)."""

    sessions: list[dict[str, Any]]
    old_files: list[dict[str, Any]]
    force: bool
    #: run again the judges that failed on earlier records (``retry_judge_failures``)
    retry_judges: bool = False
    #: the earlier lockfile's ``aieng``, ``plugins`` and ``python`` (empty: a fresh run)
    old_versions: dict[str, Any] = attrs.field(factory=dict)
    #: agent mode: the agent's options (``None``: each item is one pipeline run)
    agent: AgentOptions | None = None
    #: seconds each item may take (``None``: no limit)
    item_timeout_s: float | None = None
    #: every record of the earlier sessions (failed ones included)
    earlier: dict[str, ItemResult] = attrs.field(factory=dict)
    todo: list[DatasetItem] = attrs.field(factory=list)
    #: the items whose failed judges run again on the stored answer, with their record
    rejudge: dict[str, tuple[DatasetItem, ItemResult]] = attrs.field(factory=dict)
    warnings: list[str] = attrs.field(factory=list)


def _check_files(run_dir: Path, state: _Resume, files: list[dict[str, Any]]) -> None:
    """Compare the components' files with the earlier sessions' (blocking): refuse changed
    inputs unless forced (which sets the results aside), warn about other changes."""
    if not state.old_files:
        return
    inputs, others = _file_changes(state.old_files, files)
    if inputs and not state.force:
        raise EvalError(
            f"{run_dir} holds results made with other versions of files the pipeline's "
            f"components read: {'; '.join(inputs)}; use another --out, or --force to start "
            "over (the old results are kept as a backup)")
    if inputs:
        _set_aside(run_dir / "results.jsonl")
        state.sessions = []
        return
    for line in others:
        log.warning("eval.resume.file_changed", run_dir=str(run_dir), change=line)
        state.warnings.append(f"resuming {run_dir}: {line} since the earlier sessions; its "
                              "results may mix both versions (--force starts over)")


async def _run_items(kernel: Kernel, pipeline_source: PipelineSource,
                     judge_source: PipelineSource | None, seed: int | None, data: Dataset,
                     results_path: Path, concurrency: int,
                     progress: ProgressCallback | None, lock: dict[str, Any], run_dir: Path,
                     state: _Resume, started_at: str,
                     hash_cache: Path | None) -> dict[str, ItemResult]:
    pipeline = _build(kernel, pipeline_source)
    try:
        judge = None if judge_source is None else _build(kernel, judge_source)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await pipeline.aclose()
        raise
    hasher = FileHasher(hash_cache)
    try:
        if state.agent is not None and (problem := agent_problem(pipeline)):
            raise AgentPipelineError(problem)
        await anyio.to_thread.run_sync(_add_files, lock, [pipeline, judge], pipeline_source,
                                       judge_source, hasher, state.old_files)
        await anyio.to_thread.run_sync(_check_files, run_dir, state, lock["files"])
        if judge is not None:
            # Its judges are called directly (no run of it): opened here, as a run opens
            # the main pipeline, so AI judges get the pipeline context they generate with.
            await judge.open()
    except BaseException:
        with anyio.CancelScope(shield=True):
            for built in (pipeline, judge):
                if built is not None:
                    await built.aclose()
        raise
    sessions = state.sessions
    earlier = await anyio.to_thread.run_sync(read_results, results_path)
    state.earlier = earlier
    state.todo = todo = [item for item in data.items
                         if item.id not in earlier or not earlier[item.id].done]
    if state.retry_judges:
        _plan_rejudge(state, data, pipeline)
    jobs = [(item, None) for item in todo] + list(state.rejudge.values())
    owners = _owners(earlier.values())
    lock.update(environment(kernel.registry.plugins))
    if state.sessions:  # resuming (not set aside by --force): an upgrade in between warns
        for line in _version_changes(state.old_versions, lock):
            log.warning("eval.resume.version_changed", run_dir=str(run_dir), change=line)
            state.warnings.append(f"resuming {run_dir}: {line} since the earlier sessions; "
                                  "its results may mix both versions (--force starts over)")
    lock["pipeline"]["name"] = pipeline.name
    lock["pipeline"]["config"] = redact_config(jsonable(pipeline.to_dict()))
    lock["components"] = _components(kernel, [pipeline, judge])
    if judge is not None:
        lock["judge_pipeline"]["name"] = judge.name
        lock["judge_pipeline"]["config"] = redact_config(jsonable(judge.to_dict()))
    session: dict[str, Any] = {"started_at": started_at, "finished_at": None, "items": 0}
    if state.retry_judges:
        session["rejudged"] = 0
    lock["sessions"] = [*sessions, session]
    lock["started_at"] = sessions[0]["started_at"] if sessions else started_at
    lock["finished_at"] = None
    await anyio.to_thread.run_sync(_write_lock, run_dir, lock)
    finished: dict[str, ItemResult] = {}
    writer = ResultsFile(results_path)
    await anyio.to_thread.run_sync(writer.open)
    runner = _Session(pipeline, judge, seed, owners, state.agent)
    send, receive = anyio.create_memory_object_stream[ItemResult](max(concurrency * 4, 16))
    items = iter(jobs)
    total = len(jobs)
    unwritten: list[EvalError] = []

    async def worker() -> None:
        for item, record in items:  # one iterator shared by every worker
            await send.send(await (runner.bounded(item, state.item_timeout_s)
                                   if record is None else runner.rejudge(item, record)))

    async def work() -> None:  # `send` closes (the writer ends) once every worker is done
        async with send, anyio.create_task_group() as workers:
            for _ in range(min(concurrency, max(total, 1))):
                workers.start_soon(worker)

    async def write_all(scope: anyio.CancelScope) -> None:
        if progress is not None:
            progress(0, total, None)
        async for record in receive:
            batch = [record]
            while True:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            try:
                await anyio.to_thread.run_sync(writer.write, batch)
            except OSError as exc:  # a full disk: the records written so far are kept
                unwritten.append(EvalError(
                    f"{results_path}: cannot write the results ({exc.strerror or exc}); "
                    f"the {len(state.earlier) + len(finished)} records already in it are "
                    "kept: make room and rerun the same command to resume"))
                unwritten[0].__cause__ = exc
                scope.cancel()
                return
            for done in batch:
                finished[done.id] = done
                if progress is not None:
                    progress(len(finished), total, done)

    try:
        with send, receive:  # closed however the task group ends (a task never started)
            async with anyio.create_task_group() as tg:
                tg.start_soon(write_all, tg.cancel_scope)
                tg.start_soon(work)
        if unwritten:
            raise unwritten[0]
        try:
            await anyio.to_thread.run_sync(writer.close)
        except OSError as exc:  # the last flush or the fsync failed
            raise EvalError(f"{results_path}: cannot save the results ({exc.strerror or exc})"
                            "; rerun the same command to run the items it lacks") from exc
    finally:
        with anyio.CancelScope(shield=True):
            try:
                with contextlib.suppress(OSError):  # closed, whatever a full disk refused
                    await anyio.to_thread.run_sync(writer.close)
                rejudged = sum(1 for key in finished if key in state.rejudge)
                session["items"] = len(finished) - rejudged
                if state.retry_judges:
                    session["rejudged"] = rejudged
                session["finished_at"] = _utc_now()
                everything = await anyio.to_thread.run_sync(read_results, results_path)
                _add_models(lock, everything.values())
                await anyio.to_thread.run_sync(_write_lock, run_dir, lock)
            finally:  # a lockfile that cannot be written must not leave the pipelines open
                for built in (pipeline, judge):
                    if built is not None:
                        await built.aclose()
            # Hashed again once the components are closed: a file that changed while the
            # run ran is one the run writes (a cache), not an input (see _file_changes).
            await anyio.to_thread.run_sync(_files_after, lock, hasher)
            await anyio.to_thread.run_sync(_write_lock, run_dir, lock)
    lock["finished_at"] = session["finished_at"]
    await anyio.to_thread.run_sync(_write_lock, run_dir, lock)
    return finished


def _plan_rejudge(state: _Resume, data: Dataset, pipeline: Pipeline) -> None:
    """The earlier records whose judges failed, for ``retry_judge_failures``: their judges
    run again on the stored answer; an item of an older version whose judges saw the
    pipeline's retrieved passages (which records did not keep then) runs again whole."""
    for item in data.items:
        record = state.earlier.get(item.id)
        if record is None or record.status != "ok" or not record.judge_failures:
            continue
        if (record.judge_context is None and not item.context
                and "retrieve" in pipeline.stages):
            state.todo.append(item)
        else:
            state.rejudge[item.id] = (item, record)


def _build(kernel: Kernel, source: PipelineSource) -> Pipeline:
    if isinstance(source, Mapping):
        return kernel.pipeline(source)
    return kernel.load_pipeline(source)


def _write_lock(run_dir: Path, lock: Mapping[str, Any]) -> None:
    replace_file(run_dir / "lock.json", utf8_json(lock, indent=2) + "\n")
