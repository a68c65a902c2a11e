"""aieng-eval: ``aieng eval``, the evaluation runner.

Runs a pipeline over a JSON Lines dataset with bounded concurrency, appends each item's
result to ``RUN_DIR/results.jsonl`` as it finishes (a rerun resumes), records what ran in
``RUN_DIR/lock.json`` (versions, hashes, models, seeds) so the run can be replayed, and
writes ``report.md`` and a self-contained ``report.html``. ``aieng eval compare`` tests the
difference between runs (paired bootstrap) and ranks them (Elo, Bradley–Terry)::

    import anyio
    from aieng_eval import run_eval

    run = anyio.run(lambda: run_eval("qa.toml", "qa.jsonl", out="runs/qa"))
    print(len(run.results), [r.id for r in run.failed])
"""

from __future__ import annotations

import click
from aieng_hookspecs import hookimpl

from ._compare import compare_runs, games_of, write_comparison
from ._dataset import DATASET_KEYS, Dataset, DatasetError, DatasetItem, load_dataset, parse_dataset
from ._lock import FileHasher, lock_drift
from ._replay import ReplayReport, replay
from ._results import ItemResult, read_results
from ._runner import EvalError, EvalRun, run_eval
from .report import summarize, write_reports
from .stats import MeanCI, PairedDiff, mean_ci, paired_bootstrap

__all__ = [
    "DATASET_KEYS",
    "Dataset",
    "DatasetError",
    "DatasetItem",
    "EvalError",
    "EvalRun",
    "FileHasher",
    "ItemResult",
    "MeanCI",
    "PairedDiff",
    "ReplayReport",
    "aieng_register_commands",
    "compare_runs",
    "games_of",
    "load_dataset",
    "lock_drift",
    "mean_ci",
    "paired_bootstrap",
    "parse_dataset",
    "read_results",
    "replay",
    "run_eval",
    "summarize",
    "write_comparison",
    "write_reports",
]


@hookimpl
def aieng_register_commands(cli: click.Group) -> None:
    """Add ``aieng eval`` (with ``run``, ``replay``, ``compare`` and ``report``)."""
    from ._cli import eval_group

    cli.add_command(eval_group, "eval")
