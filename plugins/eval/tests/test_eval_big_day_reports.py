"""The big day, reports and comparisons: metadata fields of thousands of values (or one
per item), the intervals of many slices, and comparisons of large runs.

Growth is shown with counts (resample draws, table rows, progress calls), never timings.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _evalkit import invoke, sliced_run
from aieng_eval import compare_runs, mean_ci, stats, summarize
from aieng_eval._results import ItemResult
from aieng_eval.html import run_page
from aieng_eval.report import MAX_SLICES, markdown_report
from aieng_eval.stats import mean_cis
from hypothesis import given, settings
from hypothesis import strategies as st


def _records(n: int, field: str, value_of: Any, metrics: int = 2) -> list[ItemResult]:
    return [ItemResult(id=f"i{i}", status="ok", line=i + 1,
                       scores={f"m{k}": float((i + k) % 3 == 0) for k in range(metrics)},
                       metadata={field: value_of(i)}) for i in range(n)]


def _count_draws(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the resampling sequences the bootstraps start (a wrapped
    ``numpy.random.default_rng``: each draws its own resampled indices)."""
    calls = {"draws": 0}
    make = np.random.default_rng

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["draws"] += 1
        return make(*args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", counting)
    return calls


def test_a_field_of_many_values_shows_its_largest_slices(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A field of thousands of values made a slice each (its bootstrap, table row and plot
    row: seconds and megabytes of report). The reports show the 50 largest, in value
    order, and say how many values and items are left out and the option showing them;
    the work does not grow with the values left out."""
    draws = _count_draws(monkeypatch)
    counts = []
    for n in (2_000, 8_000):
        # value v{j} of item i: j = i % (n // 2) -> n // 2 values of 2 items, but v0..v59
        # get a third item each from the end (so the largest slices are known).
        records = _records(n, "topic", lambda i, n=n: f"v{i % (n // 2):05d}")
        records += _records(60, "topic", lambda i: f"v{i:05d}")
        records = [ItemResult(id=f"r{k}", status="ok", line=k + 1, scores=r.scores,
                              metadata=r.metadata) for k, r in enumerate(records)]
        draws["draws"] = 0
        summary = summarize(records, samples=20)
        counts.append(draws["draws"])
        shown = summary["slices"]["topic"]
        assert list(shown) == sorted(shown) and len(shown) == MAX_SLICES == 50
        assert all(group["items"] == 3 for group in shown.values())
        assert summary["slices_left_out"]["topic"] == {
            "values": n // 2, "shown": 50, "items": n + 60 - 150, "unique": False}
        note = (f"The 50 largest of {n // 2} values are shown; the other {n // 2 - 50} "
                f"values ({n + 60 - 150} items) are left out. --max-slices {n // 2} shows "
                "them all.")
        md = markdown_report(summary, {})
        assert note in md and md.count("\n| v0") == 50
        page = run_page(summary, records, {})
        assert escape(note) in page and page.count("<tr><td>v0") == 50
    assert counts[0] == counts[1]


def test_an_id_like_field_is_not_sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field of one value per item (a document id) made as many slices as items: 100k
    table rows and a plot millions of pixels tall. It is not sliced, with a note; a field
    beside it is sliced as before."""
    draws = _count_draws(monkeypatch)
    records = [ItemResult(id=f"i{i}", status="ok", line=i + 1, scores={"em": float(i % 2)},
                          metadata={"doc_id": f"d{i}", "lang": "en" if i % 3 else "fr"})
               for i in range(3_000)]
    summary = summarize(records, samples=20)
    assert set(summary["slices"]) == {"lang"}
    assert summary["slices_left_out"] == {
        "doc_id": {"values": 3_000, "shown": 0, "items": 3_000, "unique": True}}
    assert draws["draws"] == 3  # the metric's interval and the two languages'
    note = ("Not sliced: 3000 values over 3000 items, nearly each item its own (an id?). "
            "--max-slices 3000 shows them.")
    md = markdown_report(summary, {})
    assert "## Slices by `doc_id`" in md and note in md and "| d1 |" not in md
    page = run_page(summary, records, {})
    assert escape(note) in page and "<td>d1</td>" not in page
    assert "em by doc_id" not in page and "em by lang" in page


def test_raising_the_cap_shows_every_value_as_before() -> None:
    """``max_slices`` at the number of values shows each one: the summary of no cap."""
    records = _records(300, "doc_id", lambda i: f"d{i:03d}", metrics=1)
    every = summarize(records, samples=20, max_slices=300)
    assert len(every["slices"]["doc_id"]) == 300 and every["slices_left_out"] == {}
    assert every == {**summarize(records, samples=20, max_slices=10**6), "max_slices": 300}
    assert summarize(records[:40], samples=20)["slices_left_out"] == {}
    with pytest.raises(ValueError, match="max_slices"):
        summarize(records, max_slices=0)


def test_a_summary_of_an_earlier_version_renders() -> None:
    """A summary without ``slices_left_out`` (written before the cap) renders as before."""
    summary = summarize(_records(10, "lang", lambda i: "en"), samples=10)
    del summary["slices_left_out"], summary["max_slices"]
    assert "| en | 10 | 0 |" in markdown_report(summary, {})
    assert "<td>en</td>" in run_page(summary, [], {})


def _reference_ci(values: list[float], samples: int, seed: int) -> tuple[float, ...]:
    """mean_ci as the versions before shared draws computed it, one group at a time."""
    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if data.size == 1 or samples < 1:
        return mean, mean, mean, data.size
    rng = np.random.default_rng(seed)
    block = max(1, (1 << 22) // data.size)
    means = np.empty(samples)
    for start in range(0, samples, block):
        rows = min(block, samples - start)
        means[start:start + rows] = data[rng.integers(0, data.size, size=(rows, data.size))
                                         ].mean(axis=1)
    alpha = (1.0 - 0.95) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, min(float(low), mean), max(float(high), mean), data.size


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.5, -2.0]), min_size=1,
                                max_size=12), min_size=1, max_size=8),
       samples=st.sampled_from([1, 2, 9, 50]), seed=st.integers(0, 5))
