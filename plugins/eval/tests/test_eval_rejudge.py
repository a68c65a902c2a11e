"""``retry_judge_failures`` (``--retry-judge-failures``): on a resume, the judges that
failed on finished items run again on the stored answers, with scripted judge doubles
that fail first and succeed later."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import pytest
from aieng_eval import read_results, run_eval


def run(pipeline: Path, dataset: Path, out: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    """run_eval on a fresh test kernel, from sync code."""
    kwargs.setdefault("hash_cache", out.parent / "hashes.json")
    return anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                      bootstrap_samples=50, **kwargs))


@pytest.fixture(autouse=True)
def _reset() -> None:
    """Each test starts with no recorded calls and no failing word."""
    kit.CALLS.clear()
    kit.JUDGED.clear()
    kit.FAILING.clear()


def dataset(folder: Path, rows: list[dict[str, Any]]) -> Path:
    path = folder / "ds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"id": "a", "input": "alpha flaky"}, {"id": "b", "input": "beta"},
        {"id": "c", "input": "gamma flaky"}]


def pipeline(folder: Path, *, policy: str = "fallback", retriever: bool = False,
             mode: str = "calls") -> Path:
    """The echo backend (a new answer on every call by default), the word-count judge,
    a flaky judge that raises and a flaky AI judge whose verdict cannot be read."""
    text = (f'[pipeline]\nname = "p"\n\n[stage.judge]\non_error = "{policy}"\n\n'
            f'[components.llm]\nuse = "scripted-echo"\nmode = "{mode}"\n\n'
            '[components.wc]\nuse = "word-count"\n\n[components.flaky]\nuse = "flaky-score"\n\n'
            '[components.rate]\nuse = "flaky-asking"\nmetric = "rated"\n')
    if retriever:
        text += '\n[components.docs]\nuse = "scripted-retriever"\n'
    path = folder / "p.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_failed_judges_run_again_on_the_stored_answer(tmp_path: Path) -> None:
    """Without the flag a resume leaves judge failures alone; with it, only the judges
    that failed run again, on the stored answers (the backend answers only the AI judge),
    their scores fill in, and the summary and report no longer count failures."""
    ds, p, out = dataset(tmp_path, ROWS), pipeline(tmp_path), tmp_path / "run"
    kit.FAILING.add("flaky")
    first = {r.id: r for r in run(p, ds, out).results}
    assert {(f["judge"], f["metric"]) for f in first["a"].judge_failures} == {
        ("flaky", ""), ("rate", "rated")}
    assert "flaky" not in first["a"].scores and first["b"].judge_failures == []
    kit.FAILING.clear()
    kit.JUDGED.clear()
    plain = run(p, ds, out)
    assert (plain.ran, plain.skipped, plain.rejudged, kit.JUDGED) == (0, 3, 0, [])
    assert plain.results[0].judge_failures == first["a"].judge_failures
    kit.CALLS.clear()

    again = run(p, ds, out, retry_judge_failures=True)
    assert (again.ran, again.skipped, again.rejudged) == (0, 3, 2)
    assert sorted((m, i) for m, i, _ in kit.JUDGED) == [
        ("flaky", "alpha flaky"), ("flaky", "gamma flaky"),
        ("rated", "alpha flaky"), ("rated", "gamma flaky")]
    assert all(c.startswith("rate: ") for c in kit.CALLS)  # no answer generated again
    by_id = {r.id: r for r in again.results}
    for key in "ac":
        old, new = first[key], by_id[key]
        assert new.output == old.output and new.status == "ok" and new.judge_failures == []
        assert new.scores["flaky"] == 1.0 and "rated" in new.scores
        assert new.scores["words"] == old.scores["words"]
        assert new.judges["flaky"] == "flaky" and new.judge_context is None
    assert by_id["b"] == first["b"]
    assert read_results(out / "results.jsonl")["a"] == by_id["a"]  # on disk, read back
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["judge_failures"] == {} and summary["metrics"]["flaky"]["n"] == 3
    assert "## Judge failures" not in (out / "report.md").read_text(encoding="utf-8")
    assert again.lock["sessions"][-1]["rejudged"] == 2
    assert again.lock["sessions"][-1]["items"] == 0
    kit.JUDGED.clear()
    assert run(p, ds, out, retry_judge_failures=True).rejudged == 0 and kit.JUDGED == []


def test_a_judge_failing_again_is_recorded_again(tmp_path: Path) -> None:
    """A judge that fails on the retry too leaves the item ok with its answer, the other
    judges' scores and a failure for this try."""
    ds, p, out = dataset(tmp_path, ROWS[:1]), pipeline(tmp_path), tmp_path / "run"
    kit.FAILING.add("flaky")
    first = run(p, ds, out).results[0]
    again = run(p, ds, out, retry_judge_failures=True).results[0]
    assert again.status == "ok" and again.output == first.output
    assert again.scores == first.scores
    assert {(f["judge"], f["metric"]) for f in again.judge_failures} == {
        ("flaky", ""), ("rate", "rated")}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["judge_failures"]["flaky"]["failures"] == 1  # this try's, not both


