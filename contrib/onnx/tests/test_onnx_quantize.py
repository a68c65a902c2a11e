"""``ort-int8``: conformance on a tiny exported BERT, and MiniLM's real size and quality."""

from __future__ import annotations

from pathlib import Path

import pytest
from aieng_onnx import (
    MiniLMOnnxEmbedder,
    ModelNotFound,
    OrtInt8Options,
    OrtInt8Quantizer,
    exported,
)

from aieng_core.testing.conformance import QuantizerSuite

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def tiny_export(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT exported to ONNX (a folder with ``model.onnx`` and its tokenizer)."""
    folder, _ = exported(bert_dir, tmp_path_factory.mktemp("tiny-cache"), opset=18)
    return folder


class TestOrtInt8Conformance(QuantizerSuite):
    """``ort-int8`` passes the quantizer suite on a tiny exported BERT."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> OrtInt8Quantizer:
        return OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path / "out")))

    @pytest.fixture
    def model_path(self, tiny_export: Path) -> str:
        return str(tiny_export / "model.onnx")

    @pytest.fixture
    def scheme(self) -> str:
        return "int8"


class TestOrtQ8Conformance(TestOrtInt8Conformance):
    """And with the block-wise ``q8`` scheme."""

    @pytest.fixture
    def scheme(self) -> str:
        return "q8"


async def test_blockwise_schemes_on_a_causal_lm(tmp_path_factory: pytest.TempPathFactory,
                                                tmp_path: Path) -> None:
    """``q8`` / ``q4`` on a causal export: ``MatMulNBits`` files of their own, smaller than
    fp32's, with the perplexity before and after measured (q8 within 0.1 % on the tiny
    Llama)."""
    import onnx
    from aieng_onnx import CAUSAL_TASK
    from aieng_transformers.testing import random_llama

    source = random_llama(tmp_path_factory.mktemp("llama-q"))
    folder, _ = exported(source, tmp_path_factory.mktemp("llama-q-cache"), opset=18,
                         task=CAUSAL_TASK)
    quantizer = OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path)))
    for scheme in ("q8", "q4"):
        result = await quantizer.aieng_quantize(str(folder), scheme)
        assert result is not None and result.scheme == scheme
        assert result.model == str(tmp_path / f"model.{scheme}.onnx")
        assert result.size_after < result.size_before
        assert any(n.op_type == "MatMulNBits" for n in onnx.load(result.model).graph.node)
        if scheme == "q8":
            assert result.quality["perplexity_after"] == pytest.approx(
                result.quality["perplexity_before"], rel=1e-3)


async def test_encoder_quality_is_measured(tiny_export: Path, tmp_path: Path) -> None:
    """An encoder's folder gives the cosine between fp32 and int8 embeddings, and the
    quantized file lands in ``output_dir``."""
    result = await OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path))).aieng_quantize(
        str(tiny_export), "int8")
    assert result is not None and result.model == str(tmp_path / "model.int8.onnx")
    assert set(result.quality) == {"cosine_mean", "cosine_min"}
    assert 0.9 <= result.quality["cosine_min"] <= result.quality["cosine_mean"] <= 1.0 + 1e-6


async def test_encoder_quality_of_a_distilbert(bert_dir: Path, tmp_path: Path) -> None:
    """The cosines are measured for an encoder whose config names its width otherwise
    than ``hidden_size`` (DistilBERT's ``dim``) too; its quality was left empty."""
    from _tiny_onnx import tiny_distilbert

    source = tiny_distilbert(tmp_path / "distilbert", bert_dir)
    folder, _ = exported(source, tmp_path / "cache", opset=18)
    result = await OrtInt8Quantizer(OrtInt8Options(
        output_dir=str(tmp_path / "out"))).aieng_quantize(str(folder), "int8")
    assert result is not None and set(result.quality) == {"cosine_mean", "cosine_min"}
    assert 0.9 <= result.quality["cosine_min"] <= result.quality["cosine_mean"] <= 1.0 + 1e-6


async def test_bare_onnx_file_has_no_quality(tiny_export: Path, tmp_path: Path) -> None:
    """An ONNX file with no tokenizer beside it is quantized; its quality is empty."""
    bare = tmp_path / "bare.onnx"
    bare.write_bytes((tiny_export / "model.onnx").read_bytes())
    result = await OrtInt8Quantizer().aieng_quantize(str(bare), "int8")
    assert result is not None and result.quality == {}
    assert Path(result.model) == tmp_path / "bare.int8.onnx"


