"""Reports of a run: ``summary.json``, ``report.md`` and the static ``report.html``.

Per metric: mean, bootstrap confidence interval and n; the same per slice (each
``metadata`` field and ``slice``); the failures; and, when the dataset has human ``label``s,
the judges' agreement with them (Cohen's kappa and Spearman's rho).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aieng_hookspecs import replace_file

from ._results import ItemResult, read_finite, utf8_json
from .stats import mean_cis

__all__ = ["MAX_SLICES", "agreement", "locked_max_slices", "markdown_report", "summarize",
           "write_reports"]

#: The slices of each ``metadata`` field the reports show by default (the largest by
#: items): a field with thousands of values made thousands of table and plot rows.
MAX_SLICES = 50
#: A field with more values than shown, whose values number at least this share of the
#: items carrying it (an id, a document name), is not sliced: its slices are single items.
UNIQUE_SHARE = 0.9
#: The failed items the reports list (the first, by dataset order); ``summary.json`` keeps
#: every one: a run against a backend that was down listed 100k errors, tens of MB of page.
FAILURES_SHOWN = 100


class _Intervals:
    """The intervals a summary asks for, computed together once every one is asked
    (:func:`mean_cis` draws the resamples once per size, not once per metric and slice)."""

    def __init__(self) -> None:
        self.groups: list[Sequence[float]] = []
        self.entries: list[dict[str, Any]] = []

    def ask(self, values: Sequence[float]) -> dict[str, Any]:
        """The entry ``{"mean", "low", "high", "n"}`` of ``values``, filled by
        :meth:`compute`."""
        entry: dict[str, Any] = dict.fromkeys(("mean", "low", "high", "n"))
        self.groups.append(values)
        self.entries.append(entry)
        return entry

    def compute(self, samples: int, seed: int) -> None:
        cis = mean_cis(self.groups, samples=samples, seed=seed)
        for entry, ci in zip(self.entries, cis, strict=True):
            entry.update(mean=ci.mean, low=ci.low, high=ci.high, n=ci.n)


def metric_values(results: Iterable[ItemResult]) -> dict[str, list[float]]:
    """Each metric's values over the items that ran (``ok``), in result order."""
    values: dict[str, list[float]] = defaultdict(list)
    for record in results:
        if record.status == "ok":
            for name, value in record.scores.items():
                values[name].append(value)
    return dict(sorted(values.items()))


def agreement(results: Sequence[ItemResult]) -> dict[str, dict[str, Any]]:
    """Per metric, the judge's agreement with the items' human labels: ``n``, Cohen's
    ``kappa`` (when the labels are whole numbers: the scores are rounded to the nearest
    one, halves up) and Spearman's ``spearman`` (``None`` where undefined: under 2 pairs or a
    constant side).

    A ``label`` object applies to the metrics it names; a single-number label applies to
    every metric whose scores lie within the labels' range (0/1 labels: the 0..1 metrics),
    since agreement across different scales means nothing."""
    from aieng_judge.agreement import cohen_kappa, spearman

    pairs: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for record in results:
        if record.status != "ok" or record.label is None:
            continue
        for name, value in record.scores.items():
            label = (record.label.get(name) if isinstance(record.label, dict)
                     else record.label)
            if label is not None:
                pairs[name][0].append(float(label))
                pairs[name][1].append(value)
    out: dict[str, dict[str, Any]] = {}
    scalar = [float(r.label) for r in results
              if r.status == "ok" and isinstance(r.label, (int, float))]
    for name, (labels, scores) in sorted(pairs.items()):
        if scalar and not any(isinstance(r.label, dict) and name in r.label for r in results) \
                and not min(scalar) <= min(scores) <= max(scores) <= max(scalar):
            continue  # a single-number label is on another scale than this metric
        entry: dict[str, Any] = {"n": len(labels), "kappa": None, "spearman": None}
        if not all(math.isfinite(s) for s in scores):  # inf, nan: no rank, no rounding
            out[name] = entry
            continue
        if all(float(x).is_integer() for x in labels):
            # Half up, the same way on every level: round() (to even) sent 2.5 to 2 but
            # 3.5 to 4, so a judge half a point off everywhere seemed to disagree at random.
            entry["kappa"] = _defined(cohen_kappa, [int(x) for x in labels],
                                      [math.floor(s + 0.5) for s in scores])
        entry["spearman"] = _defined(spearman, labels, scores)
        out[name] = entry
    return out


