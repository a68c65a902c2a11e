"""The ``pairwise`` judge: position swap, consistency, games for ranking, the suite."""

from __future__ import annotations

from typing import ClassVar

import pytest
from aieng_hookspecs.types import Sample
from aieng_judge import (
    JudgeError,
    PairwiseJudge,
    PairwiseVerdict,
    bradley_terry,
    compare,
    games_from_verdicts,
)
from hypothesis import given
from hypothesis import strategies as st
from judge_doubles import pairwise_replies

from aieng_core.testing import ScriptedBackend
from aieng_core.testing.conformance import JudgeSuite, ScoreRanges

pytestmark = pytest.mark.anyio


def by_length(first: str, second: str) -> str:
    """A fair judge preferring the longer answer, whatever the order."""
    if len(first) == len(second):
        return "tie"
    return "A" if len(first) > len(second) else "B"


async def test_consistent_preference_wins() -> None:
    """A judge that prefers the same answer in both orders gives a consistent win."""
    backend = ScriptedBackend(pairwise_replies(by_length))
    verdict = await compare("q", "a long detailed answer", "short",
                            generate=backend.aieng_generate)
    assert (verdict.winner, verdict.consistent) == ("a", True)
    assert (verdict.forward, verdict.backward) == ("a", "a")
    reverse = await compare("q", "short", "a long detailed answer",
                            generate=backend.aieng_generate)
    assert (reverse.winner, reverse.consistent) == ("b", True)
    # Both orders were asked: the answers swap places in the other request (the two are
    # asked at once, so they may reach the backend in either order: trio's order varies).
    asked = sorted(r.messages[1].content for r in backend.requests[:2])
    forward = [text for text in asked if "[Answer A]\na long" in text]
    backward = [text for text in asked if "[Answer A]\nshort" in text]
    assert len(forward) == len(backward) == 1
    assert forward[0].index("[Answer A]\na long") < forward[0].index("[Answer B]\nshort")
    assert backward[0].index("[Answer A]\nshort") < backward[0].index("[Answer B]\na long")


async def test_position_bias_becomes_an_inconsistent_tie() -> None:
    """A judge that always picks the first answer shown yields a tie, flagged inconsistent."""
    backend = ScriptedBackend(pairwise_replies(lambda first, second: "A"))
    verdict = await compare("q", "x", "y", generate=backend.aieng_generate)
    assert (verdict.winner, verdict.consistent) == ("tie", False)
    assert (verdict.forward, verdict.backward) == ("a", "b")
    assert "A first: a" in verdict.rationale and "B first: b" in verdict.rationale


@given(first=st.sampled_from(["A", "B", "tie"]), second=st.sampled_from(["A", "B", "tie"]))
async def test_verdict_is_consensus_or_tie(first: str, second: str) -> None:
    """For any pair of answers: the verdict is their common one (in a/b terms) or a tie
    with consistent=False."""
    replies = iter([first, second])
    backend = ScriptedBackend(lambda request: next(replies))
    judge = PairwiseJudge(generate=backend.aieng_generate)
    verdict = await judge.compare("q", "x", "y")
    mapped = {"A": "a", "B": "b", "tie": "tie"}
    forward = mapped[first]
    backward = {"A": "b", "B": "a", "tie": "tie"}[second]
    assert verdict.consistent is (forward == backward)
    assert verdict.winner == (forward if forward == backward else "tie")


async def test_unreadable_raises_judge_error() -> None:
    """When an order's answer cannot be read after the retry, compare raises JudgeError
    and the component gives no score."""
    backend = ScriptedBackend(["who knows"])
    with pytest.raises(JudgeError, match="could not be read"):
        await compare("q", "x", "y", generate=backend.aieng_generate)
    judge = PairwiseJudge(generate=backend.aieng_generate)
    assert await judge.aieng_judge(Sample(input="q", output="x", reference="y")) is None


async def test_retry_recovers_a_verdict() -> None:
    """A malformed first answer is retried; the retried answer counts."""
    replies = iter(["hmm", '{"winner": "B", "rationale": "r"}', "Winner: A"])
    backend = ScriptedBackend(lambda request: next(replies))
    verdict = await PairwiseJudge(generate=backend.aieng_generate).compare("q", "x", "y")
    # Requests run concurrently: whichever got "hmm" retried; both orders have a verdict.
    assert len(backend.requests) == 3
    assert isinstance(verdict, PairwiseVerdict)


async def test_component_scores_output_against_reference() -> None:
    """As a judge: output vs (first) reference; win 1.0 / tie 0.5 / loss 0.0, and the
    consistency flag; no reference, no score."""
    judge = PairwiseJudge(generate=ScriptedBackend(pairwise_replies(by_length)).aieng_generate)
    win = await judge.aieng_judge(Sample(input="q", output="much longer", reference=("s",
                                                                                      "t")))
    assert [(s.name, s.value) for s in win or []] == [("pairwise.win", 1.0),
                                                      ("pairwise.consistent", 1.0)]
    loss = await judge.aieng_judge(Sample(input="q", output="s", reference="much longer"))
    assert [s.value for s in loss or []] == [0.0, 1.0]
    tie = await judge.aieng_judge(Sample(input="q", output="ab", reference="cd"))
    assert [s.value for s in tie or []] == [0.5, 1.0]
    assert await judge.aieng_judge(Sample(input="q", output="x")) is None


def test_games_from_verdicts() -> None:
    """Verdicts become ranking games; inconsistent ones are ties or dropped."""
    win = PairwiseVerdict(winner="a", consistent=True)
    loss = PairwiseVerdict(winner="b", consistent=True)
    flip = PairwiseVerdict(winner="tie", consistent=False)
    records = [("m1", "m2", win), ("m2", "m3", loss), ("m1", "m3", flip)]
    assert games_from_verdicts(records) == [("m1", "m2", 1.0), ("m2", "m3", 0.0),
                                            ("m1", "m3", 0.5)]
    assert games_from_verdicts(records, inconsistent="drop") == [("m1", "m2", 1.0),
                                                                 ("m2", "m3", 0.0)]
    with pytest.raises(ValueError, match="inconsistent"):
        games_from_verdicts(records, inconsistent="keep")  # type: ignore[arg-type]


async def test_tournament_ranks_by_length() -> None:
    """A round robin judged by a length-preferring double, fed to Bradley–Terry, ranks the
    systems by answer length."""
    systems = {"terse": "ok", "medium": "a fair answer", "verbose": "a very long answer " * 3}
    backend = ScriptedBackend(pairwise_replies(by_length))
    names = sorted(systems)
    records = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            verdict = await compare("q", systems[a], systems[b],
                                    generate=backend.aieng_generate)
            records.append((a, b, verdict))
    ratings = bradley_terry(games_from_verdicts(records))
    assert sorted(ratings, key=ratings.__getitem__) == ["terse", "medium", "verbose"]


class TestPairwiseConformance(JudgeSuite):
    """``pairwise`` passes the judge conformance suite (scripted judge, a test double)."""

    score_ranges: ClassVar[ScoreRanges] = {"pairwise.win": (0.0, 1.0),
                                           "pairwise.consistent": (0.0, 1.0)}

    @pytest.fixture
    def component(self) -> PairwiseJudge:
        """A pairwise judge preferring longer answers, through a scripted backend."""
        return PairwiseJudge(generate=ScriptedBackend(pairwise_replies(by_length)).aieng_generate)
