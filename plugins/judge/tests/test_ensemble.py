"""The ``ensemble`` judge: panels of models × prompt styles, aggregation and spread."""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import aieng_judge
import anyio
import pytest
from aieng_hookspecs import ComponentRegistry, blocking, hookimpl
from aieng_hookspecs.types import Request, Sample, Score, unchecked
from aieng_judge import EnsembleJudge, EnsembleOptions, RubricJudge, RubricOptions, aggregate
from hypothesis import given
from hypothesis import strategies as st
from judge_doubles import rubric_replies

from aieng_core import Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import ScriptedBackend
from aieng_core.testing.conformance import JudgeSuite, ScoreRanges

pytestmark = pytest.mark.anyio

Register = Callable[..., AbstractContextManager[PluginInfo]]
SAMPLE = Sample(input="What is 2 + 2?", output="4", reference="4")


@given(st.lists(st.integers(1, 5).map(float), min_size=1, max_size=9))
def test_aggregates_lie_within_the_votes(values: list[float]) -> None:
    """Mean, median and majority all lie between the lowest and highest vote; majority
    is one of the votes and the most common one."""
    for how in ("mean", "median", "majority"):
        assert min(values) <= aggregate(values, how) <= max(values)
    majority = aggregate(values, "majority")
    assert values.count(majority) == max(values.count(v) for v in values)


def test_aggregate_examples_and_errors() -> None:
    """Textbook values; a tie between modes goes to the lower; bad input is refused."""
    assert aggregate([1.0, 2.0, 6.0], "mean") == 3.0
    assert aggregate([1.0, 2.0, 6.0, 5.0], "median") == 3.5
    assert aggregate([4.0, 2.0, 4.0, 2.0, 5.0], "majority") == 2.0
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], "mean")
    with pytest.raises(ValueError, match="mean, median or majority"):
        aggregate([1.0], "mode")


def by_style(scores: dict[str, int]) -> Callable[[Request], str]:
    """A grader whose score depends on the prompt style (read from the system prompt)."""
    styles = {"impartial": "default", "strict": "strict", "comparing": "reference"}

    def reply(request: Request) -> str:
        system = request.messages[0].content
        style = next(s for key, s in styles.items() if key in system)
        return rubric_replies({"accuracy": scores[style]})(request)

    return reply


async def test_panel_of_styles_median_and_spread() -> None:
    """Three prompt styles score 5, 3 and 4: median 4, spread = population std."""
    backend = ScriptedBackend(by_style({"default": 5, "strict": 3, "reference": 4}))
    judge = EnsembleJudge(EnsembleOptions(), generate=backend.aieng_generate)
    assert len(judge.members) == 3
    scores = {s.name: s for s in await judge.aieng_judge(SAMPLE) or []}
    assert scores["ensemble.rubric.accuracy"].value == 4.0
    spread = scores["ensemble.rubric.accuracy.spread"].value
    assert spread == pytest.approx(statistics.pstdev([5, 3, 4]))
    rationale = scores["ensemble.rubric.accuracy"].rationale
    assert "3/3 judges" in rationale and "default/strict=3" in rationale
    assert len(backend.requests) == 3


async def test_panel_of_models_through_the_pipeline(aieng_kernel: Kernel) -> None:
    """With ``models``, each member asks the backend answering to its model; a member that
    cannot be read is left out and counted."""
    m1 = ScriptedBackend(rubric_replies({"accuracy": 2}), model="m1")
    m2 = ScriptedBackend(rubric_replies({"accuracy": 4}), model="m2")
    m3 = ScriptedBackend(["unreadable"], model="m3")
    judge = EnsembleJudge(EnsembleOptions(models=("m1", "m2", "m3"), styles=("default",),
                                          aggregate="mean"))
    pipeline = aieng_kernel.compose({"panel": judge, "a": m1, "b": m2, "c": m3},
                                    stages=["judge"])
    async with pipeline:
        result = await pipeline.run("What is 2 + 2?")
    scores = {s.name: s for s in result.scores}
    assert scores["ensemble.rubric.accuracy"].value == 3.0
    assert scores["ensemble.rubric.accuracy"].judge == "panel"
    assert "2/3 judges: m1/default=2, m2/default=4" in scores[
        "ensemble.rubric.accuracy"].rationale
    assert scores["ensemble.rubric.accuracy.spread"].value == 1.0
    assert [r.model for r in m1.requests] == ["m1"] and len(m3.requests) == 2


