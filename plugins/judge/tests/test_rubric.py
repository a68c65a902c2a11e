"""The ``rubric`` judge: scripted graders (ScriptedBackend, a test double), the retry path,
clear failures, constrained decoding requests, pipelines by name, the conformance suite."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import aieng_judge
import pytest
from aieng_hookspecs.types import Request, Sample
from aieng_judge import JudgeFailed, RubricJudge, RubricOptions, length_controlled
from judge_doubles import ScriptedLLMPlugin, rubric_replies

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import EventCapture, ScriptedBackend
from aieng_core.testing.conformance import JudgeSuite, ScoreRanges

pytestmark = pytest.mark.anyio

Register = Callable[..., AbstractContextManager[PluginInfo]]
SAMPLE = Sample(input="What is the capital of France?", output="Paris.", reference="Paris",
                context=("Paris is the capital of France.",))


async def test_scores_every_criterion_from_json() -> None:
    """One request per criterion; each JSON answer becomes ``rubric.<criterion>``."""
    backend = ScriptedBackend(rubric_replies({"accuracy": 5, "completeness": 4,
                                              "clarity": 3}))
    judge = RubricJudge(generate=backend.aieng_generate)
    scores = await judge.aieng_judge(SAMPLE)
    assert scores is not None
    assert {s.name: s.value for s in scores} == {
        "rubric.accuracy": 5.0, "rubric.completeness": 4.0, "rubric.clarity": 3.0}
    assert all(s.rationale and s.judge == "RubricJudge" for s in scores)
    assert len(backend.requests) == 3
    prompt = backend.requests[0].messages[1].content
    assert "[Reference answer]\nParis" in prompt and "[Context]" in prompt
    assert "[Answer to grade]\nParis." in prompt


async def test_constrained_schema_is_sent_and_optional() -> None:
    """With ``constrained`` the score schema (an enum of the digits) travels as
    ``response_schema``; without it, no schema."""
    backend = ScriptedBackend(rubric_replies({"accuracy": 2}))
    await RubricJudge(RubricOptions(criteria=("accuracy",)),
                      generate=backend.aieng_generate).aieng_judge(SAMPLE)
    schema = backend.requests[0].response_schema
    assert schema is not None
    assert schema["properties"]["score"]["enum"] == ["1", "2", "3", "4", "5"]
    assert schema["required"] == ["score", "rationale"]
    plain = ScriptedBackend(rubric_replies({"accuracy": 2}))
    await RubricJudge(RubricOptions(criteria=("accuracy",), constrained=False),
                      generate=plain.aieng_generate).aieng_judge(SAMPLE)
    assert plain.requests[0].response_schema is None


async def test_custom_criteria() -> None:
    """Custom criteria are asked with their own description and scored like built-ins."""
    backend = ScriptedBackend(rubric_replies({"tone": 2}))
    judge = RubricJudge(RubricOptions(criteria=(), custom={"tone": "1 rude, 5 polite"}),
                        generate=backend.aieng_generate)
    scores = await judge.aieng_judge(SAMPLE)
    assert [(s.name, s.value) for s in scores or []] == [("rubric.tone", 2.0)]
    assert "1 rude, 5 polite" in backend.requests[0].messages[1].content


async def test_malformed_answer_is_retried_with_the_error() -> None:
    """A prose answer without a score is asked again once, the parse error fed back; the
    second answer's score counts."""
    fenced = '```json\n{"score": 4, "rationale": "right"}\n```'
    backend = ScriptedBackend(["I think it is pretty good!", fenced])
    judge = RubricJudge(RubricOptions(criteria=("accuracy",)),
                        generate=backend.aieng_generate)
    scores = await judge.aieng_judge(SAMPLE)
    assert [(s.name, s.value, s.rationale) for s in scores or []] == [
        ("rubric.accuracy", 4.0, "right")]
    retry = backend.requests[1].messages
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2].content == "I think it is pretty good!"
    assert "no score found" in retry[3].content and '"score"' in retry[3].content
    assert judge.failures == 0


async def test_out_of_range_then_valid() -> None:
    """An out-of-range score is not clipped: the retry says the range."""
    backend = ScriptedBackend(['{"score": 9, "rationale": "x"}', "Score: 2"])
    judge = RubricJudge(RubricOptions(criteria=("clarity",)), generate=backend.aieng_generate)
    scores = await judge.aieng_judge(SAMPLE)
    assert [s.value for s in scores or []] == [2.0]
    assert "from 1 to 5, got 9" in backend.requests[1].messages[-1].content


async def test_unreadable_twice_gives_no_score_and_reports(
    captured_logs: list[dict[str, Any]],
) -> None:
    """Two unreadable answers: no score (not a made-up one), a warning naming the metric."""
    backend = ScriptedBackend(["Looks fine to me."])
    judge = RubricJudge(RubricOptions(criteria=("accuracy",)), generate=backend.aieng_generate)
    assert await judge.aieng_judge(SAMPLE) is None
    assert len(backend.requests) == 2
    assert judge.failures == 1
    failed = [e for e in captured_logs if e["event"] == "judge.failed"]
    assert failed and failed[0]["metric"] == "rubric.accuracy"
    assert "no score found" in failed[0]["error"]


