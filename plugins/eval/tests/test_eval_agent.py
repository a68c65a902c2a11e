"""Agent mode: each item runs as an agent task, its final answer judged once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import pytest
from aieng_eval import EvalError, ItemResult, games_of, read_results, replay, run_eval

from aieng_core.agent import AgentOptions

AGENT = AgentOptions(max_steps=5)


@pytest.fixture(autouse=True)
def _reset() -> None:
    """Each test starts with no recorded calls and nothing scripted to fail."""
    kit.CALLS.clear()
    kit.AGENT_FAIL.clear()
    kit.TOOL_CALLS.clear()
    kit.FAILING.clear()
    kit.JUDGED.clear()


def dataset(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as a JSON Lines dataset."""
    path = folder / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(pipeline: Path, ds: Path, out: Path, **kwargs: Any) -> Any:
    """run_eval on a fresh test kernel, from sync code (agent mode unless told)."""
    kwargs.setdefault("hash_cache", out.parent / "hashes.json")
    kwargs.setdefault("agent", AGENT)
    return anyio.run(lambda: run_eval(pipeline, ds, out=out, kernel=kit.make_kernel(),
                                      **kwargs))


FLAKY = '\n[components.flaky]\nuse = "flaky-score"\n'


def test_each_answer_is_judged_once_with_the_agent_metrics(tmp_path: Path) -> None:
    """An item's output is the agent's final answer; the pipeline's judges score it once
    (not once per step), on the item's task, reference and context; every item gets the
    agent metrics as scores and an ``agent`` record."""
    ds = dataset(tmp_path, [
        {"id": "sum", "input": "add 40 2", "reference": "42", "context": "40 and 2"},
        {"id": "hi", "input": "hello", "reference": "hello"},
        {"id": "bad", "input": "bad", "reference": "3"}])
    result = run(kit.agent_pipeline_file(tmp_path, extra=FLAKY), ds, tmp_path / "run")
    by_id = {r.id: r for r in result.results}
    assert [r.status for r in result.results] == ["ok", "ok", "ok"]
    assert by_id["sum"].output == "42" and by_id["bad"].output == "gave up"
    assert by_id["sum"].scores == {
        "agent_answered": 1.0, "agent_steps": 2.0, "agent_tokens": 30.0,
        "agent_tool_calls": 1.0, "agent_tool_errors": 0.0, "exact_match": 1.0, "flaky": 1.0}
    assert by_id["sum"].agent == {"status": "answered", "reason": by_id["sum"].agent["reason"],
                                  "steps": 2, "tokens": 30, "cost": 0.0, "tools": ["add"]}
    assert by_id["hi"].scores["agent_steps"] == 1.0 and by_id["hi"].agent["tools"] == []
    assert by_id["bad"].scores["exact_match"] == 0.0
    assert by_id["bad"].scores["agent_tool_errors"] == 1.0  # the invalid call: never run
    assert kit.TOOL_CALLS == [(40, 2)]
    # One judge call per item (the agent made 5 model calls), on the task and its context.
    assert sorted(kit.JUDGED) == [("flaky", "add 40 2", ("40 and 2",)), ("flaky", "bad", ()),
                                  ("flaky", "hello", ())]
    assert by_id["sum"].judges["exact_match"] == "em"
    assert all(r.models == ("llm/agent-1",) for r in result.results)
    assert result.lock["models"] == [{"component": "llm", "model": "agent-1"}]
    assert result.lock["agent"]["max_steps"] == 5
    stored = read_results(tmp_path / "run" / "results.jsonl")
    assert stored["sum"].agent == by_id["sum"].agent  # written and read back
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["agent_steps"]["mean"] == pytest.approx(5 / 3)


def test_an_agent_that_fails_the_task_is_an_ok_item(tmp_path: Path) -> None:
    """An agent out of steps is a result, not a harness error: ``ok``, not answered, its
    (empty) answer judged, and a rerun does not run it again."""
    ds = dataset(tmp_path, [{"id": "s", "input": "spin", "reference": "2"}])
    pipeline = kit.agent_pipeline_file(tmp_path)
    result = run(pipeline, ds, tmp_path / "run", agent=AgentOptions(max_steps=2))
    (record,) = result.results
    assert (record.status, record.output, record.agent["status"]) == ("ok", "", "max_steps")
    assert record.scores["agent_answered"] == 0.0 and record.scores["exact_match"] == 0.0
    assert record.scores["agent_tool_calls"] == 2.0 and not result.failed
    again = run(pipeline, ds, tmp_path / "run", agent=AgentOptions(max_steps=2))
    assert (again.ran, again.skipped, len(kit.TOOL_CALLS)) == (0, 1, 2)


