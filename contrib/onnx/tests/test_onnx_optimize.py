"""``optimize = "bert"``: the offline BERT fusions, their cache file and key (fusion level,
ONNX Runtime version), parity of the fused graph and of its int8 quantization."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import structlog
from _onnx_texts import SENTENCES
from aieng_onnx import (
    BERT_FUSION_LEVEL,
    QUALITY_SENTENCES,
    MiniLMOnnxEmbedder,
    MiniLMOnnxOptions,
    OrtInt8Options,
    OrtInt8Quantizer,
    SmolLM2OnnxOptions,
    exported,
    int8_scheme,
    int8_variant,
    optimized_variant,
)
from aieng_onnx import _export as export_module

#: Texts the tiny BERT's word-piece vocabulary covers (plus unknown pieces).
TINY_TEXTS = ["the cat sat on the mat", "a dog", "stock market fell", "kitten",
              "the dog sat on a rug", "zebra"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def op_types(model: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(model)).graph.node)


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Path]:
    """Wrap ``_export.<name>`` so that every call's target lands in the returned list."""
    calls: list[Path] = []
    real = getattr(export_module, name)

    def wrapper(source: Path, target: Path, *args: object, **kwargs: object) -> None:
        calls.append(target)
        real(source, target, *args, **kwargs)

    monkeypatch.setattr(export_module, name, wrapper)
    return calls


@pytest.fixture
def tiny_folder(bert_dir: Path, tmp_path: Path) -> Path:
    """A fresh export of the tiny BERT (its own cache, so variants start absent)."""
    folder, _ = exported(bert_dir, tmp_path, opset=18)
    return folder