async def test_failures_are_collected_per_block_even_concurrently() -> None:
    """collect_failures gathers the failures of its own block (a runner's item) only:
    two concurrent blocks, one judge failing in one of them, each see their own."""
    import anyio

    def reply(request: Request) -> str:
        text = request.messages[1].content if len(request.messages) > 1 else ""
        return "no idea" if "bad answer" in text else '{"score": "4", "rationale": "ok"}'

    judge = RubricJudge(RubricOptions(criteria=("accuracy",), retries=0),
                        generate=ScriptedBackend(reply).aieng_generate)
    seen: dict[str, list[JudgeFailed]] = {}

    async def item(output: str) -> None:
        with aieng_judge.collect_failures() as failed:
            await anyio.lowlevel.checkpoint()
            await judge.aieng_judge(Sample(input="q", output=output))
            seen[output] = failed

    async with anyio.create_task_group() as tg:
        tg.start_soon(item, "a bad answer")
        tg.start_soon(item, "a good one")
    assert [(f.judge, f.metric) for f in seen["a bad answer"]] == [
        ("RubricJudge", "rubric.accuracy")]
    assert seen["a good one"] == []


async def test_retries_zero_asks_once() -> None:
    """``retries = 0``: one request, then no score."""
    backend = ScriptedBackend(["nope"])
    judge = RubricJudge(RubricOptions(criteria=("accuracy",), retries=0),
                        generate=backend.aieng_generate)
    assert await judge.aieng_judge(SAMPLE) is None
    assert len(backend.requests) == 1


async def test_partial_failure_keeps_the_readable_criteria() -> None:
    """A criterion that fails is left out; the others keep their scores."""

    def reply(request: Request) -> str:
        if "[Criterion: clarity]" in request.messages[1].content:
            return "clear enough"
        return json.dumps({"score": 4, "rationale": "ok"})

    judge = RubricJudge(generate=ScriptedBackend(reply).aieng_generate)
    scores = await judge.aieng_judge(SAMPLE)
    assert sorted(s.name for s in scores or []) == ["rubric.accuracy", "rubric.completeness"]


async def test_length_controlled_score() -> None:
    """With ``length_penalty``, an answer 4x the reference's length loses 2 x penalty."""
    backend = ScriptedBackend(rubric_replies({"accuracy": 5, "completeness": 5,
                                              "clarity": 5}))
    judge = RubricJudge(RubricOptions(length_penalty=1.0), generate=backend.aieng_generate)
    sample = Sample(input="q", output="one two three four five six seven eight",
                    reference="one two")
    scores = {s.name: s for s in await judge.aieng_judge(sample) or []}
    assert scores["rubric.length_controlled"].value == pytest.approx(3.0)
    assert "8 words vs reference 2" in scores["rubric.length_controlled"].rationale
    # No reference: no length-controlled score.
    no_ref = await judge.aieng_judge(Sample(input="q", output="a b c"))
    assert "rubric.length_controlled" not in {s.name for s in no_ref or []}


def test_length_controlled_function() -> None:
    """Shorter or equal answers keep their score; the result stays on the 1–5 scale."""
    assert length_controlled(4.0, "a b", "a b c d", 1.0) == 4.0
    assert length_controlled(4.0, "a b c d", "a b", 0.5) == pytest.approx(3.5)
    assert length_controlled(2.0, "a " * 1000, "a", 4.0) == 1.0


def test_options_are_validated() -> None:
    """Unknown criteria, clashing or malformed custom names, and an empty rubric fail."""
    with pytest.raises(ValueError, match="unknown criterion 'style'"):
        RubricOptions(criteria=("style",))
    with pytest.raises(ValueError, match=r"unknown criterion 'acuracy' \(did you mean "
                                         r"'accuracy'\?\)"):
        RubricOptions(criteria=("acuracy",))
    with pytest.raises(ValueError, match="built-in criterion"):
        RubricOptions(custom={"accuracy": "x"})
    with pytest.raises(ValueError, match="lower-case"):
        RubricOptions(custom={"Tone Of Voice": "x"})
    with pytest.raises(ValueError, match="no criterion"):
        RubricOptions(criteria=())
    with pytest.raises(TypeError, match="expected a list, got the string"):
        RubricOptions(criteria="accuracy")  # type: ignore[arg-type]


async def test_without_backend_says_how_to_fix() -> None:
    """A judge with neither a pipeline nor ``generate=`` fails with a clear message."""
    with pytest.raises(aieng_judge.JudgeUnavailable, match="no backend"):
        await RubricJudge().aieng_judge(SAMPLE)


def rubric_pipeline(**judge: Any) -> dict[str, Any]:
    """A generate + judge pipeline of ``scripted-llm`` and a ``rubric`` judge by name."""
    return {"pipeline": {"name": "judged", "stages": ["generate", "judge"]},
            "components": {"llm": {"use": "scripted-llm"},
                           "grader": {"use": "rubric", **judge}}}


