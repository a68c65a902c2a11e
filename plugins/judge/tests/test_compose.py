"""Judges used the way pipelines and ``aieng eval`` use them: the pairwise verdict mirrored
under swapping any unicode answers, and many judge calls at once on one component, well
and badly formed replies mixed, each score and failure landing on its own sample."""

from __future__ import annotations

import json

import aieng_judge
import anyio
import pytest
from aieng_hookspecs.types import Completion, Request, Sample
from aieng_judge import PairwiseJudge, PairwiseOptions, RubricJudge, RubricOptions
from aieng_judge._prompts import pairwise_messages
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

_SWAP = {"a": "b", "b": "a", "tie": "tie"}


def shown(question: str, a: str, b: str) -> dict[str, tuple[str, str]]:
    """The pairwise prompt of each order, mapped to the answers it shows (first, second)."""
    options = PairwiseOptions()
    found: dict[str, tuple[str, str]] = {}
    for first, second in ((a, b), (b, a)):
        messages = pairwise_messages(criterion=options.criterion, question=question,
                                     first=first, second=second, context=(),
                                     limit=options.max_chars, rationale=options.rationale)
        found[messages[-1].content] = (first, second)
    return found


@settings(max_examples=40, deadline=None)
@given(question=st.text(min_size=1, max_size=30), a=st.text(max_size=40),
       b=st.text(max_size=40), biased=st.booleans())
async def test_pairwise_is_mirrored_under_swapping(question: str, a: str, b: str,
                                                   biased: bool) -> None:
    """compare(q, a, b) and compare(q, b, a) give mirrored winners and the same
    consistency, for a fair judge (the longer answer wins) and a judge always picking the
    answer shown first (every verdict an inconsistent tie)."""
    prompts = shown(question, a, b)

    def reply(request: Request) -> Completion:
        first, second = prompts[request.messages[-1].content]
        if biased:
            winner = "A"
        elif len(first) == len(second):
            winner = "tie"
        else:
            winner = "A" if len(first) > len(second) else "B"
        return Completion(text=json.dumps({"winner": winner, "rationale": "r"}))

    judge = PairwiseJudge(generate=reply)
    forward = await judge.compare(question, a, b)
    backward = await judge.compare(question, b, a)
    assert forward.winner == _SWAP[backward.winner]
    assert forward.consistent == backward.consistent
    if biased:
        assert (forward.winner, forward.consistent) == ("tie", False)
    else:
        assert forward.consistent


async def test_many_rubric_calls_at_once_on_one_judge() -> None:
    """Forty samples judged at once by one rubric judge whose backend answers each with a
    score read from the sample's answer, or with NaN / no number / broken JSON / 9 for the
    malformed ones: every readable score is its own sample's, every other sample gets no
    score and exactly its own judge.failed (collected per item)."""
    bad = ['{"score": NaN}', "I think it is fine.", '{"score": "4", "rationale": "cut',
           '{"score": 9}']
    bad_cut = bad[2]

    async def reply(request: Request) -> str:
        text = request.messages[-1].content
        number = int(text.split("[Answer to grade]\nanswer ")[1].split("\n")[0])
        await anyio.sleep(0.001 * (number % 3))
        if number % 4 == 3:
            return bad[number % len(bad)]
        return json.dumps({"score": str(1 + number % 5), "rationale": f"n{number}"})

    async def generate(request: Request) -> Completion:
        return Completion(text=await reply(request))

    judge = RubricJudge(RubricOptions(criteria=("accuracy",), retries=0), generate=generate)
    scores: dict[int, list[float]] = {}
    failed: dict[int, list[str]] = {}

    async def item(number: int) -> None:
        with aieng_judge.collect_failures() as failures:
            found = await judge.aieng_judge(Sample(input="q", output=f"answer {number}"))
        scores[number] = [s.value for s in found or ()]
        failed[number] = [f.metric for f in failures]

    async with anyio.create_task_group() as group:
        for number in range(40):
            group.start_soon(item, number)
    for number in range(40):
        if number % 4 == 3 and bad[number % len(bad)] != bad_cut:
            assert scores[number] == [], number
            assert failed[number] == ["rubric.accuracy"], number
        elif number % 4 == 3:
            assert scores[number] == [4.0]  # a cut JSON answer is read as documented
        else:
            assert scores[number] == [1.0 + number % 5], number
            assert failed[number] == []
