"""Every judge passes the kit's judge conformance suite; the judges score in pipelines
(from a TOML file, through the plugin's entry point module), with the documented
multi-reference policy, and reject bad options naming the key."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import aieng_metrics
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Sample
from aieng_metrics import (
    BleuJudge,
    BleuOptions,
    ChrfJudge,
    ChrfOptions,
    EmbeddingCosineJudge,
    ExactMatchJudge,
    FunctionalCorrectnessJudge,
    FunctionalCorrectnessOptions,
    NormalizationOptions,
    PerplexityJudge,
    RetrievalJudge,
    RougeJudge,
    RougeOptions,
    TokenF1Judge,
    cosine,
    rouge,
    sentence_bleu,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_strategies import reference_lists, texts

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import HashEmbedder, ScriptedBackend
from aieng_core.testing.conformance import JudgeSuite, ScoreRanges

Register = Callable[..., AbstractContextManager[PluginInfo]]


class TestExactMatch(JudgeSuite):
    """``exact-match`` with SQuAD normalization."""

    score_ranges: ClassVar[ScoreRanges] = {"exact_match": (0.0, 1.0)}

    @pytest.fixture
    def component(self) -> ExactMatchJudge:
        """The default exact-match judge."""
        return ExactMatchJudge()


class TestTokenF1(JudgeSuite):
    """``token-f1`` with NFKC on."""

    score_ranges: ClassVar[ScoreRanges] = {"token_f1": (0.0, 1.0)}

    @pytest.fixture
    def component(self) -> TokenF1Judge:
        """Token F1 with NFKC normalization."""
        return TokenF1Judge(NormalizationOptions(nfkc=True))


class TestBleu(JudgeSuite):
    """``bleu`` with its sacrebleu defaults."""

    score_ranges: ClassVar[ScoreRanges] = {"bleu": (0.0, 100.0)}

    @pytest.fixture
    def component(self) -> BleuJudge:
        """Sentence BLEU."""
        return BleuJudge()


class TestChrfPlusPlus(JudgeSuite):
    """``chrf`` with word bigrams (chrF++)."""

    score_ranges: ClassVar[ScoreRanges] = {"chrf": (0.0, 100.0)}

    @pytest.fixture
    def component(self) -> ChrfJudge:
        """chrF++."""
        return ChrfJudge(ChrfOptions(word_order=2))


class TestRouge(JudgeSuite):
    """``rouge`` with every variant, precision and recall reported."""

    score_ranges: ClassVar[ScoreRanges] = {
        f"{kind}{part}": (0.0, 1.0) for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum")
        for part in ("", "_precision", "_recall")}

    @pytest.fixture
    def component(self) -> RougeJudge:
        """ROUGE-1/2/L/Lsum with P, R and F."""
        return RougeJudge(RougeOptions(types=("rouge1", "rouge2", "rougeL", "rougeLsum"),
                                       report="prf"))


class TestPerplexity(JudgeSuite):
    """``perplexity`` (samples without log-probabilities: not applicable)."""

    score_ranges: ClassVar[ScoreRanges] = {"mean_nll": (0.0, math.inf),
                                           "perplexity": (1.0, math.inf),
                                           "bits_per_byte": (0.0, math.inf)}

    @pytest.fixture
    def component(self) -> PerplexityJudge:
        """The perplexity judge."""
        return PerplexityJudge()

    @pytest.fixture
    def judge_samples(self) -> list[Sample]:
        """The suite's samples plus ones carrying log-probabilities."""
        return [Sample(input="q", output="ab", metadata={"logprobs": [
                    {"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.5}]}),
                Sample(input="q", output="xyz", metadata={"logprobs": [-0.1, -2.0]}),
                Sample(input="q", output="", metadata={"logprobs": [-800.0]}),
                Sample(input="q", output="no logprobs")]


class TestRetrieval(JudgeSuite):
    """``retrieval`` on rankings in the sample's metadata."""

    score_ranges: ClassVar[ScoreRanges] = {name: (0.0, 1.0) for name in (
        "ndcg@10", "mrr@10", "recall@10", "average_precision")}

    @pytest.fixture
    def component(self) -> RetrievalJudge:
        """The retrieval judge at k = 10."""
        return RetrievalJudge()

    @pytest.fixture
    def judge_samples(self) -> list[Sample]:
        """A ranking with graded qrels, an empty one, and a sample without any."""
        return [Sample(input="q", output="", metadata={"ranked": ["a", "b", "c"],
                                                       "qrels": {"c": 2, "z": 1}}),
                Sample(input="q", output="", metadata={"ranked": [], "qrels": {}}),
                Sample(input="q", output="x")]


class TestEmbeddingCosine(JudgeSuite):
    """``embedding-cosine`` over the kit's hashing embedder double."""

    score_ranges: ClassVar[ScoreRanges] = {"embedding_cosine": (-1.0, 1.0)}

    @pytest.fixture
    def component(self) -> EmbeddingCosineJudge:
        """The judge with the HashEmbedder double injected."""
        return EmbeddingCosineJudge(embedder=HashEmbedder().aieng_embed)


class TestFunctionalCorrectness(JudgeSuite):
    """``functional-correctness`` with small limits (every sample is a real process)."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> FunctionalCorrectnessJudge:
        """Two-second, 256 MiB cases."""
        return FunctionalCorrectnessJudge(
            FunctionalCorrectnessOptions(timeout_s=2.0, memory_mb=256), tmp_root=str(tmp_path))

    @pytest.fixture
    def judge_samples(self) -> list[Sample]:
        """Code passing, failing and broken, and a sample without tests."""
        add = "def add(a, b):\n    return a + b\n"
        return [Sample(input="q", output=add, reference="assert add(1, 2) == 3"),
                Sample(input="q", output=add, reference=("assert add(1, 1) == 3", "pass")),
                Sample(input="q", output="def add(", reference="assert add(1, 2) == 3"),
                Sample(input="q", output=add)]


# -- behaviour -----------------------------------------------------------------------------


def test_multiple_references_take_the_best() -> None:
    """Exact match, token F1 and ROUGE take the best reference; BLEU uses all of them as
    its definition says; no reference is not applicable."""
    sample = Sample(input="q", output="the cat sat on the mat",
                    reference=("a dog", "The cat sat on the mat.", "cat"))
    assert ExactMatchJudge().aieng_judge(sample)[0].value == 1.0  # type: ignore[index]
    assert TokenF1Judge().aieng_judge(sample)[0].value == 1.0  # type: ignore[index]
    rouge_scores = {s.name: s.value for s in RougeJudge().aieng_judge(sample) or []}
    assert rouge_scores["rouge1"] == pytest.approx(
        max(rouge(sample.output, ref)["rouge1"].fmeasure for ref in sample.reference or ()))
    bleu = BleuJudge().aieng_judge(sample)[0].value  # type: ignore[index]
    assert bleu == sentence_bleu(sample.output, list(sample.reference or ()))
    for judge in (ExactMatchJudge(), TokenF1Judge(), BleuJudge(), ChrfJudge(), RougeJudge()):
        assert judge.aieng_judge(Sample(input="q", output="x")) is None


#: each lexical judge's documented scale (the README's table).
_SCALES = {"exact_match": 1.0, "token_f1": 1.0, "bleu": 100.0, "chrf": 100.0, "rouge1": 1.0,
           "rouge2": 1.0, "rougeL": 1.0}


@settings(max_examples=150, deadline=None)
@given(texts(), reference_lists(), st.booleans())
def test_lexical_judges_stay_in_their_scale(output: str, references: list[str],
                                            copy: bool) -> None:
    """Every score lies in its documented scale, and an output equal to a reference gets
    the top of it (when it is words of ASCII letters, which every metric reads); BLEU of
    a perfect answer came out as 100.00000000000004 (sacrebleu's float sum), past 100."""
    if copy:
        output = references[0]
    sample = Sample(input="q", output=output, reference=references)
    for judge in (ExactMatchJudge(), TokenF1Judge(), BleuJudge(), ChrfJudge(), RougeJudge()):
        for score in judge.aieng_judge(sample) or []:
            assert 0.0 <= score.value <= _SCALES[score.name], score
            if copy and re.fullmatch(r"[a-z]{4,}( [a-z]+)*", output):
                assert score.value == _SCALES[score.name] or score.name == "rouge2", score


def test_perplexity_and_retrieval_judges() -> None:
    """Perplexity judge reads metadata log-probabilities (bits per byte over the tokens'
    text); the retrieval judge reads a ranking; malformed metadata is named."""
    sample = Sample(input="q", output="ab", metadata={"logprobs": [
        {"token": "a", "logprob": math.log(0.5)}, {"token": "b", "logprob": math.log(0.5)}]})
    scores = {s.name: s.value for s in PerplexityJudge().aieng_judge(sample) or []}
    assert scores == pytest.approx({"mean_nll": math.log(2), "perplexity": 2.0,
                                    "bits_per_byte": 1.0})
    with pytest.raises(ValueError, match="#0 is invalid"):
        PerplexityJudge().aieng_judge(Sample(input="q", output="", metadata={"logprobs": ["x"]}))
    ranked = Sample(input="q", output="", metadata={"ranked": ["b", "a"], "qrels": {"a": 1}})
    scores = {s.name: s.value for s in RetrievalJudge().aieng_judge(ranked) or []}
    assert scores == pytest.approx({"ndcg@10": 1 / math.log2(3), "mrr@10": 0.5,
                                    "recall@10": 1.0, "average_precision": 0.5})
    with pytest.raises(ValueError, match="ranked"):
        RetrievalJudge().aieng_judge(Sample(input="q", output="",
                                            metadata={"ranked": "ab", "qrels": {}}))
    # A run's results hold tuples: a tuple ranking is the same ranking.
    as_tuple = Sample(input="q", output="", metadata={"ranked": ("b", "a"), "qrels": {"a": 1}})
    assert {s.name: s.value for s in RetrievalJudge().aieng_judge(as_tuple) or []} == scores


def test_perplexity_judge_leaves_out_overflowing_scores() -> None:
    """Log-probabilities near the float limit over one byte of text: perplexity and bits
    per byte both overflow a float, so the judge reports the mean NLL alone (a Score
    holds finite values only), not a ValueError."""
    sample = Sample(input="q", output="a", metadata={"logprobs": [
        {"token": "a", "logprob": -1.2e308}, {"token": "", "logprob": -1.2e308}]})
    scores = {s.name: s.value for s in PerplexityJudge().aieng_judge(sample) or []}
    assert scores == pytest.approx({"mean_nll": 1.2e308})


@pytest.mark.anyio
async def test_embedding_cosine_through_the_pipeline_context(aieng_kernel: Kernel) -> None:
    """In a pipeline, the judge embeds with the pipeline's embedding component (the
    HashEmbedder double): its score is the cosine of the double's vectors."""
    embedder = HashEmbedder()
    pipeline = aieng_kernel.compose(
        {"llm": ScriptedBackend(["red apples and green pears"]), "embed": embedder,
         "judge": EmbeddingCosineJudge()}, stages=["generate", "judge"])
    result = await pipeline.run("fruit?", reference=("blue sky", "green pears and red wine"))
    [score] = result.scores
    expected = max(cosine(embedder.vector("red apples and green pears"), embedder.vector(r))
                   for r in ("blue sky", "green pears and red wine"))
    assert score.name == "embedding_cosine" and score.judge == "judge"
    assert score.value == pytest.approx(expected) and score.value > 0.5
    assert embedder.calls == 1


@pytest.mark.anyio
async def test_embedding_cosine_without_embedder_says_so() -> None:
    """Outside a pipeline and without an embedder, the judge names the two ways out."""
    with pytest.raises(LookupError, match="pass embedder="):
        await EmbeddingCosineJudge().aieng_judge(Sample(input="q", output="a", reference="b"))


class Scripted:
    """A test plugin offering the ``scripted`` backend double, answering ``answer``."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        """Offer ``scripted``."""
        registry.add("scripted", lambda: ScriptedBackend([self.answer]))


PIPELINE_TOML = """
[pipeline]
name = "graded"
stages = ["generate", "judge"]

[components.llm]
use = "scripted"

[components.em]
use = "exact-match"
drop_articles = false

[components.f1]
use = "token-f1"

[components.bleu]
use = "bleu"
smooth_method = "floor"

[components.chrf]
use = "chrf"
word_order = 2

[components.rouge]
use = "rouge"
types = ["rouge1", "rougeL"]
report = "prf"
"""


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_judges_in_a_toml_pipeline(aieng_kernel: Kernel, register_plugin: Register,
                                         tmp_path: Path) -> None:
    """The plugin module registers its judges; a TOML pipeline using them by name with
    options scores a run, each score attributed to its component."""
    path = tmp_path / "graded.toml"
    path.write_text(PIPELINE_TOML, encoding="utf-8")
    with register_plugin(aieng_metrics, "metrics") as info, \
            register_plugin(Scripted("The cat sat on the mat."), "scripted"):
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.load_pipeline(path)
    result = await pipeline.run("Where did the cat sit?", reference="the cat sat on the mat")
    scores = {(s.judge, s.name): s.value for s in result.scores}
    assert scores[("em", "exact_match")] == 1.0
    assert scores[("f1", "token_f1")] == 1.0
    assert scores[("bleu", "bleu")] == pytest.approx(
        sentence_bleu("The cat sat on the mat.", "the cat sat on the mat",
                      smooth_method="floor"))
    assert ("chrf", "chrf++") in scores
    assert {name for judge, name in scores if judge == "rouge"} == {
        "rouge1", "rouge1_precision", "rouge1_recall", "rougeL", "rougeL_precision",
        "rougeL_recall"}


@pytest.mark.anyio
async def test_bad_options_are_named(aieng_kernel: Kernel, register_plugin: Register) -> None:
    """An unknown ROUGE variant, an unknown smoothing and a misspelled key fail to load,
    naming the component's key."""
    with register_plugin(aieng_metrics, "metrics"):
        for options, message in (({"use": "rouge", "types": ["rouge7x"]}, "rouge7x"),
                                 ({"use": "bleu", "smooth_method": "magic"}, "smooth_method"),
                                 ({"use": "exact-match", "lower_case": True}, "lower_case")):
            config = {"pipeline": {"name": "bad", "stages": ["judge"]},
                      "components": {"j": options}}
            with pytest.raises(ConfigError, match=message):
                aieng_kernel.pipeline(config)
    with pytest.raises(ValueError, match="at least one ROUGE variant"):
        RougeOptions(types=())
    with pytest.raises(ValueError, match="smooth_method"):
        BleuOptions(smooth_method="magic")  # type: ignore[arg-type]