def _defined(compute: Any, *args: Any) -> float | None:
    try:
        value = float(compute(*args))
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def summarize(results: Sequence[ItemResult], *, samples: int = 1000,
              seed: int = 0, max_slices: int = MAX_SLICES) -> dict[str, Any]:
    """The numbers of a run's reports, as a JSON-able dict (``summary.json``).

    Per ``metadata`` field, the ``max_slices`` largest slices are summarized; a field with
    more values has an entry in ``slices_left_out`` (a field whose values are nearly all
    distinct is not sliced at all).

    :raises ValueError: for ``max_slices`` under 1.
    """
    if max_slices < 1:
        raise ValueError(f"max_slices must be at least 1, got {max_slices}")
    counts = {"total": len(results)}
    for status in ("ok", "blocked", "error"):
        counts[status] = sum(1 for r in results if r.status == status)
    values = metric_values(results)
    judges: dict[str, str] = {}
    for record in results:
        for name, judge in record.judges.items():
            judges.setdefault(name, judge)
    intervals = _Intervals()
    metrics: dict[str, dict[str, Any]] = {}
    for name, vals in values.items():
        metrics[name] = intervals.ask(vals)
        metrics[name]["judge"] = judges.get(name, "")
    slices, left_out = _slices(results, intervals, max_slices)
    intervals.compute(samples, seed)
    failures = [{"id": r.id, "line": r.line, "error": r.error}
                for r in results if r.status == "error"]
    has_labels = any(r.label is not None for r in results)
    return {"counts": counts, "metrics": metrics, "slices": slices, "failures": failures,
            "judge_failures": judge_failures(results),
            "agreement": agreement(results) if has_labels else {},
            "samples": samples, "seed": seed, "max_slices": max_slices,
            "slices_left_out": left_out}