async def test_members_from_python() -> None:
    """Any judges form a panel; metrics are aggregated name by name."""

    class Fixed:
        def __init__(self, value: float) -> None:
            self.name = f"fixed{value:g}"
            self.value = value

        def aieng_judge(self, sample: Sample) -> list[Score]:
            return [Score(name="custom.metric", value=self.value)]

    judge = EnsembleJudge(EnsembleOptions(aggregate="majority"),
                          members=[Fixed(1.0), Fixed(1.0), Fixed(0.0)])
    scores = {s.name: s.value for s in await judge.aieng_judge(SAMPLE) or []}
    assert scores["ensemble.custom.metric"] == 1.0
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleJudge(members=[])


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_blocking_members_run_off_the_event_loop() -> None:
    """A member whose ``aieng_judge`` is ``@blocking`` runs in a worker thread (as the
    dispatcher would run it); a plain one runs inline."""
    threads: dict[str, int] = {}

    class Member:
        def __init__(self, name: str) -> None:
            self.name = name

        def judge(self, sample: Sample) -> list[Score]:
            threads[self.name] = threading.get_ident()
            return [Score(name="custom.metric", value=1.0)]

    class Plain(Member):
        def aieng_judge(self, sample: Sample) -> list[Score]:
            return self.judge(sample)

    class Heavy(Member):
        @blocking
        def aieng_judge(self, sample: Sample) -> list[Score]:
            return self.judge(sample)

    judge = EnsembleJudge(members=[Plain("plain"), Heavy("heavy")])
    scores = {s.name: s.value for s in await judge.aieng_judge(SAMPLE) or []}
    assert scores["ensemble.custom.metric"] == 1.0
    assert threads["plain"] == threading.get_ident()
    assert threads["heavy"] != threading.get_ident()


async def test_no_member_scores_gives_none() -> None:
    """When every member fails, the ensemble gives no score."""
    backend = ScriptedBackend(["?"])
    judge = EnsembleJudge(EnsembleOptions(styles=("default",), retries=0),
                          generate=backend.aieng_generate)
    assert await judge.aieng_judge(SAMPLE) is None


async def test_by_name(aieng_kernel: Kernel, register_plugin: Register) -> None:
    """``use = "ensemble"`` with models and styles builds the product panel."""

    class Backends:
        @hookimpl
        def aieng_register_components(self, registry: ComponentRegistry) -> None:
            registry.add("m-one", lambda: ScriptedBackend(rubric_replies({"accuracy": 5}),
                                                          model="one"))
            registry.add("m-two", lambda: ScriptedBackend(rubric_replies({"accuracy": 1}),
                                                          model="two"))

    config: dict[str, Any] = {
        "pipeline": {"name": "panel", "stages": ["judge"]},
        "components": {"one": {"use": "m-one"}, "two": {"use": "m-two"},
                       "panel": {"use": "ensemble", "models": ["one", "two"],
                                 "styles": ["default", "strict"], "aggregate": "median"}}}
    with register_plugin(aieng_judge, "judge"), register_plugin(Backends(), "backends"):
        pipeline = aieng_kernel.pipeline(config)
        async with pipeline:
            result = await pipeline.run("q")
    scores = {s.name: s.value for s in result.scores}
    assert scores == {"ensemble.rubric.accuracy": 3.0, "ensemble.rubric.accuracy.spread": 2.0}


def test_options_validated() -> None:
    """Unknown styles and aggregations are refused."""
    with pytest.raises(ValueError, match="unknown prompt style"):
        EnsembleOptions(styles=("gentle",))
    with pytest.raises(ValueError, match="aggregate"):
        EnsembleOptions(aggregate="mode")  # type: ignore[arg-type]


class TestEnsembleConformance(JudgeSuite):
    """``ensemble`` passes the judge conformance suite (scripted panel, test doubles)."""

    score_ranges: ClassVar[ScoreRanges] = {"ensemble.rubric.accuracy": (1.0, 5.0),
                                           "ensemble.rubric.accuracy.spread": (0.0, 2.0)}

    @pytest.fixture
    def component(self) -> EnsembleJudge:
        """A panel of two scripted rubric judges."""
        members = [RubricJudge(RubricOptions(criteria=("accuracy",)), generate=ScriptedBackend(
            rubric_replies({"accuracy": n})).aieng_generate, name=f"g{n}") for n in (2, 5)]
        return EnsembleJudge(members=members)


