"""``aieng eval``: the command line of the runner (the presentation layer: it writes to the
terminal; everything else logs).

``aieng eval PIPELINE DATASET`` runs (``run`` is the default sub-command); ``replay``,
``compare`` and ``report`` work on run directories.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from aieng_core import Kernel

    from ._results import ItemResult

__all__ = ["eval_group"]


class _DefaultRun(click.Group):
    """A group whose default sub-command is ``run``: ``aieng eval P.toml D.jsonl`` is
    ``aieng eval run P.toml D.jsonl``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _kernel(ctx: click.Context) -> Kernel | None:
    """The kernel of the ``aieng`` invocation (``None``: the runner makes one)."""
    obj = ctx.find_root().obj
    kernel = obj.get("kernel") if isinstance(obj, dict) else None
    return kernel


@contextmanager
def _progress(quiet: bool, label: str, *, failures: bool = True
              ) -> Iterator[Callable[[int, int, ItemResult | None], None]]:
    """A rich progress bar on standard error (none when quiet or not a terminal); with
    ``failures``, a column counting the results whose status is ``error``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    disabled = quiet or not console.is_terminal
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               *([TextColumn("{task.fields[failed]} failed")] if failures else []),
               TimeRemainingColumn()]
    bar = Progress(*columns, console=console, disable=disabled, transient=False)
    task = bar.add_task(label, total=None, failed=0)
    failed = 0

    def update(done: int, total: int, result: ItemResult | None) -> None:
        nonlocal failed
        failed += result is not None and result.status == "error"
        bar.update(task, completed=done, total=total, failed=failed)

    with bar:
        yield update


class _BadInput(click.ClickException):
    """A malformed pipeline file or dataset: exit status 2."""

    exit_code = 2


def _fail(exc: BaseException) -> click.ClickException:
    """Our errors, the kernel's and bad datasets as clean exits (2 for bad input)."""
    if type(exc).__name__ in ("ConfigError", "DatasetError", "PipelineFileError",
                              "AgentPipelineError"):
        return _BadInput(str(exc))
    return click.ClickException(str(exc))


def _guard(run: Callable[[], Any]) -> Any:
    from aieng_core import AiengError

    from ._dataset import DatasetError
    from ._runner import EvalError

    try:
        return run()
    except (AiengError, DatasetError, EvalError, ValueError) as exc:
        raise _fail(exc) from None


def _strict(value: Any, indent: int = 2) -> str:
    """``--json``'s output: strict JSON (:func:`aieng_eval._results.strict_json`)."""
    from ._results import strict_json

    return strict_json(value, indent=indent)


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    from ._results import read_finite
    from .report import _fmt  # the reports' form: n/a when not finite, 1.235e+07 past 1e6

    summary = read_finite(summary)  # summary.json's null numbers: not finite
    counts = summary["counts"]
    lines = [(f"{counts['total']} items: {counts['ok']} ok, {counts['blocked']} blocked, "
             f"{counts['error']} failed")]
    width = max([len(n) for n in summary["metrics"]] + [6])
    for name, m in summary["metrics"].items():
        lines.append(f"  {name:<{width}}  mean {_fmt(m['mean'], 4)}  95% CI "
                     f"[{_fmt(m['low'], 4)}, {_fmt(m['high'], 4)}]  n={m['n']}")
    for judge, f in summary.get("judge_failures", {}).items():
        lines.append(f"  judge {judge} gave no score {f['failures']} time(s) on {f['items']} "
                     "item(s) (see report.md)")
    from .report import incomplete_note

    if note := incomplete_note(summary):
        lines.append(note)
    return lines


def _agent_options(on: bool, *, max_steps: int | None, max_tokens: int | None, plan: bool,
                   reflect: bool, replan: str | None = None) -> Any:
    """The ``AgentOptions`` of ``--agent`` and its options (``None`` without ``--agent``;
    an agent option without it is a usage error)."""
    given = [name for name, value in (("--max-steps", max_steps), ("--max-tokens", max_tokens),
                                      ("--plan", plan), ("--replan", replan),
                                      ("--reflect", reflect)) if value]
    if not on:
        if given:
            raise click.UsageError(f"{', '.join(given)} need(s) --agent")
        return None
    if replan is not None and not plan:
        raise click.UsageError("--replan revises the plan: give --plan too")
    from aieng_core.agent import AgentOptions

    chosen: dict[str, Any] = {"plan": plan, "reflect": reflect,
                              "replan": replan or "never"}
    if max_steps is not None:
        chosen["max_steps"] = max_steps
    if max_tokens is not None:
        chosen["max_tokens"] = max_tokens
    return AgentOptions(**chosen)


@click.group(cls=_DefaultRun, invoke_without_command=False)
def eval_group() -> None:
    """Evaluate a pipeline over a dataset (aieng eval PIPELINE DATASET.jsonl), replay a
    run from its lockfile, compare runs, or rebuild a run's reports."""


