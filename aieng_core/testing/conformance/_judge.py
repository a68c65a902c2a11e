"""The conformance suite of the ``judge`` role."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from hypothesis import given

from aieng_hookspecs.types import Sample, Score

from ...kernel import Kernel
from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ..doubles import ScriptedBackend
from ._base import PROPERTY, STAGE, RoleSuite, check_valid, left_unchanged, unique

__all__ = ["JudgeSuite", "ScoreRanges"]

#: a judge suite's documented ranges: ``{metric: (lowest, highest)}``
ScoreRanges = Mapping[str, tuple[float, float]]


class JudgeSuite(RoleSuite):
    """Conformance of a judge (``aieng_judge``).

    Subclass it with a ``component`` fixture returning the judge::

        class TestMyJudge(JudgeSuite):
            @pytest.fixture
            def component(self) -> MyJudge:
                return MyJudge()

    A judge returns ``None`` ("not applicable": a reference metric without a reference) or
    one or more :class:`Score` values with a name and a finite value, for any sample; the
    names of one answer differ (each score is its metric's), and the sample is left as it
    was given.

    A suite may list the documented range of each metric in ``score_ranges``; every
    score of a listed metric must fall within it.

    Fixture it may override: ``judge_samples`` (samples every test scores, besides the
    generated ones); at least one of them must get scores, or the suite checks nothing.
    """

    role = "judge"
    #: the documented range of each metric the judge scores, ``{name: (lowest, highest)}``
    #: (``-math.inf`` / ``math.inf`` for an open end): a score of a listed metric outside
    #: it fails every test, so set the ranges the judge's documentation promises
    score_ranges: ClassVar[ScoreRanges] = {}
    required_hooks = ("aieng_judge",)
    role_hooks = ("aieng_judge",)

    @pytest.fixture
    def judge_samples(self) -> list[Sample]:
        """Samples with and without references, matching and not, empty and Unicode."""
        return [
            Sample(input="Capital of France?", output="Paris", reference="Paris"),
            Sample(input="Capital of France?", output="The capital is Lyon.",
                   reference="Paris"),
            Sample(input="2 + 2?", output="four", reference=("4", "four")),
            Sample(input="Say something.", output="Something."),
            Sample(input="", output="", reference=""),
            Sample(input="Wo liegt 東京?", output="In Japan — 日本.", reference="Japan",
                   context=("Tokyo (東京) is the capital of Japan.",)),
        ]

    async def judge(self, pipeline: Pipeline, sample: Sample) -> Any:
        """``aieng_judge`` of the component through the dispatcher (failing when it changes
        the sample in place)."""
        gathered = await left_unchanged(
            pipeline.dispatcher.gather("aieng_judge", {"sample": sample}, stage=STAGE),
            "aieng_judge", sample=sample)
        return gathered[0][0] if gathered else None

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A sample of its own (made of ``i``) judged, with a reference it matches."""
        await self.judge(pipeline, Sample(input=f"What is {i} + 0?", output=f"It is {i}.",
                                          reference=f"It is {i}."))

    def check_scores(self, scores: object) -> list[Score]:
        """``None``, or a non-empty list of scores with finite values and distinct names."""
        if scores is None:
            return []
        assert isinstance(scores, (list, tuple)), (
            f"aieng_judge returned {type(scores).__name__}, expected a list of Score")
        assert scores, "aieng_judge returned an empty list; return None when not applicable"
        for score in scores:
            assert isinstance(score, Score), f"{score!r} is not a Score"
            check_valid(score, f"score {score.name!r}")
            assert score.name.strip(), "a score has no name"
            assert math.isfinite(score.value), f"score {score.name!r} is {score.value}"
            bounds = self.score_ranges.get(score.name)
            if bounds is not None:
                low, high = bounds
                assert low <= score.value <= high, (
                    f"score {score.name!r} is {score.value}, outside its documented range "
                    f"[{low}, {high}] (score_ranges)")
        names = [score.name for score in scores]
        assert unique(names), (
            f"score names repeat: {names}; give one score per metric (several values of one "
            "metric, as one per reference, are combined or named apart)")
        return list(scores)

    async def test_scores_the_samples(
        self, conformance_pipeline: Pipeline, judge_samples: list[Sample]
    ) -> None:
        """Each of the fixture's samples gets None or named, finite scores."""
        for sample in judge_samples:
            self.check_scores(await self.judge(conformance_pipeline, sample))

    async def test_scores_some_sample(
        self, conformance_pipeline: Pipeline, judge_samples: list[Sample]
    ) -> None:
        """At least one of the fixture's samples gets scores: a judge that finds none of
        them applicable is never checked here (give ``judge_samples`` it scores)."""
        answers = [self.check_scores(await self.judge(conformance_pipeline, sample))
                   for sample in judge_samples]
        assert any(answers), (
            f"aieng_judge returned None for each of the {len(judge_samples)} judge_samples: "
            "give a judge_samples fixture with samples the judge applies to")

    @PROPERTY
    @given(sample=aist.samples())
    async def test_scores_any_sample(
        self, conformance_pipeline: Pipeline, sample: Sample
    ) -> None:
        """Any sample (no, one or several references; any text) gets None or valid scores."""
        self.check_scores(await self.judge(conformance_pipeline, sample))

    async def test_judges_in_a_pipeline(
        self, aieng_kernel: Kernel, component: object, judge_samples: list[Sample]
    ) -> None:
        """In a ``generate`` + ``judge`` pipeline its scores land in the run's result, each
        attributed to a judge."""
        sample = judge_samples[0]
        backend = ScriptedBackend([sample.output])
        pipeline = self.compose(aieng_kernel, component, stages=["generate", "judge"],
                                others={"llm": backend})
        result = await pipeline.run(sample.input, reference=sample.reference)
        assert result.status == "ok"
        self.check_scores(list(result.scores) or None)
        assert all(score.judge for score in result.scores)

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, judge_samples: list[Sample],
        captured_events: EventCapture,
    ) -> None:
        """Judging never stalls the event loop."""
        async with self.loop_watch(captured_events):
            for sample in judge_samples:
                await self.judge(conformance_pipeline, sample)