class ScriptedMemberDouble:
    """A test double of a panel member: returns the scores it is given, as they are (built
    ``unchecked``, so a NaN passes, as from a member that skips validation)."""

    def __init__(self, name: str, *scores: tuple[str, float]) -> None:
        self.name = name
        self.scores = scores

    def aieng_judge(self, sample: Sample) -> list[Score]:
        return [unchecked(Score, name=metric, value=value, rationale="", judge=self.name)
                for metric, value in self.scores]


@pytest.mark.parametrize("how", ["mean", "median", "majority"])
async def test_a_member_naming_one_score_twice_fails_for_it(how: str) -> None:
    """A member giving two ``m`` scores is counted once, as failed for ``m`` (left out
    and counted, as a member giving no score), never twice; its other metrics count."""
    members = [ScriptedMemberDouble("twice", ("m", 1.0), ("m", 1.0), ("other", 2.0)),
               ScriptedMemberDouble("three", ("m", 3.0), ("other", 4.0)),
               ScriptedMemberDouble("five", ("m", 5.0))]
    judge = EnsembleJudge(EnsembleOptions(aggregate=how), members=members)
    scores = {s.name: s for s in await judge.aieng_judge(SAMPLE) or []}
    expected = {"mean": 4.0, "median": 4.0, "majority": 3.0}[how]
    assert scores["ensemble.m"].value == expected
    assert scores["ensemble.m.spread"].value == statistics.pstdev([3.0, 5.0])
    assert scores["ensemble.m"].rationale.startswith("2/3 judges: three=3, five=5;")
    assert "twice" in scores["ensemble.m"].rationale.split(";")[-1]
    assert scores["ensemble.other"].value == aggregate([2.0, 4.0], how)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_a_member_giving_a_non_finite_score_fails_for_it(bad: float) -> None:
    """A non-finite value makes its member failed for that metric, not a NaN aggregate
    (nor a crash building the ensemble's own score)."""
    members = [ScriptedMemberDouble("bad", ("m", bad)), ScriptedMemberDouble("two", ("m", 2.0)),
               ScriptedMemberDouble("four", ("m", 4.0))]
    scores = {s.name: s for s in await EnsembleJudge(members=members).aieng_judge(SAMPLE)
              or []}
    assert scores["ensemble.m"].value == 3.0
    assert scores["ensemble.m.spread"].value == 1.0
    assert scores["ensemble.m"].rationale.startswith("2/3 judges: two=2, four=4;")


async def test_a_metric_every_member_failed_gives_no_score() -> None:
    """No member scored ``m`` readably: no ``ensemble.m`` is made up."""
    members = [ScriptedMemberDouble("twice", ("m", 1.0), ("m", 2.0)),
               ScriptedMemberDouble("nan", ("m", math.nan))]
    assert await EnsembleJudge(members=members).aieng_judge(SAMPLE) is None


@given(st.lists(st.lists(st.tuples(st.sampled_from("xyz"), st.integers(1, 5).map(float)),
                         max_size=4), min_size=1, max_size=5))
def test_each_member_counts_at_most_once_per_metric(panel: list[list[tuple[str, float]]]
                                                    ) -> None:
    """For every panel: ``ensemble.<m>`` is the mean of the values of exactly the members
    that gave ``m`` once (computed here by brute force), and absent when there are none."""
    members = [ScriptedMemberDouble(f"j{i}", *scores) for i, scores in enumerate(panel)]
    judge = EnsembleJudge(EnsembleOptions(aggregate="mean"), members=members)
    out = anyio.run(judge.aieng_judge, SAMPLE) or []
    got = {s.name: s.value for s in out}
    for metric in "xyz":
        once = [[v for m, v in scores if m == metric] for scores in panel]
        values = [vs[0] for vs in once if len(vs) == 1]
        if values:
            assert got[f"ensemble.{metric}"] == pytest.approx(sum(values) / len(values))
            assert f"{len(values)}/{len(panel)} judges" in next(
                s.rationale for s in out if s.name == f"ensemble.{metric}")
        else:
            assert f"ensemble.{metric}" not in got