def test_judges_see_the_passages_they_saw_first(tmp_path: Path) -> None:
    """Without a dataset context the judges saw the retrieved passages: the record keeps
    them, and the retry judges the answer on the same passages, retrieving nothing."""
    ds = dataset(tmp_path, ROWS[:1])
    p, out = pipeline(tmp_path, retriever=True), tmp_path / "run"
    kit.FAILING.add("flaky")
    first = run(p, ds, out).results[0]
    assert first.judge_context == ("passage about alpha",)
    assert read_results(out / "results.jsonl")["a"].judge_context == first.judge_context
    kit.FAILING.clear()
    kit.JUDGED.clear()
    again = run(p, ds, out, retry_judge_failures=True).results[0]
    assert {c for _, _, c in kit.JUDGED} == {("passage about alpha",)}
    assert again.judge_failures == [] and again.scores["context_words"] == 3.0


def test_a_retried_judge_sees_the_question_the_input_guards_let_through(
        tmp_path: Path) -> None:
    """The judge stage saw the question after the input guards (redacted); a retried
    judge sees the same, never the raw text the guard took out (which may be someone's
    personal data, sent to an AI judge)."""
    ds, out = dataset(tmp_path, ROWS[:1]), tmp_path / "run"
    p = pipeline(tmp_path)
    p.write_text(p.read_text(encoding="utf-8") + '\n[components.guard]\nuse = "block-word"\n'
                 'word = "alpha"\nredact = true\n', encoding="utf-8")
    kit.FAILING.add("flaky")
    first = run(p, ds, out).results[0]
    assert first.judge_input == "[X] flaky"
    kit.FAILING.clear()
    kit.JUDGED.clear()
    again = run(p, ds, out, retry_judge_failures=True).results[0]
    assert {i for _, i, _ in kit.JUDGED} == {"[X] flaky"}
    assert again.judge_failures == [] and again.judge_input is None


def test_a_record_of_an_older_version_without_its_passages_runs_again(
        tmp_path: Path) -> None:
    """A record written before the passages were kept cannot be judged on them again:
    with a retrieving pipeline the item runs again whole."""
    ds = dataset(tmp_path, ROWS[:2])
    p, out = pipeline(tmp_path, retriever=True), tmp_path / "run"
    kit.FAILING.add("flaky")
    run(p, ds, out)
    results = out / "results.jsonl"
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        line.pop("judge_context", None)
    results.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    kit.FAILING.clear()
    kit.CALLS.clear()
    again = run(p, ds, out, retry_judge_failures=True)
    assert (again.ran, again.skipped, again.rejudged) == (1, 1, 0)
    assert "alpha flaky" in kit.CALLS and again.results[0].judge_failures == []


def test_under_skip_every_judge_of_the_stage_runs_again(tmp_path: Path) -> None:
    """Under ``on_error = "skip"`` a judge that raised cost the whole judge stage its
    scores: the retry runs every judge of the stage again."""
    ds = dataset(tmp_path, ROWS[:1])
    p, out = pipeline(tmp_path, policy="skip", mode="echo"), tmp_path / "run"
    kit.FAILING.add("flaky")
    first = run(p, ds, out).results[0]
    assert first.scores == {} and "flaky" in {f["judge"] for f in first.judge_failures}
    kit.FAILING.clear()
    again = run(p, ds, out, retry_judge_failures=True).results[0]
    assert set(again.scores) == {"words", "context_words", "flaky", "rated"}
    assert again.judge_failures == [] and again.output == first.output


def test_the_judge_pipelines_failed_judges_run_again(tmp_path: Path) -> None:
    """A judge of ``--judge-pipeline`` that failed runs again; a metric name it shares
    with the pipeline's own judge keeps the name it has in the rest of the run."""
    ds = dataset(tmp_path, ROWS[:2])
    p, out = pipeline(tmp_path, mode="echo"), tmp_path / "run"
    judge = tmp_path / "j.toml"
    judge.write_text('[pipeline]\nname = "j"\non_error = "fallback"\n\n[components.llm]\n'
                     'use = "scripted-echo"\n\n[components.flaky2]\nuse = "flaky-score"\n'
                     'value = 0.5\n', encoding="utf-8")
    kit.FAILING.add("flaky")
    first = run(p, ds, out, judge_pipeline=judge)
    assert first.results[1].scores["flaky@flaky2"] == 0.5
    assert {f["judge"] for f in first.results[0].judge_failures} == {"flaky", "flaky2",
                                                                      "rate"}
    kit.FAILING.clear()
    again = run(p, ds, out, judge_pipeline=judge, retry_judge_failures=True).results[0]
    assert again.scores["flaky"] == 1.0 and again.scores["flaky@flaky2"] == 0.5
    assert again.judges["flaky@flaky2"] == "flaky2" and again.judge_failures == []


def test_the_command_line_flag(tmp_path: Path) -> None:
    """``--retry-judge-failures`` says how many items were judged again."""
    ds, p, out = dataset(tmp_path, ROWS), pipeline(tmp_path), tmp_path / "run"
    kit.FAILING.add("flaky")
    first = kit.invoke("run", str(p), str(ds), "--out", str(out), "--quiet")
    assert first.exit_code == 0, first.output
    assert "judge flaky gave no score 2 time(s) on 2 item(s)" in first.output
    kit.FAILING.clear()
    again = kit.invoke("run", str(p), str(ds), "--out", str(out), "--quiet",
                       "--retry-judge-failures")
    assert again.exit_code == 0, again.output
    assert "ran 0 items, 3 already done (2 judged again)" in again.output
    assert "gave no score" not in again.output
    as_json = kit.invoke("run", str(p), str(ds), "--out", str(out), "--json",
                         "--retry-judge-failures")
    assert json.loads(as_json.output)["rejudged"] == 0