def test_a_blocked_agent_is_blocked_and_a_raising_one_an_error(tmp_path: Path) -> None:
    """A guardrail blocking a model call makes the item ``blocked`` (not judged); an agent
    run that raises is an ``error`` item, retried by the next run."""
    ds = dataset(tmp_path, [{"id": "f", "input": "forbidden words", "reference": "x"},
                            {"id": "a", "input": "add 1 2", "reference": "3"},
                            {"id": "b", "input": "add 3 4", "reference": "7"}])
    pipeline = kit.agent_pipeline_file(tmp_path, stages='["guard_input", "generate"]',
                                       guard=True)
    kit.AGENT_FAIL.add("3 4")
    first = run(pipeline, ds, tmp_path / "run")
    by_id = {r.id: r for r in first.results}
    assert by_id["f"].status == "blocked" and by_id["f"].agent["status"] == "blocked"
    assert "exact_match" not in by_id["f"].scores
    assert [r.id for r in first.failed] == ["b"]
    assert "RuntimeError: agent backend failed" in by_id["b"].error
    assert by_id["b"].agent is None and by_id["a"].scores["exact_match"] == 1.0
    kit.AGENT_FAIL.clear()
    second = run(pipeline, ds, tmp_path / "run")
    assert (second.ran, second.skipped, second.failed) == (1, 2, ())
    assert {r.id: r.output for r in second.results} == {"f": "", "a": "3", "b": "7"}
    assert kit.TOOL_CALLS == [(1, 2), (3, 4)]  # the finished items did not run again
    assert [s["items"] for s in second.lock["sessions"]] == [3, 1]


def test_a_pipeline_running_the_judge_stage_is_refused(tmp_path: Path) -> None:
    """Without a stage list the judge components make the pipeline run the judge stage,
    which the agent would run at every step: refused before anything runs, saying which
    stages to list; nothing ran."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 1 2", "reference": "3"}])
    with pytest.raises(EvalError, match=r'stages = \["generate"\]'):
        run(kit.agent_pipeline_file(tmp_path, stages=""), ds, tmp_path / "run")
    assert kit.TOOL_CALLS == []
    assert read_results(tmp_path / "run" / "results.jsonl") == {}
    guard_only = kit.agent_pipeline_file(tmp_path, name="g", stages='["guard_input"]',
                                         guard=True)
    with pytest.raises(EvalError, match="no generate stage and no agent policy"):
        run(guard_only, ds, tmp_path / "run2")
    refused = kit.invoke(str(kit.agent_pipeline_file(tmp_path, stages="")), str(ds),
                         "--out", str(tmp_path / "run3"), "-q", "--agent")
    assert refused.exit_code == 2 and "runs the judge stage" in refused.output


def test_other_agent_options_refuse_a_resume(tmp_path: Path) -> None:
    """The lockfile records the agent options: a resume with others, or without
    ``--agent``, is refused (naming what differs) unless forced."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 1 2", "reference": "3"}])
    pipeline = kit.agent_pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out)
    with pytest.raises(EvalError, match=r"agent setup \(max_steps 5 -> 3\).*--force"):
        run(pipeline, ds, out, agent=AgentOptions(max_steps=3))
    with pytest.raises(EvalError, match=r"agent setup \(it ran with --agent\)"):
        run(pipeline, ds, out, agent=None)
    assert len(kit.TOOL_CALLS) == 1
    forced = run(pipeline, ds, out, agent=AgentOptions(max_steps=3), force=True)
    assert forced.ran == 1 and forced.lock["agent"]["max_steps"] == 3
    assert list(out.glob("results.jsonl.bak-*"))
    plain = tmp_path / "plain"
    run(kit.pipeline_file(tmp_path), ds, plain, agent=None)
    with pytest.raises(EvalError, match=r"agent setup \(it ran without --agent\)"):
        run(kit.pipeline_file(tmp_path), ds, plain)