def _slices(results: Sequence[ItemResult], intervals: _Intervals, max_slices: int
            ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Per ``metadata`` field, its ``max_slices`` largest slices (by items; ties by value),
    shown in value order; and, per field with more values, what was left out
    (``values``, ``shown``, ``items`` left out, ``unique``: a field whose values are
    nearly all distinct, such as an id, is not sliced at all)."""
    by_slice: dict[str, dict[str, list[ItemResult]]] = defaultdict(lambda: defaultdict(list))
    for record in results:
        for field, value in record.metadata.items():
            by_slice[field][value].append(record)
    slices: dict[str, dict[str, dict[str, Any]]] = {}
    left_out: dict[str, dict[str, Any]] = {}
    for field in sorted(by_slice):
        groups = by_slice[field]
        chosen = sorted(groups)
        if len(groups) > max_slices:
            carrying = sum(len(group) for group in groups.values())
            unique = len(groups) >= UNIQUE_SHARE * carrying
            chosen = [] if unique else sorted(
                sorted(groups, key=lambda v: (-len(groups[v]), v))[:max_slices])
            left_out[field] = {"values": len(groups), "shown": len(chosen),
                               "items": carrying - sum(len(groups[v]) for v in chosen),
                               "unique": unique}
            if unique:
                continue
        slices[field] = {}
        for value in chosen:
            group = groups[value]
            slices[field][value] = {
                "items": len(group),
                "errors": sum(1 for r in group if r.status == "error"),
                "metrics": {n: intervals.ask(v) for n, v in metric_values(group).items()},
            }
    return slices, left_out


def failures_note(summary: Mapping[str, Any]) -> str:
    """The sentence under the reports' first :data:`FAILURES_SHOWN` failures on the others
    (``""`` when every one is shown)."""
    more = len(summary["failures"]) - FAILURES_SHOWN
    if more <= 0:
        return ""
    return (f"… and {more} more failures (the first {FAILURES_SHOWN} are shown): every one "
            "is in summary.json's failures and in results.jsonl (status error).")


def slice_fields(summary: Mapping[str, Any]) -> list[str]:
    """The fields of the reports' slice sections: those sliced and those left out."""
    return sorted({*summary["slices"], *summary.get("slices_left_out", {})})


def slice_note(summary: Mapping[str, Any], field: str) -> str:
    """The sentence of the reports on the values of ``field`` left out (plain text; ``""``
    when every value is shown, as in summaries of earlier versions)."""
    info = summary.get("slices_left_out", {}).get(field)
    if not info:
        return ""
    values, items = info["values"], info["items"]
    if info.get("unique"):
        return (f"Not sliced: {values} values over {items} items, nearly each item its own "
                f"(an id?). --max-slices {values} shows them.")
    return (f"The {info['shown']} largest of {values} values are shown; the other "
            f"{values - info['shown']} values ({items} items) are left out. --max-slices "
            f"{values} shows them all.")


def judge_failures(results: Iterable[ItemResult]) -> dict[str, dict[str, Any]]:
    """Per judge, the scores it could not give on items that ran: ``failures`` (each
    metric it gave up on, once per item: a pairwise judge failing in both orders of one
    item lost one metric there), ``items`` (the items with at least one), and the first
    failure's ``item`` and ``error``."""
    out: dict[str, dict[str, Any]] = {}
    for record in results:
        if record.status != "ok":
            continue
        for judge in dict.fromkeys(f["judge"] for f in record.judge_failures):
            entry = out.setdefault(judge, {"failures": 0, "items": 0, "item": "",
                                           "error": ""})
            mine = [f for f in record.judge_failures if f["judge"] == judge]
            entry["failures"] += len(dict.fromkeys(f["metric"] for f in mine))
            entry["items"] += 1
            if not entry["item"]:
                entry.update(item=record.id, error=mine[0]["error"])
    return dict(sorted(out.items()))


def not_run(results: Sequence[ItemResult], lock: Mapping[str, Any]) -> int:
    """The run's items without a record (``lock.json``'s ``dataset.items`` less the
    records): not 0 only when the run stopped early (interrupted, killed, a full disk)."""
    items = (lock.get("dataset") or {}).get("items")
    if not isinstance(items, int) or isinstance(items, bool):
        return 0  # a lockfile without the count: nothing to compare with
    return max(items - len(results), 0)


def incomplete_note(summary: Mapping[str, Any]) -> str:
    """One sentence for an interrupted run's reports (``""`` for a finished one)."""
    missing = summary.get("not_run") or 0
    if not missing:
        return ""
    total = summary["counts"]["total"] + missing
    return (f"The run did not finish: {missing} of {total} items have no result (not "
            "counted here); rerun the same aieng eval command to resume.")


def _line(text: object) -> str:
    """Text on one line (a line break would end a table row or a list item)."""
    return " ".join(str(text).splitlines())


#: What makes Markdown of a text (a dataset's, a model's): links and images (``[``),
#: HTML and autolinks (``<``), code spans, and the backslash that escapes them.
_ACTIVE = re.compile(r"([\\`\[\]<>])")


def _text(text: object, limit: int | None = None) -> str:
    """Text (an id, an error quoting a model's answer, a slice value) shown as itself in
    Markdown: on one line, cut to ``limit`` characters, then its link, image, HTML and
    code markup escaped, so it cannot add an element (an image fetched when the report is
    shown) or break the page's own markup."""
    return _ACTIVE.sub(r"\\\1", _line(text)[:limit])


def _cell(text: object, limit: int | None = None) -> str:
    """Text as one Markdown table cell: :func:`_text`, its ``|`` escaped too."""
    return _text(text, limit).replace("|", "\\|")


def _code(text: object, *, cell: bool = False) -> str:
    """Text as one Markdown code span, on one line: fenced by more backticks than any run
    of them it holds (so it cannot end the span); in a table ``cell``, its ``|`` escaped."""
    line = _line(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", line)), default=0) + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    if cell:
        line = line.replace("|", "\\|")
    return f"{fence}{pad}{line}{pad}{fence}"


#: Shown for a number that is not finite; the reports add :data:`NOT_FINITE_NOTE`.
NOT_FINITE = "n/a"
#: Why a report shows :data:`NOT_FINITE` (where it does).
NOT_FINITE_NOTE = ("n/a: not a finite number, so not shown: its true value is past a "
                   "float's range (±1.8e308: a mean difference of scores near 1e308), or a "
                   "score it counts is not finite (inf, nan).")


#: From this magnitude on the reports show a number in exponent form, 4 significant
#: digits (``1.235e+07``): a mean near 1e308 at ``.3f`` was 310 digits in a table cell.
EXPONENT_FROM = 1e6


def number(value: float, digits: int = 3) -> str:
    """A finite number as the reports show it: ``digits`` decimals while its magnitude is
    under :data:`EXPONENT_FROM`, from there on ``.3e``; ``inf`` and ``nan`` as Python
    writes them (callers show :data:`NOT_FINITE` instead). The JSON files keep every
    digit."""
    return f"{value:.{digits}f}" if abs(value) < EXPONENT_FROM else f"{value:.3e}"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return number(value, digits) if math.isfinite(value) else NOT_FINITE


def _not_finite(entries: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> bool:
    """Whether a number of ``keys`` in one of ``entries`` is shown as :data:`NOT_FINITE`."""
    return any(isinstance(e.get(k), float) and not math.isfinite(e[k])
               for e in entries for k in keys)


def markdown_report(summary: Mapping[str, Any], lock: Mapping[str, Any]) -> str:
    """``report.md``: the summary table per metric, slices, agreement and failures.

    ``summary`` is :func:`summarize`'s, or ``summary.json`` as read (its ``null`` numbers
    with a note read as not finite: ``n/a``)."""
    summary = read_finite(summary)
    counts = summary["counts"]
    pipeline = lock.get("pipeline") or {}
    dataset = lock.get("dataset") or {}
    lines = [
        f"# Evaluation of {_code(pipeline.get('name', '?'))}",
        "",
        (f"Dataset {_code(dataset.get('path', '?'))} "
        f"(sha256 `{str(dataset.get('sha256'))[:12]}`): "
        f"{counts['total']} items: {counts['ok']} ok, {counts['blocked']} blocked, "
        f"{counts['error']} failed. Intervals: {summary['samples']}-sample percentile "
        f"bootstrap, 95%, seed {summary['seed']}."),
        "",
        *([note, ""] if (note := incomplete_note(summary)) else []),
        "## Metrics",
        "",
        "| metric | judge | mean | 95% CI | n |",
        "|---|---|---:|---|---:|",
    ]
    for name, m in summary["metrics"].items():
        lines.append(f"| {_cell(name)} | {_cell(m['judge'])} | {_fmt(m['mean'])} | "
                     f"[{_fmt(m['low'])}, {_fmt(m['high'])}] | {m['n']} |")
    if not summary["metrics"]:
        lines.append("| (no scores: does the pipeline have a judge stage?) | | | | |")
    shown = [*summary["metrics"].values(), *(m for groups in summary["slices"].values()
                                              for g in groups.values()
                                              for m in g["metrics"].values())]
    if _not_finite(shown, ("mean", "low", "high")):
        lines += ["", NOT_FINITE_NOTE]
    if summary.get("judge_failures"):
        lines += ["", "## Judge failures", "",
                  ("Scores a judge could not give (an unreadable verdict, an error): the item "
                   "is ok, the metric's n is lower."), "",
                  "| judge | failures | items | first (item: error) |", "|---|---:|---:|---|"]
        for judge, f in summary["judge_failures"].items():
            lines.append(f"| {_cell(judge)} | {f['failures']} | {f['items']} | "
                         f"{_code(f['item'], cell=True)}: {_cell(f['error'], 200)} |")
    for field in slice_fields(summary):
        groups = summary["slices"].get(field, {})
        names = sorted({n for g in groups.values() for n in g["metrics"]})
        lines += ["", f"## Slices by {_code(field)}", ""]
        if note := slice_note(summary, field):
            lines += [note, ""]
        if not groups:
            continue
        lines += ["| " + " | ".join(map(_cell, [field, "items", "errors", *names])) + " |",
                  "|---|---:|---:|" + "---:|" * len(names)]
        for value, group in groups.items():
            cells = []
            for name in names:
                m = group["metrics"].get(name)
                cells.append("–" if m is None else
                             f"{_fmt(m['mean'])} [{_fmt(m['low'])}, {_fmt(m['high'])}] "
                             f"(n={m['n']})")
            lines.append("| " + " | ".join([_cell(value), str(group["items"]),
                                            str(group["errors"]), *cells]) + " |")
    if summary["agreement"]:
        lines += ["", "## Judge agreement with human labels", "",
                  "| metric | n | Cohen's κ | Spearman ρ |", "|---|---:|---:|---:|"]
        for name, a in summary["agreement"].items():
            lines.append(f"| {_cell(name)} | {a['n']} | {_fmt(a['kappa'])} | "
                         f"{_fmt(a['spearman'])} |")
    lines += ["", "## Failures", ""]
    if not summary["failures"]:
        lines.append("None.")
    for failure in summary["failures"][:FAILURES_SHOWN]:
        lines.append(f"- {_code(failure['id'])} (line {failure['line']}): "
                     f"{_text(failure['error'], 300)}")
    if more := failures_note(summary):
        lines += ["", more]
    models = ", ".join(f"{m['component']}/{m['model']}" for m in lock.get("models", []))
    lines += ["", "## Environment", "",
              (f"aieng {lock.get('aieng', '?')}, Python "
              f"{(lock.get('python') or {}).get('version', '?')}; models: {models or '–'}; "
              f"seed {lock.get('seed')}; started {lock.get('started_at')}, "
              f"finished {lock.get('finished_at')}. Everything else is in `lock.json`."), ""]
    return "\n".join(lines)


def locked_max_slices(lock: Mapping[str, Any]) -> int:
    """The slices per ``metadata`` field a run was made with: its lockfile's
    ``max_slices`` (lockfiles of earlier versions have none: :data:`MAX_SLICES`)."""
    return _locked_count(lock, "max_slices", MAX_SLICES)


def locked_samples(lock: Mapping[str, Any]) -> int:
    """The bootstrap resamples a run's reports were made with: its lockfile's
    ``bootstrap_samples`` (lockfiles of earlier versions have none: 1000)."""
    return _locked_count(lock, "bootstrap_samples", 1000)


def _locked_count(lock: Mapping[str, Any], key: str, default: int) -> int:
    value = lock.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return default


def write_reports(run_dir: Path, results: Sequence[ItemResult], lock: Mapping[str, Any], *,
                  samples: int | None = None, max_slices: int | None = None
                  ) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md`` and ``report.html`` into ``run_dir``; blocking.

    :param samples: the bootstrap resamples (``None``: the run's own,
        :func:`locked_samples`).

    :param max_slices: the slices shown per ``metadata`` field (see :func:`summarize`;
        ``None``: the run's own, :func:`locked_max_slices`).
    :returns: the summary.
    """
    from .html import run_page

    if max_slices is None:
        max_slices = locked_max_slices(lock)
    if samples is None:
        samples = locked_samples(lock)
    summary = summarize(results, samples=samples, seed=int(lock.get("bootstrap_seed") or 0),
                        max_slices=max_slices)
    summary["not_run"] = not_run(results, lock)
    # Each file is replaced whole or not at all (a full disk, an interruption).
    replace_file(run_dir / "summary.json", utf8_json(summary, indent=2) + "\n")
    # A lone surrogate (half an emoji an error quotes, a file name's undecodable byte) is
    # shown as its escape: the pages stay UTF-8.
    replace_file(run_dir / "report.md", markdown_report(summary, lock),
                 errors="backslashreplace")
    replace_file(run_dir / "report.html", run_page(summary, results, lock),
                 errors="backslashreplace")
    return summary