def test_fused_file_is_cached_and_reused(bert_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ``optimize = "bert"`` load writes ``model.bert-o<level>.ort<version>.onnx``
    with fused Attention / SkipLayerNormalization / EmbedLayerNormalization nodes; a second
    load of either precision reuses it (the optimizer is not called again)."""
    calls = counting(monkeypatch, "optimize_bert")
    first = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path),
                                                 providers=("cpu",), optimize="bert"))
    first.load()
    assert len(calls) == 1
    (folder,) = (tmp_path / "onnx").iterdir()
    fused = folder / f"model.bert-o{BERT_FUSION_LEVEL}.ort{onnxruntime.__version__}.onnx"
    assert fused.is_file()
    ops = op_types(fused)
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= set(ops), ops
    assert "Softmax" not in ops, "attention left unfused"
    for precision in ("fp32", "int8"):
        again = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
            path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), optimize="bert",
            precision=precision))  # type: ignore[arg-type]
        again.load()
        assert again.exported is False
    assert len(calls) == 1, "optimized twice"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [], \
        "no scratch file left behind"


def test_new_onnxruntime_version_invalidates(tiny_folder: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A file made by another ONNX Runtime version is not reused: the fused and the int8
    files are made again under names carrying the running version; the plain export
    stays (its key is the exporter's)."""
    fused_calls = counting(monkeypatch, "optimize_bert")
    int8_calls = counting(monkeypatch, "quantize")
    fused = optimized_variant(tiny_folder)
    quantized = int8_variant(tiny_folder, fused)
    assert quantized.name == f"model.bert-o0.{int8_scheme()}.ort{onnxruntime.__version__}.onnx"
    assert (optimized_variant(tiny_folder), int8_variant(tiny_folder, fused)) == \
        (fused, quantized)
    assert (len(fused_calls), len(int8_calls)) == (1, 1)
    monkeypatch.setattr(onnxruntime, "__version__", "99.0.0")
    newer = optimized_variant(tiny_folder)
    assert newer.name == "model.bert-o0.ort99.0.0.onnx" and newer != fused
    assert int8_variant(tiny_folder, newer).name == f"model.bert-o0.{int8_scheme()}.ort99.0.0.onnx"
    assert int8_variant(tiny_folder).name == f"model.{int8_scheme()}.ort99.0.0.onnx"
    assert (len(fused_calls), len(int8_calls)) == (2, 3)
    assert fused.is_file(), "the old version's file is left alone, not deleted"


def test_fusion_level_is_in_the_key(tiny_folder: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another fusion level is another file; the level reaches the optimizer."""
    seen: list[int] = []
    real = export_module.optimize_bert

    def spy(source: Path, target: Path, *, level: int, heads: int, hidden: int) -> None:
        seen.append(level)
        assert (heads, hidden) == (4, 64), "heads and width come from config.json"
        real(source, target, level=level, heads=heads, hidden=hidden)

    monkeypatch.setattr(export_module, "optimize_bert", spy)
    zero = optimized_variant(tiny_folder, level=0)
    one = optimized_variant(tiny_folder, level=1)
    assert zero != one and one.name.startswith("model.bert-o1.") and seen == [0, 1]


def test_fused_tiny_bert_matches_torch(bert_dir: Path, tmp_path: Path) -> None:
    """The fused graph gives the torch embedder's vectors (mean cosine ≥ 0.9999) and its
    int8 quantization stays close to them."""
    transformers_plugin = pytest.importorskip("aieng_transformers")
    torch_vectors = transformers_plugin.MiniLMEmbedder(
        transformers_plugin.MiniLMOptions(path=str(bert_dir))).encode(TINY_TEXTS)
    fused = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path),
                                                 providers=("cpu",), optimize="bert"))
    fused_int8 = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), optimize="bert",
        precision="int8"))
    assert cosines(fused.encode(TINY_TEXTS), torch_vectors).mean() >= 0.9999
    assert cosines(fused_int8.encode(TINY_TEXTS), torch_vectors).min() >= 0.9


def test_fused_minilm_matches_torch(shipped_fp32: MiniLMOnnxEmbedder,
                                    shipped_torch: object) -> None:
    """Needs the shipped model: MiniLM's fused graph keeps fp32 parity with the torch
    ``minilm`` (mean cosine ≥ 0.9999) and the int8 quantization of the fused graph keeps
    int8 parity (mean cosine ≥ 0.99), on real sentences of many lengths."""
    texts = [*SENTENCES, *QUALITY_SENTENCES]
    reference = shipped_torch.encode(texts)  # type: ignore[attr-defined]
    for precision, floor, low in (("fp32", 0.9999, 0.999), ("int8", 0.99, 0.95)):
        embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
            cache_dir=shipped_fp32.options.cache_dir, providers=("cpu",), optimize="bert",
            precision=precision))  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            embedder.load()
        (loaded,) = [e for e in logs if e["event"] == "model.loaded"]
        assert Path(loaded["file"]).name.startswith(
            "model.bert-o0." + (f"{int8_scheme()}." if precision == "int8" else "ort"))
        values = cosines(embedder.encode(texts), reference)
        assert values.mean() >= floor and values.min() >= low, (precision, values)


def test_optimize_option_is_checked() -> None:
    """Only ``runtime`` and ``bert`` are accepted; ``runtime`` is the default."""
    assert MiniLMOnnxOptions().optimize == "runtime"
    with pytest.raises(ValueError):
        MiniLMOnnxOptions(optimize="xla")  # type: ignore[arg-type]


@pytest.mark.parametrize("weights", ["s8", "u8"])
def test_int8_weights_of_either_sign_run_close_to_fp32(tiny_folder: Path, tmp_path: Path,
                                                       weights: str) -> None:
    """Both int8 weight types (signed, the default; unsigned, chosen on x86 CPUs without
    VNNI, whose u8 × s8 kernels saturate) store their weights as that type and give
    vectors close to fp32's on the tiny BERT; the variant's name says which this CPU
    gets."""
    from aieng_onnx._quantize import int8_weights, quantize_int8

    source = tiny_folder / "model.onnx"
    target = tmp_path / f"model.{weights}.onnx"
    quantize_int8(source, target, weights=weights)  # type: ignore[arg-type]
    types = {t.data_type for t in onnx.load(str(target)).graph.initializer
             if t.name.endswith("_quantized")}  # (an embedding table's Gather is uint8 in both)
    assert types == ({onnx.TensorProto.INT8, onnx.TensorProto.UINT8} if weights == "s8"
                     else {onnx.TensorProto.UINT8})
    inputs = {"input_ids": np.array([[2, 5, 6, 7, 3]], dtype=np.int64),
              "attention_mask": np.ones((1, 5), dtype=np.int64),
              "token_type_ids": np.zeros((1, 5), dtype=np.int64)}
    outputs = [onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
               .run(None, inputs)[0].reshape(5, -1) for path in (source, target)]
    assert float(cosines(*outputs).min()) > 0.95
    assert int8_scheme() == ("int8" if int8_weights() == "s8" else "int8u8")


def quantized_types(model: Path) -> set[int]:
    """The element types of ``model``'s quantized weights (an embedding table's Gather is
    uint8 whatever the weights' sign, so only ``_quantized`` initializers count)."""
    return {t.data_type for t in onnx.load(str(model)).graph.initializer
            if t.name.endswith("_quantized")}


@pytest.mark.parametrize("weights", ["s8", "u8"])
def test_the_int8_weights_option_chooses_the_sign(bert_dir: Path, tmp_path: Path,
                                                  weights: str) -> None:
    """``int8_weights`` set to ``s8`` or ``u8`` overrides this CPU's choice: the embedder
    loads a file named for it (``.int8.`` / ``.int8u8.``) whose weights are of that type,
    and its vectors stay close to fp32's; ``ort-int8`` writes the same types. The option
    needs ``precision = "int8"``."""
    options = MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",),
                                precision="int8", int8_weights=weights)  # type: ignore[arg-type]
    embedder = MiniLMOnnxEmbedder(options)
    with structlog.testing.capture_logs() as logs:
        embedder.load()
    (loaded,) = [e for e in logs if e["event"] == "model.loaded"]
    file = Path(loaded["file"])
    assert f".{'int8' if weights == 's8' else 'int8u8'}.ort" in file.name
    signed = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    assert quantized_types(file) == (signed if weights == "s8" else {onnx.TensorProto.UINT8})
    fp32 = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path),
                                                providers=("cpu",)))
    assert float(cosines(embedder.encode(TINY_TEXTS), fp32.encode(TINY_TEXTS)).min()) > 0.95
    result = OrtInt8Quantizer(OrtInt8Options(output_dir=str(tmp_path / "out"),
                                             int8_weights=weights)  # type: ignore[arg-type]
                              ).quantize(file.parent / "model.onnx")
    assert quantized_types(Path(result.model)) == quantized_types(file)
    with pytest.raises(ValueError, match="needs precision = 'int8'"):
        MiniLMOnnxOptions(int8_weights=weights)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs precision = 'int8'"):
        SmolLM2OnnxOptions(precision="q8", int8_weights=weights)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MiniLMOnnxOptions(precision="int8", int8_weights="s7")  # type: ignore[arg-type]
    assert MiniLMOnnxOptions().int8_weights == "auto"