def test_shared_draws_give_each_group_its_own_interval_bit_for_bit(
        groups: list[list[float]], samples: int, seed: int) -> None:
    """Groups of equal size share their resampled indices, and each interval is the one
    the group had alone (the draws depend only on the size and the seed)."""
    together = mean_cis(groups, samples=samples, seed=seed)
    for values, ci in zip(groups, together, strict=True):
        assert (ci.mean, ci.low, ci.high, ci.n) == _reference_ci(values, samples, seed)
        assert ci == mean_ci(values, samples=samples, seed=seed)


def test_large_groups_share_draws_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups too large for one block of draws (about 4 million indices) are resampled
    block by block, each block drawn once for all of them, with the intervals of each
    alone."""
    blocks = {"drawn": 0}
    draw = stats._draw

    def counting(*args: Any) -> Any:
        blocks["drawn"] += 1
        return draw(*args)

    monkeypatch.setattr(stats, "_draw", counting)
    rng = np.random.default_rng(1)
    groups = [rng.random(50_000).tolist() for _ in range(3)]
    together = mean_cis(groups, samples=200, seed=4)
    assert blocks["drawn"] == 3  # 200 resamples of 50k: blocks of 83; not 3 per group
    for values, ci in zip(groups, together, strict=True):
        assert (ci.mean, ci.low, ci.high, ci.n) == _reference_ci(values, 200, 4)


def test_the_metrics_of_a_run_share_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics over the same items, and slices of equal size, draw their resamples once:
    3 metrics over 2 slices of 100 items and the run's 200 items are 2 draws, not 9."""
    draws = _count_draws(monkeypatch)
    summarize(_records(200, "half", lambda i: str(i % 2), metrics=3), samples=30)
    assert draws["draws"] == 2


def _run_dir(root: Path, name: str, scores: list[dict[str, float]]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "lock.json").write_text(json.dumps({"format": 1}), encoding="utf-8")
    (folder / "results.jsonl").write_text("".join(
        json.dumps(ItemResult(id=f"i{i}", status="ok", scores=s, line=i + 1).to_json()) + "\n"
        for i, s in enumerate(scores)), encoding="utf-8")
    return folder