async def test_not_mine(tmp_path: Path) -> None:
    """Other schemes and non-ONNX models get None, a Hugging Face folder (no model.onnx)
    too, so torch-int8 beside it in a pipeline gets asked (regression: ModelNotFound
    failed the call); a missing ONNX file says so."""
    quantizer = OrtInt8Quantizer()
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"0" * 16)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert await quantizer.aieng_quantize(str(weights), "int8") is None
    assert await quantizer.aieng_quantize(str(tmp_path), "int8") is None
    assert await quantizer.aieng_quantize(str(tmp_path / "m.onnx"), "nf4") is None
    with pytest.raises(ModelNotFound):
        await quantizer.aieng_quantize(str(tmp_path / "m.onnx"), "int8")


async def test_minilm_int8_size_and_quality(shipped_fp32: MiniLMOnnxEmbedder,
                                            tmp_path: Path) -> None:
    """Needs the shipped model: MiniLM shrinks to under a third of its bytes and keeps a
    mean cosine ≥ 0.99 to fp32."""
    cache = Path(str(shipped_fp32.options.cache_dir))
    folder, fresh = exported(shipped_fp32.source(), cache, opset=shipped_fp32.options.opset)
    assert not fresh
    result = await OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path))).aieng_quantize(
        str(folder), "int8")
    assert result is not None
    assert result.size_after * 3 < result.size_before
    assert result.quality["cosine_mean"] >= 0.99, result.quality


async def test_causal_lm_quality_is_perplexity(tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path) -> None:
    """A causal LM exported with its KV cache (``smollm2-onnx``'s export of a tiny Llama)
    gives the perplexity before and after on the held-out paragraph: the fp32 figure is
    the torch model's own, and the delta is after minus before."""
    from aieng_onnx import CAUSAL_TASK
    from aieng_transformers import SmolLM2Backend, SmolLM2Options
    from aieng_transformers._heldout import HELDOUT_TEXT
    from aieng_transformers.testing import random_llama

    source = random_llama(tmp_path_factory.mktemp("llama"))
    folder, _ = exported(source, tmp_path_factory.mktemp("llama-cache"), opset=18,
                         task=CAUSAL_TASK)
    result = await OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path))).aieng_quantize(
        str(folder), "int8")
    assert result is not None and result.size_after < result.size_before
    quality = result.quality
    assert set(quality) == {"perplexity_before", "perplexity_after", "perplexity_delta"}
    torch_ppl = SmolLM2Backend(SmolLM2Options(path=str(source))).perplexity(HELDOUT_TEXT)
    assert quality["perplexity_before"] == pytest.approx(torch_ppl, rel=1e-4)
    assert quality["perplexity_delta"] == pytest.approx(
        quality["perplexity_after"] - quality["perplexity_before"])


async def test_keep_leaves_the_named_products_float(tmp_path_factory: pytest.TempPathFactory,
                                                    tmp_path: Path) -> None:
    """``keep_fp32 = ["down_proj"]``: those ``MatMul`` nodes stay float in the quantized file (a
    larger one than plain int8) and quality is still measured; a fragment that matches no
    ``MatMul`` is an error that names it."""
    import onnx
    from aieng_onnx import CAUSAL_TASK
    from aieng_transformers.testing import random_llama

    source = random_llama(tmp_path_factory.mktemp("llama-keep"))
    folder, _ = exported(source, tmp_path_factory.mktemp("llama-keep-cache"), opset=18,
                         task=CAUSAL_TASK)
    plain = await OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path / "plain"))
                                   ).aieng_quantize(str(folder), "int8")
    kept = await OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path / "kept"),
                                                 keep_fp32="down_proj")
                                  ).aieng_quantize(str(folder), "int8")
    assert plain is not None and kept is not None
    assert plain.size_after < kept.size_after < kept.size_before
    nodes = onnx.load(kept.model).graph.node
    assert sum(n.op_type == "MatMul" and "down_proj" in n.name for n in nodes) == 2
    assert "perplexity_after" in kept.quality
    with pytest.raises(ValueError, match="dwon_proj"):
        await OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path / "typo"),
                                              keep_fp32=("dwon_proj",))
                               ).aieng_quantize(str(folder), "int8")


def test_weights_size_counts_external_data(tiny_export: Path, tmp_path: Path) -> None:
    """A model's size counts the external-data file its tensors name, under the name
    optimum gives it for exports past 2 GB (``model.onnx_data``), not only ``<file>.*``."""
    import onnx
    from aieng_onnx._export import weights_size

    inline = tiny_export / "model.onnx"
    proto = onnx.load(str(inline))
    onnx.save(proto, str(tmp_path / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=0)
    data = tmp_path / "model.onnx_data"
    assert data.is_file()
    expected = (tmp_path / "model.onnx").stat().st_size + data.stat().st_size
    assert weights_size(tmp_path / "model.onnx") == expected
    assert weights_size(inline) == inline.stat().st_size
