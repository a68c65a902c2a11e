"""Comparing runs: paired bootstrap differences and Elo / Bradley–Terry rankings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aieng_hookspecs import replace_file

from ._lock import LOCK_FORMAT
from ._results import ItemResult, read_finite, read_results, strict_json
from ._runner import EvalError, LockFormatError, _read_lock, locked_records
from .report import NOT_FINITE_NOTE, _cell, _fmt, _not_finite, _text
from .stats import paired_bootstrap

__all__ = ["LOWER_IS_BETTER", "compare_markdown", "compare_runs", "games_of",
           "write_comparison"]


def _load(run_dir: Path, warnings: list[str]) -> dict[str, ItemResult]:
    """The run's finished items: those of its lockfile's ``limit`` when it has one, as
    its reports count them (a resume with a smaller ``--limit`` leaves records of the
    items past it in ``results.jsonl``).

    ``results.jsonl`` has no layout mark of its own: its lockfile's ``format`` is its
    layout. Without a readable lockfile (a results file copied alone), its records are
    read as this version's layout, every one counted, and a line in ``warnings`` says so.
    """
    path = run_dir / "results.jsonl"
    if not path.exists():
        raise EvalError(f"{run_dir}: no results.jsonl (not an eval run directory?)")
    records = read_results(path)
    try:
        lock = _read_lock(run_dir)
        problem = "" if lock is not None else f"{run_dir}: no lock.json beside results.jsonl"
    except LockFormatError:  # a later layout: its records are not read as this one's
        raise
    except EvalError as exc:  # an unreadable lockfile: every record, as before lockfiles
        lock, problem = None, str(exc)
    if lock is None:
        warnings.append(
            f"{problem}: its records are read as this aieng-eval's layout {LOCK_FORMAT}, "
            "every one counted (the run's --limit is unknown); keep lock.json with "
            "results.jsonl to have its layout checked")
    kept = locked_records(records, lock) if lock is not None else records.values()
    return {r.id: r for r in kept if r.status == "ok"}


def _names(run_dirs: Sequence[Path]) -> list[str]:
    # Compared by resolved path: "run" and "/abs/run" (or a link to it) are one run.
    if len({d.resolve() for d in run_dirs}) < len(run_dirs):
        raise EvalError("the same run directory is given twice")
    names = [d.resolve().name or str(d) for d in run_dirs]
    if len(set(names)) < len(names):  # two runs of the same folder name: use paths
        names = [str(d) for d in run_dirs]
    return names


#: Metrics where a lower value is the better one (``name`` or ``name@judge``): the
#: language-model metrics and the effort an agent spent on a task (agent mode).
LOWER_IS_BETTER = frozenset({"perplexity", "mean_nll", "bits_per_byte", "agent_steps",
                             "agent_tokens", "agent_tool_calls", "agent_tool_errors"})


def games_of(runs: dict[str, dict[str, ItemResult]],
             metric: str | None = None) -> list[tuple[str, str, float]]:
    """One game per item, metric and pair of systems that both scored it: the better
    score wins (1 / 0), equal scores tie (0.5). Better is higher, except for the metrics of
    :data:`LOWER_IS_BETTER` (perplexity, mean NLL, bits per byte, the agent's steps,
    tokens, tool calls and tool errors). Items are taken in sorted id order, metrics in
    sorted name order and, within them, pairs of systems in sorted name order (``a`` the
    smaller name), so the games (and Elo, which depends on their order) are reproducible
    and do not depend on the order the runs are given in."""
    names = sorted(runs)
    ids = sorted(set().union(*[set(r) for r in runs.values()]))
    games: list[tuple[str, str, float]] = []
    for item in ids:
        metrics = sorted({m for r in runs.values() if item in r for m in r[item].scores})
        for name in metrics if metric is None else [metric]:
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    ra, rb = runs[a].get(item), runs[b].get(item)
                    if ra is None or rb is None or name not in ra.scores \
                            or name not in rb.scores:
                        continue
                    sa, sb = ra.scores[name], rb.scores[name]
                    if name.partition("@")[0] in LOWER_IS_BETTER:
                        sa, sb = -sa, -sb
                    games.append((a, b, 1.0 if sa > sb else 0.0 if sa < sb else 0.5))
    return games


def _interval_json(intervals: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {name: {"estimate": float(i.estimate), "low": float(i.low), "high": float(i.high)}
            for name, i in intervals.items()}


def compare_runs(run_dirs: Sequence[str | Path], *, samples: int = 1000, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Compare evaluation runs on the items each pair has in common (status ``ok``; a
    run's items are those its lockfile's ``limit`` keeps, as its reports count them).

    For every run after the first, per metric, the paired bootstrap of its difference
    from the first run (mean diff, 95% CI, p-value). With two or more runs, a ranking:
    Elo and Bradley–Terry ratings with bootstrap intervals over the games of
    :func:`games_of`.

    ``warnings``: a line for each run read without a readable lockfile (its records
    read as this version's layout, every one counted).

    ``progress`` is called with ``(resamples done, resamples in all)`` as the ranking's
    bootstraps go, the slow part (pure Python, minutes for runs of 100k items): Elo's
    ``samples`` resamples, then Bradley–Terry's (``2 * samples`` in all); first with
    ``(0, 2 * samples)``, not at all when there are no games.

    :raises EvalError: for fewer than two runs or a folder without results.
    """
    if len(run_dirs) < 2:
        raise EvalError("compare needs at least two run directories")
    dirs = [Path(d) for d in run_dirs]
    names = _names(dirs)
    warnings: list[str] = []
    runs = {name: _load(d, warnings) for name, d in zip(names, dirs, strict=True)}
    base = names[0]
    pairs = []
    for other in names[1:]:
        common = sorted(set(runs[base]) & set(runs[other]))
        metrics = sorted({m for i in common for m in runs[base][i].scores
                          if m in runs[other][i].scores})
        diffs: dict[str, Any] = {}
        for metric in metrics:
            ids = [i for i in common if metric in runs[base][i].scores
                   and metric in runs[other][i].scores]
            result = paired_bootstrap([runs[base][i].scores[metric] for i in ids],
                                      [runs[other][i].scores[metric] for i in ids],
                                      samples=samples, seed=seed)
            diffs[metric] = {"n": result.n, "mean_a": result.mean_a, "mean_b": result.mean_b,
                             "mean_diff": result.mean_diff, "low": result.low,
                             "high": result.high, "p_value": result.p_value}
        pairs.append({"a": base, "b": other, "common_items": len(common),
                      "only_a": len(set(runs[base]) - set(runs[other])),
                      "only_b": len(set(runs[other]) - set(runs[base])), "metrics": diffs})
    return {"runs": [{"name": n, "path": str(d), "items": len(runs[n])}
                     for n, d in zip(names, dirs, strict=True)],
            "pairs": pairs, "ranking": _ranking(runs, samples, seed, progress),
            "samples": samples, "seed": seed, "warnings": warnings}