def test_compare_reports_the_ranking_resamples_as_they_go(tmp_path: Path) -> None:
    """`compare` of large runs spent minutes in the ranking's bootstraps without a sign of
    life. ``progress`` is called with the resamples done and in all (Elo's then
    Bradley–Terry's), and the comparison is the one without it."""
    a = _run_dir(tmp_path, "a", [{"em": float(i % 2), "f1": i / 40} for i in range(40)])
    b = _run_dir(tmp_path, "b", [{"em": float(i % 3 == 0), "f1": 0.5} for i in range(40)])
    calls: list[tuple[int, int]] = []
    seen = compare_runs([a, b], samples=25, seed=3,
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 50) for done in range(51)]
    assert seen == compare_runs([a, b], samples=25, seed=3)


def test_compare_without_games_reports_no_progress(tmp_path: Path) -> None:
    """Runs without a metric in common play no game: no ranking, no progress."""
    a = _run_dir(tmp_path, "a", [{"em": 1.0}])
    b = _run_dir(tmp_path, "b", [{"f1": 1.0}])
    calls: list[tuple[int, int]] = []
    assert compare_runs([a, b], samples=5, progress=lambda *c: calls.append(c)
                        )["ranking"] is None
    assert calls == []


def test_the_compare_command_takes_quiet(tmp_path: Path) -> None:
    """``aieng eval compare --quiet``, as ``run`` and ``replay`` take it; not on a terminal
    no bar is drawn either way, and the output is the comparison."""
    a = _run_dir(tmp_path, "a", [{"em": float(i % 2)} for i in range(10)])
    b = _run_dir(tmp_path, "b", [{"em": 1.0} for _ in range(10)])
    for quiet in ([], ["--quiet"]):
        result = invoke("compare", str(a), str(b), "--samples", "20", "--json", *quiet)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["ranking"]["games"] == 10
        assert "resamples" not in result.stderr


def test_max_slices_is_an_option_of_run_and_report(tmp_path: Path) -> None:
    """``aieng eval run --max-slices N`` caps the run's reports; ``aieng eval report
    --max-slices N`` rebuilds them with another cap (the default: the run's own)."""
    out = sliced_run(tmp_path, "--max-slices", "1")

    def summary() -> dict[str, Any]:
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))

    assert list(summary()["slices"]["topic"]) == ["t0"]  # 3 items; the others 2
    assert summary()["slices_left_out"]["topic"]["items"] == 6
    assert "--max-slices 4 shows them all" in (out / "report.md").read_text(encoding="utf-8")
    assert invoke("report", str(out), "--samples", "10", "--max-slices", "50").exit_code == 0
    assert len(summary()["slices"]["topic"]) == 4 and summary()["max_slices"] == 50
    result = invoke("report", str(out), "--max-slices", "0")
    assert result.exit_code == 2 and "--max-slices" in result.output


def test_the_reports_list_the_first_hundred_failures() -> None:
    """A run whose backend was down listed every failed item in report.md and
    report.html (100k errors: tens of MB of page). They list the first 100 and say how
    many more there are and where; summary.json keeps every one."""
    rows = []
    for n in (2_000, 8_000):
        records = [ItemResult(id=f"i{i}", status="error", line=i + 1,
                              error="ConnectionError: refused " + "x" * 200)
                   for i in range(n)]
        summary = summarize(records, samples=10)
        assert len(summary["failures"]) == n
        note = (f"… and {n - 100} more failures (the first 100 are shown): every one is in "
                "summary.json's failures and in results.jsonl (status error).")
        md = markdown_report(summary, {})
        page = run_page(summary, records, {})
        assert note in md and escape(note) in page
        rows.append((md.count("\n- `i"), page.count("<tr><td>i")))
    assert rows == [(100, 100), (100, 100)]
    few = summarize(records[:100], samples=10)
    assert "more failures" not in markdown_report(few, {}) + run_page(few, records[:100], {})