def test_an_option_of_another_version_neither_refuses_nor_breaks(tmp_path: Path) -> None:
    """A lockfile whose agent options lack one this version has (an older aieng) resumes;
    one recording an option this version does not know replays without it, warning."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 1 2", "reference": "3"},
                            {"id": "b", "input": "add 3 4", "reference": "7"}])
    pipeline = kit.agent_pipeline_file(tmp_path)
    out = tmp_path / "run"
    run(pipeline, ds, out, limit=1)
    lock_path = out / "lock.json"
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    del lock["agent"]["validate_arguments"]
    lock_path.write_text(json.dumps(lock), encoding="utf-8")
    assert run(pipeline, ds, out).ran == 1
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    lock["agent"]["telepathy"] = True
    lock_path.write_text(json.dumps(lock), encoding="utf-8")
    report = anyio.run(lambda: replay(out, out=tmp_path / "again", kernel=kit.make_kernel(),
                                      hash_cache=tmp_path / "hashes.json"))
    assert report.matches and any("'telepathy'" in line for line in report.drift)


def test_a_replay_runs_the_agent_again(tmp_path: Path) -> None:
    """``replay`` reruns in agent mode with the locked options: the same answers, scores
    and agent metrics."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 1 2", "reference": "3"},
                            {"id": "s", "input": "spin", "reference": "2"}])
    out = tmp_path / "run"
    run(kit.agent_pipeline_file(tmp_path), ds, out, agent=AgentOptions(max_steps=3))
    report = anyio.run(lambda: replay(out, out=tmp_path / "again",
                                      kernel=kit.make_kernel(),
                                      hash_cache=tmp_path / "hashes.json"))
    assert report.matches and report.compared == 2, report
    again = read_results(tmp_path / "again" / "results.jsonl")
    assert again["s"].agent is not None and again["s"].scores["agent_steps"] == 3.0
    assert len(kit.TOOL_CALLS) == 2 * (1 + 3)


def test_failed_judges_of_an_agent_item_run_again_on_the_stored_answer(
        tmp_path: Path) -> None:
    """A judge failing on an agent item (``fallback``) is recorded; a resume with
    ``retry_judge_failures`` judges the stored answer again without running the agent,
    and keeps the agent metrics."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 5 6", "reference": "11"}])
    pipeline = kit.agent_pipeline_file(
        tmp_path, extra=FLAKY + '\n[stage.judge]\non_error = "fallback"\n')
    kit.FAILING.add("add")
    first = run(pipeline, ds, tmp_path / "run")
    (record,) = first.results
    assert record.status == "ok" and [f["judge"] for f in record.judge_failures] == ["flaky"]
    assert "flaky" not in record.scores and record.scores["exact_match"] == 1.0
    kit.FAILING.clear()
    second = run(pipeline, ds, tmp_path / "run", retry_judge_failures=True)
    (rejudged,) = second.results
    assert (second.ran, second.rejudged) == (0, 1)
    assert rejudged.scores["flaky"] == 1.0 and rejudged.judge_failures == []
    assert rejudged.agent == record.agent and rejudged.scores["agent_steps"] == 2.0
    assert kit.TOOL_CALLS == [(5, 6)]


@pytest.mark.parametrize(("policy", "status"), [("skip", "ok"), ("fail", "error")])
def test_the_judge_policy_applies_to_the_final_judging(tmp_path: Path, policy: str,
                                                       status: str) -> None:
    """The judge stage's policy holds for the answer's judging: under ``skip`` a failing
    judge costs the stage its scores (recorded as a judge failure; the agent metrics
    stay), under ``fail`` the item fails."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 5 6", "reference": "11"}])
    pipeline = kit.agent_pipeline_file(
        tmp_path, extra=FLAKY + f'\n[stage.judge]\non_error = "{policy}"\n')
    kit.FAILING.add("add")
    (record,) = run(pipeline, ds, tmp_path / "run").results
    assert record.status == status
    if status == "ok":
        assert [f["judge"] for f in record.judge_failures] == ["flaky"]
        assert "exact_match" not in record.scores and record.scores["agent_answered"] == 1.0
    else:
        assert "flaky judge broke" in record.error


def test_an_ai_judge_of_the_pipeline_generates_through_it_outside_the_budget(
        tmp_path: Path) -> None:
    """An AI judge of the agent's pipeline asks its backend once, after the run: its
    verdict is a score, and its tokens are not the agent's."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 1 2", "reference": "3"}])
    pipeline = kit.agent_pipeline_file(
        tmp_path, extra='\n[components.rate]\nuse = "asking-number"\n')
    (record,) = run(pipeline, ds, tmp_path / "run").results
    assert record.scores["rated"] == 3.0 and record.judge_failures == []
    assert record.scores["agent_tokens"] == 30.0


def test_the_judge_pipeline_scores_the_final_answer(tmp_path: Path) -> None:
    """``--judge-pipeline``'s judges score the agent's answer too, once per item."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 2 2", "reference": "4"}])
    judge = tmp_path / "j.toml"
    judge.write_text('[pipeline]\nname = "j"\n[components.fixed]\nuse = "fixed-score"\n'
                     'metric = "quality"\nvalue = 0.5\n', encoding="utf-8")
    (record,) = run(kit.agent_pipeline_file(tmp_path), ds, tmp_path / "run",
                    judge_pipeline=judge).results
    assert record.scores["quality"] == 0.5 and record.judges["quality"] == "fixed"