async def test_in_a_pipeline_by_name(aieng_kernel: Kernel, register_plugin: Register,
                                     captured_events: EventCapture) -> None:
    """Built from a config by name, the judge generates through the pipeline's backend and
    its scores land in the run's result, attributed to the component."""
    llm = ScriptedLLMPlugin(rubric_replies({"accuracy": 4, "tone": 5}, answer="Paris."))
    with register_plugin(aieng_judge, "judge") as info, register_plugin(llm, "llm"):
        assert info.status == "loaded", info.error
        assert {"rubric", "pairwise", "ensemble", "factual", "instructions"} <= set(
            info.components)
        pipeline = aieng_kernel.pipeline(rubric_pipeline(
            criteria=["accuracy"], custom={"tone": "1 rude, 5 polite"}))
        async with pipeline:
            result = await pipeline.run("Capital of France?", reference="Paris")
    assert result.status == "ok"
    assert {(s.name, s.value, s.judge) for s in result.scores} == {
        ("rubric.accuracy", 4.0, "grader"), ("rubric.tone", 5.0, "grader")}
    calls = [e for e in result.events if e.name == "backend.call"]
    assert len(calls) == 3  # the answer, then one request per criterion
    with register_plugin(aieng_judge, "judge"), register_plugin(llm, "llm"):
        again = aieng_kernel.pipeline(pipeline.to_dict())
    assert again.to_dict() == pipeline.to_dict()  # save -> load is the identity


async def test_failure_event_in_the_run(aieng_kernel: Kernel, register_plugin: Register,
                                        captured_events: EventCapture) -> None:
    """An unreadable judge publishes ``judge.failed`` into the run's trace; the run is ok
    and has no score."""
    llm = ScriptedLLMPlugin(lambda request: "no idea")
    with register_plugin(aieng_judge, "judge"), register_plugin(llm, "llm"):
        pipeline = aieng_kernel.pipeline(rubric_pipeline(criteria=["accuracy"]))
        async with pipeline:
            result = await pipeline.run("Capital of France?")
    assert result.status == "ok" and not result.scores
    failed = [e for e in result.events if isinstance(e, JudgeFailed)]
    assert len(failed) == 1
    assert (failed[0].judge, failed[0].metric, failed[0].attempts) == (
        "grader", "rubric.accuracy", 2)
    assert failed[0].run_id == result.run_id


@pytest.mark.parametrize(("options", "key"), [
    ({"criteria": ["style"]}, "grader"),
    ({"max_tokens": 4}, "grader"),
    ({"temprature": 0.5}, "temprature"),
    ({"style": "harsh"}, "grader"),
])
async def test_bad_options_fail_to_load(aieng_kernel: Kernel, register_plugin: Register,
                                        options: dict[str, Any], key: str) -> None:
    """Misspelled keys and invalid values fail at load, naming the component's table."""
    with register_plugin(aieng_judge, "judge"), \
            register_plugin(ScriptedLLMPlugin(lambda r: ""), "llm"), \
            pytest.raises(ConfigError, match=key):
        aieng_kernel.pipeline(rubric_pipeline(**options))


class TestRubricConformance(JudgeSuite):
    """``rubric`` passes the judge conformance suite (scripted grader, a test double)."""

    score_ranges: ClassVar[ScoreRanges] = {f"rubric.{name}": (1.0, 5.0) for name in (
        "accuracy", "completeness", "clarity", "length_controlled")}

    @pytest.fixture
    def component(self) -> RubricJudge:
        """A rubric judge grading through a scripted backend."""
        backend = ScriptedBackend(rubric_replies({"accuracy": 3, "completeness": 4,
                                                  "clarity": 5}))
        return RubricJudge(generate=backend.aieng_generate)


async def test_without_rationale_asks_for_the_score_alone() -> None:
    """``rationale = false``: the schema and the prompt ask for the score only."""
    backend = ScriptedBackend(['{"score": "3"}'])
    judge = RubricJudge(RubricOptions(criteria=("accuracy",), rationale=False),
                        generate=backend.aieng_generate)
    scores = await judge.aieng_judge(SAMPLE)
    assert [(s.value, s.rationale) for s in scores or []] == [(3.0, "")]
    request = backend.requests[0]
    assert request.response_schema is not None
    assert request.response_schema["required"] == ["score"]
    assert '{"score": "<1-5>"}' in request.messages[1].content
    assert "rationale" not in request.messages[1].content


def test_max_tokens_must_fit_the_constrained_answer() -> None:
    """A token budget below the shortest constrained JSON answer is refused (a constrained
    decoder could not finish it); unconstrained, it is the caller's business."""
    with pytest.raises(ValueError, match="at least 28"):
        RubricOptions(max_tokens=20)
    assert RubricOptions(max_tokens=20, rationale=False).max_tokens == 20
    assert RubricOptions(max_tokens=20, constrained=False).max_tokens == 20
    with pytest.raises(ValueError, match="at least 14"):
        aieng_judge.PairwiseOptions(max_tokens=12, rationale=False)
    with pytest.raises(ValueError, match="at least 18"):
        aieng_judge.FactualOptions(max_tokens=10)
