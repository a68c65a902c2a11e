"""Untrusted text in a run's reports and files: a dataset line or a model output (an id,
an error quoting an answer, a slice value) cannot inject markup into ``report.md``,
``compare.md`` or ``report.html``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import _evalkit as kit
import anyio
import pytest
from aieng_eval import ItemResult, run_eval, summarize
from aieng_eval.report import markdown_report

markdown_it = pytest.importorskip("markdown_it")

#: Text a dataset or a model could hold: an image that would be fetched when the report is
#: shown, a link, raw HTML, a code span's end, a table cell's end.
HOSTILE = ("x` ![t](http://evil.test/t.png) [click](http://evil.test) <script>alert(1)"
           "</script> <img src=x onerror=alert(1)> ``` | \\| end")


def _render(markdown: str) -> str:
    return str(markdown_it.MarkdownIt("commonmark").enable("table").render(markdown))


def _hostile_report() -> str:
    results = [
        ItemResult(id="a", status="ok", scores={"em": 1.0}, metadata={"slice": HOSTILE},
                   judge_failures=[{"judge": "grader", "metric": "rubric.accuracy",
                                    "error": f"no score found: got {HOSTILE!r}"}]),
        ItemResult(id=HOSTILE, status="error", error=f"ValueError: {HOSTILE}", line=2),
    ]
    return markdown_report(summarize(results, samples=20), {"pipeline": {"name": HOSTILE}})


def test_markdown_report_shows_hostile_text_as_text() -> None:
    """An id, a slice value, an error and a judge failure quoting an answer that hold an
    image, a link, HTML or a backtick render as the text they are: no element, no URL
    fetched or linked, every table row keeps its cells."""
    html = _render(_hostile_report())
    assert not re.search(r"<(img|a|script)\b", html), html
    assert "evil.test" in html  # shown, as text
    for table in re.findall(r"<table>.*?</table>", html, re.DOTALL):
        widths = {len(re.findall(r"<t[dh]\b", row))
                  for row in re.findall(r"<tr>.*?</tr>", table, re.DOTALL)}
        assert len(widths) == 1, table


def test_compare_markdown_escapes_run_and_metric_names() -> None:
    """compare.md shows run and metric names (folder names, judge names from a pipeline
    file) as text as well."""
    from aieng_eval._compare import compare_markdown

    d = {"n": 2, "mean_a": 0.5, "mean_b": 0.5, "mean_diff": 0.0, "low": 0.0, "high": 0.0,
         "p_value": 1.0}
    comparison = {"samples": 10, "seed": 0, "ranking": None,
                  "pairs": [{"a": "run<img src=x>", "b": "[b](http://evil.test)",
                             "common_items": 2, "only_a": 0, "only_b": 0,
                             "metrics": {HOSTILE: d}}]}
    html = _render(compare_markdown(comparison))
    assert not re.search(r"<(img|a|script)\b", html), html


SECRET = "sk-proj-Zq8Xv2Lr7Tn4Wm1Kc9Bd"
PASSWORD = "hunter2-Pw9x"


def _secret_pipeline(folder: Path) -> Path:
    path = folder / "keyed.toml"
    path.write_text(
        '[pipeline]\nname = "keyed"\n\n[components.llm]\nuse = "scripted-echo"\n'
        f'api_key = "{SECRET}"\nurl = "redis://:{PASSWORD}@cache.internal:6379/0"\n'
        '\n[components.em]\nuse = "exact-match"\n', encoding="utf-8")
    return path


def test_lockfile_and_reports_keep_no_secret(tmp_path: Path) -> None:
    """A component's credential option (``api_key``) and a password in a connection URL
    are written ``***`` in lock.json (the resolved configuration is shared with the
    results); nothing the run writes holds them, and the run itself used them."""
    pipeline = _secret_pipeline(tmp_path)
    dataset = tmp_path / "ds.jsonl"
    dataset.write_text('{"id": "q", "input": "hi", "reference": "hi"}\n', encoding="utf-8")
    out = tmp_path / "run"
    run = anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                     hash_cache=tmp_path / "hashes.json", bootstrap_samples=20))
    assert [r.status for r in run.results] == ["ok"]
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert SECRET not in text and PASSWORD not in text, path.name
    options = json.loads((out / "lock.json").read_text())["pipeline"]["config"]["components"]
    assert options["llm"]["api_key"] == "***"
    assert options["llm"]["url"] == "redis://:***@cache.internal:6379/0"
    assert options["llm"]["mode"] == "echo"  # the rest as it was


def test_replay_of_a_locked_configuration_says_its_secrets_were_left_out(
        tmp_path: Path) -> None:
    """Replaying the locked configuration (the pipeline file is gone) warns that its
    credentials were not kept, naming the options, instead of sending ``***`` silently."""
    from aieng_eval import replay

    pipeline = _secret_pipeline(tmp_path)
    dataset = tmp_path / "ds.jsonl"
    dataset.write_text('{"id": "q", "input": "hi", "reference": "hi"}\n', encoding="utf-8")
    out = tmp_path / "run"
    anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                               hash_cache=tmp_path / "hashes.json", bootstrap_samples=20))
    pipeline.unlink()
    report = anyio.run(lambda: replay(out, kernel=kit.make_kernel(),
                                      hash_cache=tmp_path / "hashes.json"))
    said = "\n".join(report.drift)
    assert "components.llm.api_key" in said and "components.llm.url" in said, said


def test_judge_failures_count_metrics_per_item_not_judgements() -> None:
    """A pairwise judge asks in both orders; when both answers are unreadable it reports
    two failures of ``pairwise.win`` on one item: the summary counts the metric it could
    not give on the item once (``failures`` = (item, metric) pairs), as for any judge."""
    both = [{"judge": "pw", "metric": "pairwise.win", "error": "no verdict (a first)"},
            {"judge": "pw", "metric": "pairwise.win", "error": "no verdict (b first)"}]
    one = [{"judge": "pw", "metric": "pairwise.win", "error": "no verdict (b first)"},
           {"judge": "rb", "metric": "rubric.accuracy", "error": "no score"},
           {"judge": "rb", "metric": "rubric.clarity", "error": "no score"}]
    results = [ItemResult(id="a", status="ok", judge_failures=both),
               ItemResult(id="b", status="ok", judge_failures=one)]
    found = summarize(results, samples=10)["judge_failures"]
    assert {j: (f["failures"], f["items"]) for j, f in found.items()} == {
        "pw": (2, 2), "rb": (2, 1)}
