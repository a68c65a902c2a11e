"""The static HTML reports: one self-contained page each, inline CSS and inline SVG.

Nothing is fetched when the page opens (no script, stylesheet, font or image from a CDN),
so a report can be mailed, archived or opened offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ._results import ItemResult, read_finite
from ._svg import histogram, interval_bars, scatter
from .report import (
    FAILURES_SHOWN,
    failures_note,
    incomplete_note,
    metric_values,
    number,
    slice_fields,
    slice_note,
)

__all__ = ["SCATTER_POINTS", "compare_page", "run_page"]

#: The points a label-against-score scatter draws at most (a seeded sample of the labelled
#: items; the agreement statistics use every one): a circle per item made a multi-MB page of 100k labels.
SCATTER_POINTS = 2000

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.plot{border:1px solid #eee;padding:.5rem}
.muted{color:#777}code{background:#f5f5f5;padding:0 .2rem}
.sig{color:#b00;font-weight:600}
"""


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    # Not finite: past a float's range, or of a score that is not finite (report.md's
    # NOT_FINITE_NOTE says it at length).
    return number(float(value), digits) if math.isfinite(value) else "n/a (not finite)"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f'<td class="n">{escape(str(c))}</td>' if i in numeric
            else f"<td>{escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def run_page(summary: Mapping[str, Any], results: Sequence[ItemResult],
             lock: Mapping[str, Any]) -> str:
    """``report.html`` of one run: metrics, score histograms, slices, agreement, failures.

    ``summary`` may be ``summary.json`` as read (a ``null`` number with its note is not
    finite: ``n/a``)."""
    summary = read_finite(summary)
    pipeline = (lock.get("pipeline") or {}).get("name", "?")
    counts = summary["counts"]
    body = [f"<h1>Evaluation of <code>{escape(str(pipeline))}</code></h1>",
            (f'<p class="muted">{counts["total"]} items: {counts["ok"]} ok, '
            f'{counts["blocked"]} blocked, {counts["error"]} failed. 95% percentile '
            f'bootstrap intervals ({summary["samples"]} samples, seed {summary["seed"]}).</p>'),
            *([f"<p><b>{escape(note)}</b></p>"] if (note := incomplete_note(summary)) else []),
            "<h2>Metrics</h2>"]
    metrics = summary["metrics"]
    body.append(_table(["metric", "judge", "mean", "95% CI", "n"],
                       [[n, m["judge"], _f(m["mean"]), f"[{_f(m['low'])}, {_f(m['high'])}]",
                         m["n"]] for n, m in metrics.items()], {2, 4}))
    if metrics:
        body.append(interval_bars([(n, m["mean"], m["low"], m["high"])
                                   for n, m in metrics.items()], title="metric means"))
        body.append("<h2>Score distributions</h2><div class=\"grid\">")
        for name, values in metric_values(results).items():
            body.append(f'<div class="plot"><b>{escape(name)}</b><br>'
                        f"{histogram(values, title=f'distribution of {name}')}</div>")
        body.append("</div>")
    for field in slice_fields(summary):
        body.append(f"<h2>Slices by <code>{escape(field)}</code></h2>")
        if note := slice_note(summary, field):
            body.append(f'<p class="muted">{escape(note)}</p>')
        groups = summary["slices"].get(field, {})
        if not groups:
            continue
        names = sorted({n for g in groups.values() for n in g["metrics"]})
        rows = []
        for value, group in groups.items():
            cells = []
            for name in names:
                m = group["metrics"].get(name)
                cells.append("–" if m is None else
                             f"{_f(m['mean'])} [{_f(m['low'])}, {_f(m['high'])}] n={m['n']}")
            rows.append([value, group["items"], group["errors"], *cells])
        body.append(_table([field, "items", "errors", *names], rows, {1, 2}))
        body.append('<div class="grid">')
        for name in names:
            bars = [(value, g["metrics"][name]["mean"], g["metrics"][name]["low"],
                     g["metrics"][name]["high"]) for value, g in groups.items()
                    if name in g["metrics"]]
            body.append(f'<div class="plot"><b>{escape(name)} by {escape(field)}</b><br>'
                        f"{interval_bars(bars, title=f'{name} by {field}')}</div>")
        body.append("</div>")
    if summary["agreement"]:
        body.append("<h2>Judge agreement with human labels</h2>")
        body.append(_table(["metric", "n", "Cohen's κ", "Spearman ρ"],
                           [[n, a["n"], _f(a["kappa"]), _f(a["spearman"])]
                            for n, a in summary["agreement"].items()], {1, 2, 3}))
        body.append('<div class="grid">')
        for name in summary["agreement"]:
            points = []
            for record in results:
                if record.status == "ok" and name in record.scores and record.label is not None:
                    label = (record.label.get(name) if isinstance(record.label, dict)
                             else record.label)
                    if label is not None:
                        points.append((float(label), record.scores[name]))
            shown = (f"<br><span class=\"muted\">{SCATTER_POINTS:,} of {len(points):,} "
                     "points drawn (a fixed sample; the agreement above counts every item)"
                     "</span>"
                     if len(points) > SCATTER_POINTS else "")
            body.append(f'<div class="plot"><b>{escape(name)}</b><br>'
                        + scatter(points, title=f"{name}: label against judge score",
                                  x_label="human label", y_label="judge score",
                                  max_points=SCATTER_POINTS) + shown + "</div>")
        body.append("</div>")
    if summary.get("judge_failures"):
        body.append("<h2>Judge failures</h2><p class=\"muted\">Scores a judge could not give "
                    "(an unreadable verdict, an error): the item is ok, the metric's n is "
                    "lower.</p>")
        body.append(_table(["judge", "failures", "items", "first (item: error)"],
                           [[judge, f["failures"], f["items"],
                             f"{f['item']}: {str(f['error'])[:300]}"]
                            for judge, f in summary["judge_failures"].items()], {1, 2}))
    body.append("<h2>Failures</h2>")
    if summary["failures"]:
        body.append(_table(["id", "line", "error"],
                           [[f["id"], f["line"], str(f["error"])[:300]]
                            for f in summary["failures"][:FAILURES_SHOWN]], {1}))
        if more := failures_note(summary):
            body.append(f'<p class="muted">{escape(more)}</p>')
    else:
        body.append("<p>None.</p>")
    body.append(_environment(lock))
    return _page(f"aieng eval: {pipeline}", body)


