"""The numbers of the files ``aieng eval`` writes, and of the pages it shows.

Every JSON file (``results.jsonl``, ``summary.json``, ``comparison.json``, ``lock.json``)
and every ``--json`` output is strict JSON: a number that is not finite is ``null`` with a
``<key>_note`` beside it (``"not finite (inf)"``), never ``NaN`` / ``Infinity``, which
JavaScript's ``JSON.parse``, jq, Go and serde refuse; what reads them back (the pages, the
command's summary, a rebuilt report) shows such a number as ``n/a``. The pages show a
number with 3 decimals under 1e6 and in exponent form (4 significant digits) from there on.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import _evalkit as kit
import pytest
from aieng_eval import ItemResult, compare_runs, read_results, write_comparison, write_reports
from aieng_eval._compare import compare_markdown
from aieng_eval._results import ResultsFile, finite_json, read_finite
from aieng_eval.html import compare_page, run_page
from aieng_eval.report import markdown_report
from hypothesis import given, settings
from hypothesis import strategies as st


def _strict(text: str) -> Any:
    """``text`` read as a strict reader reads it: ``NaN`` / ``Infinity`` refused."""
    def refuse(name: str) -> Any:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _same(a: Any, b: Any) -> bool:
    """Equal JSON-like values, a NaN equal to a NaN (an ``inf`` only to one of its sign)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _records(scores: list[dict[str, float]], topic: bool = True) -> list[ItemResult]:
    return [ItemResult(id=f"i{i}", status="ok", scores=s, line=i + 1,
                       metadata={"topic": f"t{i % 2}"} if topic else {},
                       label=1.0 if i % 3 else 0.0)
            for i, s in enumerate(scores)]


_SCORE = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.inf, -math.inf, math.nan, 1e308, -1.7e308, 0.5])
_SCORES = st.lists(st.fixed_dictionaries({"s": _SCORE, "t": _SCORE}), min_size=1,
                   max_size=6)