def test_the_command_runs_an_agent_evaluation(tmp_path: Path) -> None:
    """``aieng eval run PIPELINE DATASET --agent --max-steps N`` end to end: the summary
    shows the agent metrics, the records carry ``agent``; agent options without
    ``--agent`` are a usage error."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 20 22", "reference": "42"},
                            {"id": "s", "input": "spin", "reference": "2"}])
    pipeline = str(kit.agent_pipeline_file(tmp_path))
    out = tmp_path / "run"
    done = kit.invoke("run", pipeline, str(ds), "--out", str(out), "-q", "--agent",
                      "--max-steps", "2", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout[done.stdout.index('{\n  "run_dir"'):])
    assert summary["ran"] == 2 and summary["metrics"]["agent_answered"]["mean"] == 0.5
    assert summary["metrics"]["exact_match"]["mean"] == 0.5
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    assert lock["agent"]["max_steps"] == 2 and lock["agent"]["plan"] is False
    records = read_results(out / "results.jsonl")
    assert records["s"].agent is not None and records["s"].agent["status"] == "max_steps"
    text = kit.invoke(pipeline, str(ds), "--out", str(out), "--agent", "--max-steps", "2")
    assert text.exit_code == 0 and "ran 0 items, 2 already done" in text.output
    assert "agent_steps" in text.output
    misuse = kit.invoke(pipeline, str(ds), "--out", str(tmp_path / "x"), "--max-steps", "2",
                        "--plan")
    assert misuse.exit_code == 2 and "--max-steps, --plan need(s) --agent" in misuse.output


def test_replan_is_an_agent_option_recorded_in_the_lockfile(tmp_path: Path) -> None:
    """``--agent --plan --replan on_error`` reaches the agent's options and the lockfile
    (a replay runs it again); ``--replan`` needs ``--plan``, and ``--agent``."""
    ds = dataset(tmp_path, [{"id": "a", "input": "add 20 22", "reference": "42"}])
    pipeline = str(kit.agent_pipeline_file(tmp_path))
    out = tmp_path / "run"
    done = kit.invoke("run", pipeline, str(ds), "--out", str(out), "-q", "--agent", "--plan",
                      "--replan", "on_error")
    assert done.exit_code == 0, done.output
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    assert lock["agent"]["plan"] is True and lock["agent"]["replan"] == "on_error"
    no_plan = kit.invoke("run", pipeline, str(ds), "--out", str(tmp_path / "y"), "--agent",
                         "--replan", "on_error")
    assert no_plan.exit_code == 2 and "give --plan too" in no_plan.output
    no_agent = kit.invoke("run", pipeline, str(ds), "--out", str(tmp_path / "z"), "--plan",
                          "--replan", "every_step")
    assert no_agent.exit_code == 2 and "--plan, --replan need(s) --agent" in no_agent.output


def test_records_without_agent_read_and_write_as_before() -> None:
    """A record of a plain run (or an older version) has no ``agent`` key, and reads back
    as ``None``; an agent record round-trips."""
    plain = ItemResult(id="q", status="ok", scores={"m": 1.0})
    assert "agent" not in plain.to_json()
    assert ItemResult.from_json({"id": "q", "status": "ok"}).agent is None
    info = {"status": "loop", "reason": "r", "steps": 4, "tokens": 9, "cost": 0.5,
            "tools": ["add", "add"]}
    record = ItemResult(id="q", status="ok", agent=info)
    assert ItemResult.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_fewer_agent_steps_tokens_and_tool_calls_win_a_comparison() -> None:
    """In the rankings, the agent metrics that count effort are better lower."""
    def record(steps: float, answered: float) -> ItemResult:
        return ItemResult(id="q", status="ok", scores={
            "agent_steps": steps, "agent_tokens": steps * 10, "agent_tool_calls": steps,
            "agent_tool_errors": steps, "agent_answered": answered})

    games = games_of({"a": {"q": record(2, 1)}, "b": {"q": record(5, 0)}})
    assert sorted(games) == [("a", "b", 1.0)] * 5