def _environment(lock: Mapping[str, Any]) -> str:
    plugins = ", ".join(f"{p['name']} ({p['distribution']} {p['version']})"
                        for p in lock.get("plugins", []))
    models = ", ".join(f"{m['component']}/{m['model']}" for m in lock.get("models", []))
    return (f"<h2>Environment</h2><p class=\"muted\">aieng {escape(str(lock.get('aieng')))}; "
            f"Python {escape(str((lock.get('python') or {}).get('version')))}; plugins: "
            f"{escape(plugins or '–')}; models: {escape(models or '–')}; seed "
            f"{escape(str(lock.get('seed')))}; started {escape(str(lock.get('started_at')))}"
            "; see <code>lock.json</code>.</p>")


def compare_page(comparison: Mapping[str, Any]) -> str:
    """``report.html`` of ``aieng eval compare``: paired differences and the rankings
    (``comparison`` may be ``comparison.json`` as read: a ``null`` number with its note
    is ``n/a``)."""
    comparison = read_finite(comparison)
    runs = comparison["runs"]
    body = ["<h1>Comparison of " + ", ".join(f"<code>{escape(r['name'])}</code>"
                                              for r in runs) + "</h1>",
            f'<p class="muted">{comparison["samples"]}-sample bootstraps, 95% intervals, '
            f'seed {comparison["seed"]}. Runs: '
            + "; ".join(f"{escape(r['name'])} = {escape(r['path'])}" for r in runs) + "</p>"]
    for pair in comparison["pairs"]:
        body.append(f"<h2>{escape(pair['b'])} − {escape(pair['a'])} (paired bootstrap)</h2>")
        rows = []
        for name, d in pair["metrics"].items():
            sig = "yes" if d["low"] > 0 or d["high"] < 0 else "no"
            rows.append([name, d["n"], _f(d["mean_a"]), _f(d["mean_b"]), _f(d["mean_diff"]),
                         f"[{_f(d['low'])}, {_f(d['high'])}]", _f(d["p_value"], 4), sig])
        body.append(_table(["metric", "n", f"mean {pair['a']}", f"mean {pair['b']}",
                            "diff", "95% CI", "p", "CI excludes 0"], rows, {1, 2, 3, 4, 6}))
        body.append(interval_bars([(n, d["mean_diff"], d["low"], d["high"])
                                   for n, d in pair["metrics"].items()],
                                  title="paired differences", zero_line=True))
    ranking = comparison.get("ranking")
    if ranking:
        body.append(f"<h2>Ranking ({ranking['games']} games: per item and metric, the better "
                    "score wins (lower for perplexity, mean NLL, bits per byte and an "
                    "agent's steps, tokens, tool calls and tool errors; higher for the "
                    "rest), equal is a tie)</h2>")
        for method, label in (("elo", "Elo"), ("bradley_terry", "Bradley–Terry")):
            rows = sorted(ranking[method].items(), key=lambda kv: -kv[1]["estimate"])
            body.append(f"<h3>{label}</h3>")
            body.append(_table(["system", label, "95% CI"],
                               [[s, _f(i["estimate"], 2), (f"[{_f(i['low'], 2)}, "
                                 f"{_f(i['high'], 2)}]")] for s, i in rows], {1}))
            body.append(interval_bars([(s, i["estimate"], i["low"], i["high"])
                                       for s, i in rows], title=f"{label} ranking"))
    return _page("aieng eval compare", body)