def _ranking(runs: dict[str, dict[str, ItemResult]], samples: int, seed: int,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any] | None:
    from aieng_judge.ranking import bootstrap, bradley_terry, elo

    games = games_of(runs)
    if not games:
        return None
    total = 2 * samples

    def step(before: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _samples: progress(before + done, total)

    if progress is not None:
        progress(0, total)
    return {
        "games": len(games),
        "elo": _interval_json(bootstrap(games, elo, samples=samples, seed=seed,
                                        progress=step(0))),
        "bradley_terry": _interval_json(bootstrap(games, bradley_terry, samples=samples,
                                                  seed=seed, progress=step(samples))),
    }


def compare_markdown(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown page (``compare.md``); ``comparison`` may be
    ``comparison.json`` as read (a ``null`` number with its note is ``n/a``)."""
    comparison = read_finite(comparison)
    lines = ["# Comparison", "",
             (f"{comparison['samples']}-sample paired bootstrap, 95% intervals, seed "
             f"{comparison['seed']}. Differences are the later run minus the first."), ""]
    lines += [f"Warning: {_text(line)}\n" for line in comparison.get("warnings", [])]
    for pair in comparison["pairs"]:
        # Run names are folder names, metric names a pipeline's: shown as text.
        a, b = _text(pair["a"]), _text(pair["b"])
        lines += [f"## {b} − {a}", "",
                  (f"{pair['common_items']} items in both runs ({pair['only_a']} only in "
                  f"{a}, {pair['only_b']} only in {b})."), "",
                  f"| metric | n | {_cell(pair['a'])} | {_cell(pair['b'])} | diff | 95% CI | p |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for name, d in pair["metrics"].items():
            lines.append(f"| {_cell(name)} | {d['n']} | {_fmt(d['mean_a'])} | "
                         f"{_fmt(d['mean_b'])} | {_signed(d['mean_diff'])} | "
                         f"[{_signed(d['low'])}, {_signed(d['high'])}] | "
                         f"{_fmt(d['p_value'], 4)} |")
        if _not_finite(pair["metrics"].values(), ("mean_a", "mean_b", "mean_diff", "low",
                                                  "high", "p_value")):
            lines += ["", NOT_FINITE_NOTE]
        lines.append("")
    ranking = comparison.get("ranking")
    if ranking:
        lines += [f"## Ranking ({ranking['games']} games)", "",
                  "| system | Elo | 95% CI | Bradley–Terry | 95% CI |", "|---|---:|---|---:|---|"]
        for name, e in sorted(ranking["elo"].items(), key=lambda kv: -kv[1]["estimate"]):
            bt = ranking["bradley_terry"][name]
            lines.append(f"| {_cell(name)} | {_fmt(e['estimate'], 1)} | [{_fmt(e['low'], 1)}, "
                         f"{_fmt(e['high'], 1)}] | {_fmt(bt['estimate'], 1)} | "
                         f"[{_fmt(bt['low'], 1)}, {_fmt(bt['high'], 1)}] |")
        lines.append("")
    return "\n".join(lines)


def _signed(value: float) -> str:
    """A difference with its sign (``+0.125``), or ``n/a`` when it is not finite."""
    text = _fmt(value)
    return text if text == "n/a" or text.startswith("-") else "+" + text


def write_comparison(comparison: dict[str, Any], out: Path) -> None:
    """Write ``comparison.json``, ``compare.md`` and ``report.html`` into ``out``."""
    from .html import compare_page

    out.mkdir(parents=True, exist_ok=True)
    # Each file is replaced whole or not at all (a full disk, an interruption).
    replace_file(out / "comparison.json", strict_json(comparison) + "\n")
    # A run folder's name may hold a byte that is no UTF-8 (read as a lone surrogate):
    # shown as its escape, the pages stay UTF-8.
    replace_file(out / "compare.md", compare_markdown(comparison), errors="backslashreplace")
    replace_file(out / "report.html", compare_page(comparison), errors="backslashreplace")
