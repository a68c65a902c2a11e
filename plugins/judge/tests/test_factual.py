"""The ``factual`` judge: claims, the LLM path (scripted checker, a test double) and the
NLI path (a tiny hand-weighted BERT built from a config, loaded by transformers)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from aieng_hookspecs.types import Sample
from aieng_judge import FactualJudge, FactualOptions, split_claims
from hypothesis import given
from hypothesis import strategies as st
from judge_doubles import build_nli, support_replies

from aieng_core.testing import ScriptedBackend
from aieng_core.testing.conformance import JudgeSuite, ScoreRanges

pytestmark = pytest.mark.anyio

CONTEXT = ("The capital of France is the city on the river Seine.",
           "Berlin is the capital of Germany.")


def test_split_claims() -> None:
    """Sentences and lines are claims; bullets are stripped; lower-case after a period
    (an abbreviation) does not split."""
    text = ("Paris is the capital. It lies on the Seine! Is it big? e.g. yes.\n"
            "- Berlin is in Germany\n2. Rome is in Italy.\n\n  ")
    assert split_claims(text) == ["Paris is the capital.", "It lies on the Seine!",
                                  "Is it big? e.g. yes.", "Berlin is in Germany",
                                  "Rome is in Italy."]
    assert split_claims("") == []
    assert split_claims("...") == []


@given(st.lists(st.from_regex(r"[A-Z][a-z]{1,8}( [a-z]{1,8}){0,5}", fullmatch=True),
                min_size=1, max_size=6))
def test_split_claims_recovers_joined_sentences(sentences: list[str]) -> None:
    """Sentences joined with ". " split back into exactly those sentences."""
    text = " ".join(f"{s}." for s in sentences)
    assert split_claims(text) == [f"{s}." for s in sentences]


async def test_llm_path_scores_the_supported_fraction() -> None:
    """Each claim is asked about separately; the score is the supported fraction and the
    rationale names the unsupported claims."""
    backend = ScriptedBackend(support_replies(lambda claim: "Paris" in claim))
    judge = FactualJudge(generate=backend.aieng_generate)
    sample = Sample(input="q", output="Paris is the capital of France. Paris has 90 "
                    "million people. Lyon is the capital.", context=CONTEXT)
    scores = await judge.aieng_judge(sample)
    assert scores is not None and len(scores) == 1
    assert scores[0].name == "factual.consistency"
    assert scores[0].value == pytest.approx(2 / 3)
    assert "2/3 claims supported" in scores[0].rationale
    assert "unsupported: 'Lyon is the capital.'" in scores[0].rationale
    assert len(backend.requests) == 3
    assert backend.requests[0].response_schema is not None
    assert "[Context]\n- The capital of France" in backend.requests[0].messages[1].content


async def test_not_applicable_without_context_or_claims() -> None:
    """No context, or an answer without a claim: None."""
    judge = FactualJudge(generate=ScriptedBackend(['{"supported": "yes"}']).aieng_generate)
    assert await judge.aieng_judge(Sample(input="q", output="Paris.")) is None
    assert await judge.aieng_judge(Sample(input="q", output=" ... ", context=CONTEXT)) is None


async def test_unreadable_claims_are_left_out_and_counted() -> None:
    """A claim whose answer cannot be read is not counted either way; when none can be
    read, no score."""

    def reply(request: object) -> str:
        content = request.messages[1].content  # type: ignore[attr-defined]
        return "I cannot tell" if "Lyon" in content else '{"supported": "no"}'

    judge = FactualJudge(FactualOptions(retries=0), generate=ScriptedBackend(reply).aieng_generate)
    scores = await judge.aieng_judge(Sample(input="q", output="Rome is big. Lyon is small.",
                                            context=CONTEXT))
    assert scores is not None
    assert scores[0].value == 0.0
    assert "1 claims unreadable" in scores[0].rationale
    all_bad = FactualJudge(FactualOptions(retries=0),
                           generate=ScriptedBackend(["?"]).aieng_generate)
    assert await all_bad.aieng_judge(Sample(input="q", output="Lyon.", context=CONTEXT)) is None


async def test_max_claims_is_reported() -> None:
    """Claims over ``max_claims`` are not checked, and the rationale says so."""
    backend = ScriptedBackend(['{"supported": "yes"}'])
    judge = FactualJudge(FactualOptions(max_claims=2), generate=backend.aieng_generate)
    scores = await judge.aieng_judge(Sample(input="q", output="A a. B b. C c. D d.",
                                            context=CONTEXT))
    assert scores is not None and scores[0].value == 1.0
    assert "2 claims over max_claims not checked" in scores[0].rationale
    assert len(backend.requests) == 2


@pytest.fixture(scope="module")
def nli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NLI model whose entailment is high exactly for pairs mentioning Paris."""
    pytest.importorskip("transformers")
    return build_nli(tmp_path_factory.mktemp("nli"))


async def test_nli_path(nli_dir: Path) -> None:
    """With ``nli_model_path`` each claim gets the model's entailment probability; the
    supported fraction uses the threshold, and no request is sent to a backend."""
    backend = ScriptedBackend(["never asked"])
    judge = FactualJudge(FactualOptions(nli_model_path=str(nli_dir), batch_size=1),
                         generate=backend.aieng_generate)
    sample = Sample(input="q", output="Paris is the capital of France. Berlin is a large "
                    "city.", context=("The capital of France is a city on the river Seine.",))
    scores = {s.name: s for s in await judge.aieng_judge(sample) or []}
    assert scores["factual.consistency"].value == 0.5
    assert "unsupported: 'Berlin is a large city.'" in scores["factual.consistency"].rationale
    entailment = scores["factual.entailment"]
    assert entailment.value == pytest.approx((0.99 + 0.21) / 2, abs=0.01)
    assert "0.99, 0.21" in entailment.rationale
    assert backend.requests == []
    assert judge.nli is not None and judge.nli.entailment_index == 0


async def test_nli_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    """A path that is not a model folder fails with how to get one."""
    judge = FactualJudge(FactualOptions(nli_model_path=str(tmp_path / "absent")))
    with pytest.raises(FileNotFoundError, match="No NLI model ships on PyPI"):
        await judge.aieng_judge(Sample(input="q", output="A claim.", context=CONTEXT))


#: the documented scales of the factual judge's scores
_RANGES = {"factual.consistency": (0.0, 1.0), "factual.entailment": (0.0, 1.0)}


class TestFactualLLMConformance(JudgeSuite):
    """``factual`` (LLM path) passes the judge conformance suite."""

    score_ranges: ClassVar[ScoreRanges] = _RANGES

    @pytest.fixture
    def component(self) -> FactualJudge:
        """A factual judge with a scripted checker supporting claims that name Japan."""
        backend = ScriptedBackend(support_replies(lambda claim: "Japan" in claim))
        return FactualJudge(generate=backend.aieng_generate)


class TestFactualNLIConformance(JudgeSuite):
    """``factual`` (NLI path, the tiny model) passes the judge conformance suite without
    blocking the loop (the model runs in a worker thread)."""

    score_ranges: ClassVar[ScoreRanges] = _RANGES

    @pytest.fixture
    def component(self, nli_dir: Path) -> FactualJudge:
        """A factual judge on the tiny NLI model."""
        return FactualJudge(FactualOptions(nli_model_path=str(nli_dir)))