@eval_group.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dataset", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: eval-runs/PIPELINE__DATASET). A rerun with the "
                   "same directory skips finished items and retries failed ones.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Items in flight at once.")
@click.option("--limit", default=None, type=click.IntRange(min=0),
              help="Run only the first N items.")
@click.option("--item-timeout", "item_timeout", default=None, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds each item may take (judges included); an item still running "
                   "then is recorded as failed (retried on resume) and the run goes on. "
                   "Default: no limit but the pipeline's stage timeouts.")
@click.option("--seed", default=None, type=click.IntRange(min=0),
              help="Sampling seed on every request; also seeds the bootstrap intervals.")
@click.option("--judge-pipeline", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also score each output with this pipeline's judges.")
@click.option("--force", is_flag=True,
              help="Start over when RUN_DIR holds a run of another pipeline, dataset or seed "
                   "(its results are kept as results.jsonl.bak-TIME).")
@click.option("--samples", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Bootstrap resamples for the intervals.")
@click.option("--max-slices", default=50, show_default=True, type=click.IntRange(min=1),
              help="Slices shown per metadata field (the largest by items); a field with "
                   "more values says how many are left out.")
@click.option("--retry-judge-failures", is_flag=True,
              help="On a resume, also run again the judges that failed on finished items, "
                   "on their stored answers (the other scores are kept).")
@click.option("--agent", "as_agent", is_flag=True,
              help="Run each item's input as an agent task (aieng agent) and judge its "
                   "final answer once; the pipeline must not run the judge stage.")
@click.option("--max-steps", default=None, type=click.IntRange(min=1),
              help="With --agent: the most steps per item (default 10).")
@click.option("--max-tokens", default=None, type=click.IntRange(min=1),
              help="With --agent: the token budget per item.")
@click.option("--plan", is_flag=True, help="With --agent: ask for a plan before the first "
                                           "step.")
@click.option("--replan", type=click.Choice(["on_error", "every_step"]), default=None,
              help="With --agent --plan: revise the plan after a failed tool call "
                   "(on_error) or before every step (every_step).")
@click.option("--reflect", is_flag=True, help="With --agent: review each answer before "
                                              "accepting it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def run(ctx: click.Context, pipeline: Path, dataset: Path, out: Path | None, concurrency: int,
        limit: int | None, item_timeout: float | None, seed: int | None,
        judge_pipeline: Path | None, force: bool,
        samples: int, max_slices: int, retry_judge_failures: bool, as_agent: bool,
        max_steps: int | None, max_tokens: int | None, plan: bool, replan: str | None,
        reflect: bool, quiet: bool, as_json: bool) -> None:
    """Run PIPELINE over DATASET (JSON Lines: input, optional id, reference, context,
    metadata, slice, label) and write results, lockfile and reports to the run directory."""
    import anyio

    from ._runner import run_eval

    agent = _agent_options(as_agent, max_steps=max_steps, max_tokens=max_tokens, plan=plan,
                           reflect=reflect, replan=replan)

    run_dir = out if out is not None else Path("eval-runs") / f"{pipeline.stem}__{dataset.stem}"
    kernel = _kernel(ctx)

    def go() -> Any:
        with _progress(quiet, f"eval {pipeline.stem}") as progress:
            return anyio.run(lambda: run_eval(
                pipeline, dataset, out=run_dir, concurrency=concurrency, limit=limit,
                seed=seed, force=force, judge_pipeline=judge_pipeline, kernel=kernel,
                progress=progress, bootstrap_samples=samples, max_slices=max_slices,
                retry_judge_failures=retry_judge_failures, agent=agent,
                item_timeout_s=item_timeout))

    result = _guard(go)
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    if as_json:
        click.echo(_strict({"run_dir": str(run_dir), "ran": result.ran,
                                "skipped": result.skipped, "rejudged": result.rejudged,
                                "warnings": list(result.warnings), **summary}, indent=2))
    else:
        rejudged = (f" ({result.rejudged} judged again)" if retry_judge_failures else "")
        click.echo(f"ran {result.ran} items, {result.skipped} already done{rejudged}")
        for line in _summary_lines(summary):
            click.echo(line)
        click.echo(f"results: {run_dir}/results.jsonl · report: {run_dir}/report.md, "
                   f"{run_dir}/report.html · lock: {run_dir}/lock.json")
    if result.failed:
        click.echo(f"aieng eval: {len(result.failed)} item(s) failed (see report.md); rerun "
                   "the same command to retry them", err=True)
        ctx.exit(1)


@eval_group.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory of the replay (default: RUN_DIR/replay-TIME).")
@click.option("--dataset", "dataset", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The dataset to replay over (default: the locked one, at its recorded "
                   "path, where it lay relative to RUN_DIR, or in the working directory, "
                   "when its hash is the lockfile's).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
def replay(ctx: click.Context, run_dir: Path, out: Path | None, dataset: Path | None,
           quiet: bool, as_json: bool) -> None:
    """Rerun RUN_DIR from its lockfile; warn where versions or hashes differ now, and
    report whether outputs and scores match (exit 1 when they do not)."""
    import anyio

    from ._replay import replay as replay_run

    kernel = _kernel(ctx)

    def go() -> Any:
        with _progress(quiet, f"replay {run_dir.name}") as progress:
            return anyio.run(lambda: replay_run(run_dir, out=out, kernel=kernel,
                                                progress=progress, dataset=dataset))

    report = _guard(go)
    for line in report.drift:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(_strict({
            "run_dir": str(report.run_dir), "new_dir": str(report.new_dir),
            "matches": report.matches, "drift": list(report.drift),
            "compared": report.compared, "output_diffs": list(report.output_diffs),
            "score_diffs": [list(d) for d in report.score_diffs],
            "missing": list(report.missing)}, indent=2))
    else:
        verdict = "match" if report.matches else "DIFFER"
        click.echo(f"replay in {report.new_dir}: {report.compared} items compared; outputs "
                   f"and scores {verdict}")
        if report.output_diffs:
            click.echo(f"  outputs differ: {', '.join(report.output_diffs[:20])}")
        for item, metric, old, new in report.score_diffs[:20]:
            click.echo(f"  {item} {metric}: {old} -> {new}")
        if report.missing:
            click.echo(f"  finished in one run only: {', '.join(report.missing[:20])}")
    if not report.matches:
        ctx.exit(1)


@eval_group.command()
@click.argument("runs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write comparison.json, compare.md and report.html here.")
@click.option("--samples", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Bootstrap resamples.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap seed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(runs: tuple[Path, ...], out: Path | None, samples: int, seed: int, quiet: bool,
            as_json: bool) -> None:
    """Compare RUN_A RUN_B [RUN_C ...]: the paired bootstrap of each later run minus the
    first, per metric, on the items both finished; and an Elo / Bradley-Terry ranking."""
    from ._compare import compare_markdown, compare_runs, write_comparison

    def go() -> Any:
        # The ranking's resamples, the slow part (minutes for runs of 100k items).
        with _progress(quiet, "ranking resamples", failures=False) as update:
            return compare_runs(runs, samples=samples, seed=seed,
                                progress=lambda done, total: update(done, total, None))

    comparison = _guard(go)
    for line in comparison["warnings"]:
        click.echo(f"warning: {line}", err=True)
    if out is not None:
        write_comparison(comparison, out)
    if as_json:
        click.echo(_strict(comparison))
    else:
        click.echo(compare_markdown(comparison))


@eval_group.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--samples", default=None, type=click.IntRange(min=1),
              help="Bootstrap resamples for the intervals. [default: the run's, else 1000]")
@click.option("--max-slices", default=None, type=click.IntRange(min=1),
              help="Slices shown per metadata field (the largest by items); a field with "
                   "more values says how many are left out. [default: the run's, else 50]")
def report(run_dir: Path, samples: int | None, max_slices: int | None) -> None:
    """Rebuild RUN_DIR's summary.json, report.md and report.html from its results."""
    from ._results import read_results
    from ._runner import EvalError, _read_lock, locked_records
    from .report import write_reports

    lock = _guard(lambda: _read_lock(run_dir))
    if lock is None and (run_dir / "results.jsonl").exists():
        # results.jsonl has no layout mark of its own (its lockfile's format is): a file
        # copied alone is not rebuilt into a run's reports as if it were this layout's.
        raise _fail(EvalError(
            f"{run_dir}: results.jsonl but no lock.json (copied alone?): the lockfile "
            "holds the results' layout and the run's limit, seed and environment, which "
            "the reports need; copy its lock.json beside it, or read the results as they "
            "are with `aieng eval compare`"))
    if lock is None:
        raise _fail(EvalError(f"{run_dir}: no lock.json (not an eval run directory?)"))
    try:
        results = locked_records(read_results(run_dir / "results.jsonl"), lock)
        summary = write_reports(run_dir, results, lock, samples=samples,
                                max_slices=max_slices)
    except OSError as exc:  # a read-only mount, a folder where a file belongs
        raise _fail(EvalError(
            f"cannot rebuild the reports of {run_dir}: {exc.filename or run_dir}: "
            f"{exc.strerror or exc} (a read-only run directory: copy it somewhere writable; "
            "`aieng eval compare` reads it as it is)")) from None
    for line in _summary_lines(summary):
        click.echo(line)
    click.echo(f"wrote {run_dir}/report.md, {run_dir}/report.html")