@settings(max_examples=25, deadline=None)
@given(first=_SCORES, second=_SCORES)
def test_every_json_file_is_strict_and_reads_back(first: list[dict[str, float]],
                                                  second: list[dict[str, float]]) -> None:
    """Any scores, ``inf`` and ``nan`` included: results.jsonl, summary.json and
    comparison.json parse with a strict reader; read back (:func:`read_finite`) they are
    the numbers written (a NaN a NaN, an inf of its sign); the pages built from the files
    as read are the pages written from the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        dirs = []
        for name, scores in (("a", first), ("b", second)):
            run = base / name
            run.mkdir()
            records = _records(scores)
            out = ResultsFile(run / "results.jsonl")
            out.open()
            out.write(records)
            out.close()
            for line in (run / "results.jsonl").read_text(encoding="utf-8").splitlines():
                _strict(line)
            back = read_results(run / "results.jsonl")
            assert _same([r.scores for r in back.values()], [r.scores for r in records])
            summary = write_reports(run, records, {}, samples=5)
            loaded = _strict((run / "summary.json").read_text(encoding="utf-8"))
            assert _same(read_finite(loaded), summary)
            assert markdown_report(loaded, {}) == (run / "report.md").read_text("utf-8")
            assert run_page(loaded, records, {}) == (run / "report.html").read_text("utf-8")
            dirs.append(run)
        comparison = compare_runs(dirs, samples=5)
        write_comparison(comparison, base / "cmp")
        loaded = _strict((base / "cmp" / "comparison.json").read_text(encoding="utf-8"))
        assert _same(read_finite(loaded), comparison)
        assert compare_markdown(loaded) == (base / "cmp" / "compare.md").read_text("utf-8")
        assert compare_page(loaded) == (base / "cmp" / "report.html").read_text("utf-8")


def test_a_number_that_is_not_finite_is_null_with_a_note() -> None:
    """The layout, by example: ``null`` and ``<key>_note`` naming what it was; in a list,
    the ``null`` alone; finite numbers untouched."""
    value = {"mean": math.inf, "low": -math.inf, "high": math.nan, "n": 3, "p": 0.25,
             "xs": [1.0, math.nan]}
    assert finite_json(value) == {
        "mean": None, "mean_note": "not finite (inf)", "low": None,
        "low_note": "not finite (-inf)", "high": None, "high_note": "not finite (nan)",
        "n": 3, "p": 0.25, "xs": [1.0, None]}
    assert _same(read_finite(finite_json(value)),
                 {**value, "xs": [1.0, None]})
    # A note-like key of other content is data, kept as read.
    assert read_finite({"a": 1.0, "a_note": "not finite (inf)"}) == {
        "a": 1.0, "a_note": "not finite (inf)"}


def test_a_difference_past_a_float_is_null_in_comparison_json(tmp_path: Path) -> None:
    """The case reported: scores 1.7e308 apart, a mean difference of 3.4e308 (``inf``):
    comparison.json had ``Infinity``; now ``null`` with its note, read back as n/a."""
    dirs = []
    for name, value in (("first", -1.7e308), ("second", 1.7e308)):
        run = tmp_path / name
        run.mkdir()
        (run / "results.jsonl").write_text("".join(
            json.dumps(ItemResult(id=f"i{i}", status="ok", scores={"s": value},
                                  line=i + 1).to_json()) + "\n" for i in range(3)),
            encoding="utf-8")
        dirs.append(run)
    write_comparison(compare_runs(dirs, samples=10), tmp_path / "cmp")
    text = (tmp_path / "cmp" / "comparison.json").read_text(encoding="utf-8")
    diff = _strict(text)["pairs"][0]["metrics"]["s"]
    assert diff["mean_diff"] is None and diff["mean_diff_note"] == "not finite (inf)"
    assert diff["mean_a"] == -1.7e308  # a finite number keeps every digit
    result = kit.invoke("compare", str(dirs[0]), str(dirs[1]), "--samples", "10", "-q",
                        "--json")
    assert result.exit_code == 0, result.output
    assert _strict(result.stdout)["pairs"][0]["metrics"]["s"]["mean_diff"] is None


def _run_with_scores(tmp_path: Path, value: str) -> Path:
    """A run of 3 items whose ``exact_match`` of ``q1`` is ``value`` in results.jsonl (a
    file an earlier aieng-eval wrote with ``Infinity`` / ``NaN``, or edited by hand)."""
    out = tmp_path / "run"
    kit.run_sync(kit.pipeline_file(tmp_path), kit.echo_dataset(tmp_path, 3), out,
                 bootstrap_samples=10)
    path = out / "results.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    edited = []
    for line in lines:
        row = json.loads(line)
        if row["id"] == "q1":
            line = line.replace('"exact_match": 1.0', f'"exact_match": {value}')
            assert line != json.dumps(row)
        edited.append(line)
    path.write_text("\n".join(edited) + "\n", encoding="utf-8")
    return out


@pytest.mark.parametrize("value", ["Infinity", "NaN"])
def test_report_and_a_resumed_run_read_null_as_n_a(tmp_path: Path, value: str) -> None:
    """``aieng eval report`` over such results writes strict files and prints n/a; a
    resumed ``aieng eval run``, whose summary lines are read from summary.json (``null``
    there), prints n/a instead of crashing on ``None``; ``--json`` stays strict."""
    out = _run_with_scores(tmp_path, value)
    result = kit.invoke("report", str(out))
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "exact_match" in x)
    # One item of three not finite: the mean is; a resample without it is not (1.0).
    assert "mean n/a  95% CI [" in line and ", n/a]  n=3" in line, line
    for name in ("summary.json", "lock.json"):
        _strict((out / name).read_text(encoding="utf-8"))
    summary = _strict((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["exact_match"]["mean"] is None
    assert summary["metrics"]["exact_match"]["mean_note"] == f"not finite ({value.lower()[:3]})"
    assert "| n/a | [" in (out / "report.md").read_text(encoding="utf-8")
    pipeline, dataset = tmp_path / "p.toml", tmp_path / "ds.jsonl"
    again = kit.invoke("run", str(pipeline), str(dataset), "--out", str(out), "-q",
                       "--samples", "10")
    assert again.exit_code == 0, again.output
    assert "mean n/a" in again.output
    as_json = kit.invoke("run", str(pipeline), str(dataset), "--out", str(out), "-q",
                         "--samples", "10", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert _strict(as_json.stdout)["metrics"]["exact_match"]["mean"] is None


# ---- numbers on the pages: .3f under 1e6, .3e from there -------------------------------

@pytest.mark.parametrize(("value", "shown"), [
    (999_999.999, "999999.999"), (-999_999.999, "-999999.999"), (0.5, "0.500"),
    (1e6, "1.000e+06"), (-1e6, "-1.000e+06"), (12_345_678.9, "1.235e+07"),
    (1e308, "1.000e+308"), (-1.7e308, "-1.700e+308")])
def test_pages_show_huge_numbers_in_exponent_form(value: float, shown: str) -> None:
    """report.md, report.html, compare.md and the comparison page: a mean under 1e6 with
    3 decimals, one from 1e6 on as ``.3e`` (it was every one of ~310 digits)."""
    records = _records([{"s": value}] * 3, topic=False)
    from aieng_eval.report import summarize

    summary = summarize(records, samples=5)
    row = next(x for x in markdown_report(summary, {}).splitlines() if x.startswith("| s |"))
    assert row.split(" | ")[2:4] == [shown, f"[{shown}, {shown}]"], row
    assert f'<td class="n">{shown}</td>' in run_page(summary, records, {})
    comparison = {"runs": [{"name": "a", "path": "a", "items": 3},
                           {"name": "b", "path": "b", "items": 3}],
                  "pairs": [{"a": "a", "b": "b", "common_items": 3, "only_a": 0, "only_b": 0,
                             "metrics": {"s": {"n": 3, "mean_a": value, "mean_b": value,
                                               "mean_diff": 0.0, "low": 0.0, "high": 0.0,
                                               "p_value": 1.0}}}],
                  "ranking": None, "samples": 5, "seed": 0, "warnings": []}
    row = next(x for x in compare_markdown(comparison).splitlines() if x.startswith("| s |"))
    assert row.split(" | ")[2:4] == [shown, shown], row
    assert f'<td class="n">{shown}</td>' in compare_page(comparison)


def test_command_summary_shows_huge_means_in_exponent_form(tmp_path: Path) -> None:
    """The command's summary line: 4 decimals under 1e6, ``.3e`` from there."""
    out = _run_with_scores(tmp_path, "3e300")
    result = kit.invoke("report", str(out))
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "exact_match" in x)
    assert "mean 1.000e+300" in line and "n=3" in line, line
    assert len(line) < 120, line


