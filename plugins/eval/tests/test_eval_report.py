"""Report building blocks: agreement with labels, summaries, SVG plots."""

from __future__ import annotations

import pytest
from aieng_eval import ItemResult, summarize
from aieng_eval._svg import histogram, interval_bars, scatter
from aieng_eval.report import agreement


def item(i: int, scores: dict[str, float], label: object = None,
         status: str = "ok") -> ItemResult:
    return ItemResult(id=f"i{i}", status=status, scores=scores, label=label,  # type: ignore[arg-type]
                      metadata={"group": "a" if i < 3 else "b"})


def test_scalar_labels_apply_to_metrics_on_their_scale() -> None:
    """A 0/1 label is compared with 0..1 metrics only; a label object with the metrics it
    names; kappa needs whole-number labels, Spearman is given for any."""
    results = [item(i, {"em": float(i % 2), "len": float(10 + i)}, label=i % 2)
               for i in range(6)]
    found = agreement(results)
    assert set(found) == {"em"}
    assert found["em"] == {"n": 6, "kappa": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
    named = [item(i, {"em": float(i % 2), "len": float(i)}, label={"len": 0.5 * i})
             for i in range(4)]
    found = agreement(named)
    assert set(found) == {"len"} and found["len"]["kappa"] is None
    assert found["len"]["spearman"] == pytest.approx(1.0)


def test_summary_counts_slices_and_failures() -> None:
    """Counts by status, per-slice metrics, failures with their error; blocked and failed
    items carry no scores into the means."""
    results = [item(0, {"em": 1.0}), item(1, {"em": 0.0}), item(3, {"em": 1.0}),
               ItemResult(id="x", status="error", error="Boom: no", line=9),
               ItemResult(id="y", status="blocked")]
    summary = summarize(results, samples=50)
    assert summary["counts"] == {"total": 5, "ok": 3, "blocked": 1, "error": 1}
    assert summary["metrics"]["em"]["mean"] == pytest.approx(2 / 3)
    assert summary["metrics"]["em"]["n"] == 3
    assert summary["slices"]["group"]["a"]["metrics"]["em"]["mean"] == 0.5
    assert summary["slices"]["group"]["b"]["items"] == 1
    assert summary["failures"] == [{"id": "x", "line": 9, "error": "Boom: no"}]
    assert summary["agreement"] == {}


def test_plots_are_inline_svg_with_escaped_text() -> None:
    """Plots are <svg> elements, labels escaped; empty input draws a note, not an error."""
    svg = histogram([0.0, 1.0, 1.0], title="a<b")
    assert svg.startswith("<svg") and "a&lt;b" in svg and svg.count("<rect") == 2
    assert svg.count("<rect") == 2
    many = histogram([i / 100 for i in range(100)], title="h", bins=5)
    assert many.count("<rect") == 5
    bars = interval_bars([("x&y", 0.5, 0.4, 0.6), ("z", -0.1, -0.3, 0.2)], title="t",
                         zero_line=True)
    assert "x&amp;y" in bars and "stroke-dasharray" in bars
    assert "no values" in histogram([], title="e") and "nothing" in interval_bars([], title="e")
    assert scatter([(0, 1), (1, 0)], title="s", x_label="l", y_label="j").count("<circle") == 2


def test_kappa_rounds_half_scores_the_same_way_on_every_level() -> None:
    """Scores halfway between two labels go to the same side on every level of the scale
    (half up), so a judge one half-point below the human everywhere agrees perfectly;
    bankers' rounding sent 2.5 to 2 but 3.5 to 4, scattering a constant shift."""
    labels = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    results = [item(i, {"rubric": label - 0.5}, label={"rubric": label})
               for i, label in enumerate(labels)]
    assert agreement(results)["rubric"]["kappa"] == pytest.approx(1.0)
    halves = [item(i, {"em": 0.5}, label=1) for i in range(3)]
    halves += [item(3, {"em": 0.0}, label=0), item(4, {"em": 1.0}, label=1)]
    assert agreement(halves)["em"]["kappa"] == pytest.approx(1.0)  # 0.5 counts as 1


def test_markdown_cells_hold_pipes_and_newlines_of_the_data() -> None:
    """A slice value (or an error) holding ``|`` or a line break stays in its cell: every
    row of a table has the header's number of cells, and failures stay one line each."""
    from aieng_eval.report import markdown_report

    results = [ItemResult(id="a", status="ok", scores={"em": 1.0},
                          metadata={"slice": "a|b", "note": "two\nlines"}),
               ItemResult(id="x\ny", status="error", error="Boom:\nbad | worse", line=2)]
    report = markdown_report(summarize(results, samples=20), {})
    for table in report.split("\n\n"):
        rows = [r for r in table.splitlines() if r.startswith("|")]
        widths = {len(r.replace("\\|", "").split("|")) for r in rows}
        assert len(widths) <= 1, table
    assert "| a\\|b | 1 | 0 |" in report and "| two lines | 1 | 0 |" in report
    failures = report.split("## Failures")[1].split("##")[0].strip().splitlines()
    assert failures == ["- `x y` (line 2): Boom: bad | worse"]