def test_plots_of_scores_spanning_a_floats_range(tmp_path: Path) -> None:
    """Scores from -1.7e308 to 1.7e308 (their span is past a float) and a metric whose
    every score is 1e308: report.html is written (a histogram's step was ``inf``, a
    constant's ±0.5 vanished into 1e308: a division by zero), with no ``nan``/``inf``
    coordinate in its plots."""
    spread = [-1.7e308, 1.7e308, *(i * 1e300 for i in range(12))]  # 14 values: 10 bins
    records = _records([{"s": v, "c": 1e308} for v in spread])
    write_reports(tmp_path, records, {}, samples=5)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert not any(f'="{bad}' in page for bad in ("nan", "inf", "-inf"))
    assert page.count("<rect") >= 11  # the histogram bars of both metrics


def test_agreement_of_a_metric_with_a_nan_score_is_undefined() -> None:
    """A score that is not finite has no rank and no rounding: κ and ρ are ``None``
    (shown –), n counts the pairs; it raised ``cannot convert float NaN to integer``."""
    from aieng_eval.report import agreement

    records = _records([{"s": 1.0}, {"s": math.nan}, {"s": 0.0}, {"s": 1.0}])
    assert agreement(records)["s"] == {"n": 4, "kappa": None, "spearman": None}
