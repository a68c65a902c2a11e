"""``minilm-onnx``: conformance, parity with the torch ``minilm``, the export cache and the
execution providers. Tests whose docstring says "Needs the shipped model" use MiniLM."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import structlog
from _onnx_texts import SENTENCES
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions, export_key
from aieng_onnx import _export as export_module

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio


class TestMiniLMOnnxConformance(BackendSuite):
    """Needs the shipped model: fp32 passes the backend suite's embed checks."""

    @pytest.fixture
    def component(self, shipped_fp32: MiniLMOnnxEmbedder) -> MiniLMOnnxEmbedder:
        return shipped_fp32


class TestMiniLMOnnxInt8Conformance(BackendSuite):
    """Needs the shipped model: int8 passes the backend suite's embed checks."""

    @pytest.fixture
    def component(self, shipped_int8: MiniLMOnnxEmbedder) -> MiniLMOnnxEmbedder:
        return shipped_int8


def mean_cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosines.mean()), float(cosines.min())


def test_fp32_matches_torch(shipped_fp32: MiniLMOnnxEmbedder, shipped_torch: object) -> None:
    """Needs the shipped model: fp32 ONNX vectors equal the torch ``minilm``'s (mean cosine
    ≥ 0.9999 on real sentences)."""
    mean, low = mean_cosine(shipped_fp32.encode(SENTENCES),
                            shipped_torch.encode(SENTENCES))  # type: ignore[attr-defined]
    assert mean >= 0.9999 and low >= 0.999, (mean, low)


def test_int8_close_to_torch(shipped_int8: MiniLMOnnxEmbedder, shipped_torch: object) -> None:
    """Needs the shipped model: int8 (per-channel) vectors stay close to the torch
    ``minilm``'s (mean cosine ≥ 0.99)."""
    mean, low = mean_cosine(shipped_int8.encode(SENTENCES),
                            shipped_torch.encode(SENTENCES))  # type: ignore[attr-defined]
    assert mean >= 0.99 and low >= 0.95, (mean, low)


async def test_unit_vectors_in_input_order(shipped_fp32: MiniLMOnnxEmbedder) -> None:
    """Needs the shipped model: vectors have norm 1 and follow the input order, whatever
    the length-sorted batching inside; batch size does not change them."""
    forward = await shipped_fp32.aieng_embed(SENTENCES, "all-MiniLM-L6-v2")
    backward = await shipped_fp32.aieng_embed(SENTENCES[::-1], None)
    assert forward is not None and backward is not None and forward.shape == (24, 384)
    np.testing.assert_allclose(np.linalg.norm(forward, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    small = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        cache_dir=shipped_fp32.options.cache_dir, batch_size=3, providers=("cpu",)))
    np.testing.assert_allclose(small.encode(SENTENCES), forward, atol=1e-5)


def test_export_cache_reused(shipped_fp32: MiniLMOnnxEmbedder,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs the shipped model: a second load finds the export (and the int8 file) in
    the cache and exports nothing. (The fixture exported it; it may have loaded again
    since: a pipeline's close lets go of the session, and ``exported`` is the last load's.)"""
    assert shipped_fp32.options.cache_dir is not None
    assert list(Path(shipped_fp32.options.cache_dir).glob("onnx/*/model.onnx"))

    def refuse(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(export_module, "_export", refuse)
    monkeypatch.setattr(export_module, "quantize", refuse)
    for precision in ("fp32", "int8"):
        again = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
            cache_dir=shipped_fp32.options.cache_dir, precision=precision,  # type: ignore[arg-type]
            providers=("cpu",)))
        again.load()
        assert again.exported is False


def test_tiny_bert_export_matches_torch(bert_dir: Path, tmp_path: Path) -> None:
    """Any encoder folder exports: a tiny BERT from a config gives the torch embedder's
    vectors, under the model id of its folder name."""
    transformers_plugin = pytest.importorskip("aieng_transformers")
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir),
                                                    cache_dir=str(tmp_path), providers=("cpu",)))
    torch_embedder = transformers_plugin.MiniLMEmbedder(
        transformers_plugin.MiniLMOptions(path=str(bert_dir)))
    texts = ["the cat sat on the mat", "a dog", "stock market fell", "kitten"]
    mean, _ = mean_cosine(embedder.encode(texts), torch_embedder.encode(texts))
    assert mean >= 0.9999
    assert embedder.model == bert_dir.name and embedder.exported is True
    assert len(list((tmp_path / "onnx").iterdir())) == 1, "no temporary folder left behind"


def test_cache_key_follows_files_and_opset(bert_dir: Path, tmp_path: Path) -> None:
    """The cache key changes with the model's files and the opset, and only then."""
    copy = tmp_path / "bert"
    copy.mkdir()
    for file in bert_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    key = export_key(copy, 18)
    assert export_key(copy, 18) == key
    assert export_key(copy, 17) != key
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert export_key(copy, 18) != key


def test_large_files_are_hashed_once_per_version(tmp_path: Path) -> None:
    """With a memo folder, a large file's digest is read back instead of recomputed
    (loading a multi-GB model again does not read it all), and any rewrite of the file,
    even one keeping its size and mtime, is hashed again; a file written in the last
    moments is not memoized (it may still be being written)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(os.urandom(2 << 20))
    memo = tmp_path / "memo"
    key = export_key(folder, 18, memo=memo)
    assert not memo.exists(), "a file written just now is not memoized"
    old = time.time() - 60
    os.utime(weights, (old, old))
    assert export_key(folder, 18, memo=memo) == key
    (entry,) = memo.iterdir()
    entry.write_text("0" * 64)  # a planted digest: read back, so the file was not hashed
    assert export_key(folder, 18, memo=memo) != key
    data = bytearray(weights.read_bytes())
    data[1 << 20] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size, same inode, mtime put back
    os.utime(weights, (old, old))
    changed = export_key(folder, 18, memo=memo)
    assert changed != key
    assert changed == export_key(folder, 18), "the memo agrees with a full hash"
    assert len(list(memo.iterdir())) == 2


def test_abandoned_scratch_is_removed(bert_dir: Path, tmp_path: Path) -> None:
    """An export or quantization killed before its cleanup leaves its scratch folder or
    file behind (a whole export: hundreds of MB); the next one of that kind removes those
    of processes that are gone and untouched for a while, and nothing else: not a live
    process's, not a fresh one (a writer in another container looks dead from here), not
    a file of another name."""
    import os
    import subprocess
    import sys

    from _scratch import leave

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    onnx = tmp_path / "onnx"
    dead = leave(onnx / f".export-{gone.pid}-0123456789ab", folder=True)
    fresh = leave(onnx / f".export-{gone.pid}-0123456789ac", folder=True, age=None)
    live = leave(onnx / f".export-{os.getpid()}-0123456789ad", folder=True)
    other = leave(onnx / ".export-notes", folder=False)
    folder, made = export_module.exported(bert_dir, tmp_path, opset=18)
    assert made and (folder / "model.onnx").is_file()
    assert not dead.exists() and fresh.exists() and live.exists() and other.exists()
    dead_int8 = leave(folder / f".int8-{gone.pid}-0123456789ab.onnx", folder=False)
    dead_q4 = leave(folder / f".q4-{gone.pid}-0123456789ab.onnx", folder=False)
    assert export_module.int8_variant(folder, weights="s8").is_file()
    assert not dead_int8.exists() and dead_q4.exists()  # q4's own next run removes it


def test_an_export_folder_without_its_model_is_replaced(bert_dir: Path,
                                                        tmp_path: Path) -> None:
    """An export folder whose ``model.onnx`` is gone (deleted by hand to export again,
    copied in half) is exported again and replaced, its variants with it (they were made
    from the model that is gone); it used to fail every load with "Directory not empty"."""
    folder, made = export_module.exported(bert_dir, tmp_path, opset=18)
    int8 = export_module.int8_variant(folder, weights="s8")
    (folder / "model.onnx").unlink()
    with structlog.testing.capture_logs() as logs:
        again, made = export_module.exported(bert_dir, tmp_path, opset=18)
    assert again == folder and made and (folder / "model.onnx").is_file()
    assert not int8.exists()
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [folder.name]
    assert [e for e in logs if e["event"] == "onnx.export_replaced"]
    assert export_module.exported(bert_dir, tmp_path, opset=18) == (folder, False)


def test_provider_fallback_reported(bert_dir: Path, tmp_path: Path) -> None:
    """The session tries TensorRT, CUDA, then the CPU and reports what it really got:
    ``providers`` ends with the CPU, and a fallback from the first choice is logged."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path)))
    with structlog.testing.capture_logs() as logs:
        providers = embedder.providers
    assert providers[-1] == "CPUExecutionProvider"
    assert set(providers) <= {"TensorrtExecutionProvider", "CUDAExecutionProvider",
                              "CPUExecutionProvider"}
    loaded = [e for e in logs if e["event"] == "model.loaded"]
    assert loaded and loaded[0]["providers"] == list(providers)
    fallback = [e for e in logs if e["event"] == "onnx.provider_fallback"]
    if providers[0] != "TensorrtExecutionProvider":
        assert fallback and fallback[0]["providers"] == list(providers)
    cpu_only = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path),
                                                    providers=("cpu",)))
    assert cpu_only.providers == ("CPUExecutionProvider",)


@pytest.mark.parametrize("driver", [False, True])
def test_gpu_providers_need_the_driver(bert_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, driver: bool) -> None:
    """Without the NVIDIA driver the session is not asked for TensorRT or CUDA at all (so
    ONNX Runtime prints no library errors) and the skip is logged; with it, every GPU
    provider of the build is asked for, and the session still ends with the CPU."""
    import onnxruntime as ort
    from aieng_onnx import _runtime

    asked: list[list[str]] = []
    real = ort.InferenceSession

    def recording(path: str, **kwargs: object) -> object:
        providers = kwargs["providers"]
        assert isinstance(providers, list)
        asked.append([p if isinstance(p, str) else p[0] for p in providers])
        return real(path, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    monkeypatch.setattr(_runtime, "nvidia_driver", lambda: driver)
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path)))
    with structlog.testing.capture_logs() as logs:
        assert embedder.providers[-1] == "CPUExecutionProvider"
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
           if p in ort.get_available_providers()]
    skipped = [e for e in logs if e["event"] == "onnx.gpu_providers_skipped"]
    # The export checks its file on a CPU session first; the embedder's session is last.
    if driver:
        assert asked[-1] == [*gpu, "CPUExecutionProvider"] and not skipped
    else:
        assert asked and all(a == ["CPUExecutionProvider"] for a in asked)
        assert embedder.providers == ("CPUExecutionProvider",)
        assert bool(skipped) == bool(gpu) and (not gpu or skipped[0]["providers"] == gpu)


async def test_empty_input_needs_no_model(tmp_path: Path, bert_dir: Path) -> None:
    """An empty list gives a (0, dimension) array without exporting anything."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(tmp_path)))
    vectors = await embedder.aieng_embed([], None)
    assert vectors is not None and vectors.shape == (0, 64)
    assert not (tmp_path / "onnx").exists()


async def test_empty_input_has_the_vectors_width(bert_dir: Path, tmp_path: Path) -> None:
    """No texts give ``(0, d)`` with the width the vectors have, also for an encoder whose
    config names its width otherwise (DistilBERT's ``dim``), still without exporting; the
    export of such a folder loads and embeds at that width too."""
    from _tiny_onnx import tiny_distilbert

    folder = tiny_distilbert(tmp_path / "distilbert", bert_dir)
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(folder), cache_dir=str(tmp_path / "cache"), providers=("cpu",)))
    empty = await embedder.aieng_embed([], None)
    assert empty is not None and empty.shape == (0, 32)
    assert not (tmp_path / "cache" / "onnx").exists()
    assert embedder.encode(["the cat"]).shape == (1, 32)
    assert embedder.dimension == 32


def test_encode_refuses_a_lone_string(bert_dir: Path, tmp_path: Path) -> None:
    """The blocking ``encode`` checks its texts as ``aieng_embed`` does: one string is
    refused (it would embed each character), as is a text that is not a string."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",)))
    with pytest.raises(TypeError, match="wrap it in a list"):
        embedder.encode("the cat")
    with pytest.raises(TypeError, match="not int"):
        embedder.encode(["the cat", 3])  # type: ignore[list-item]
    assert embedder.encode(("the cat", "")).shape == (2, 64)


def test_options_are_checked() -> None:
    """Unknown precisions and providers are rejected when the options are built."""
    with pytest.raises(ValueError):
        MiniLMOnnxOptions(precision="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MiniLMOnnxOptions(providers=("rocm",))  # type: ignore[arg-type]
    assert MiniLMOnnxOptions(providers=["cpu"]).providers == ("cpu",)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["batch_size", "max_length", "intra_op_threads", "workers",
                                  "max_batch", "max_wait_ms"])
def test_booleans_are_no_numbers(name: str) -> None:
    """A pipeline file's ``batch_size = true`` is an error, not a batch of 1 (``bool`` is an
    ``int`` to Python); so for every count of the three components' options."""
    from aieng_onnx import OrtInt8Options, SmolLM2OnnxOptions

    with pytest.raises(TypeError, match=name):
        MiniLMOnnxOptions(**{name: True})  # type: ignore[arg-type]
    if name == "intra_op_threads":
        for options in (OrtInt8Options, SmolLM2OnnxOptions):
            with pytest.raises(TypeError, match=name):
                options(intra_op_threads=False)  # type: ignore[call-arg,arg-type]
    if name == "max_wait_ms":
        with pytest.raises(TypeError, match=name):
            MiniLMOnnxOptions(max_wait_ms="5")  # type: ignore[arg-type]
        assert MiniLMOnnxOptions(max_wait_ms=2).max_wait_ms == 2.0


def test_tensorrt_engines_kept_per_export(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT's engines of two exports live in two folders: ONNX Runtime names an engine
    by the file's name and the graph's value names, never by its weights, so two models of
    one architecture (or a model changed in place: a new export) in one folder would share
    an engine, the first model's weights included."""
    import onnxruntime as ort
    from aieng_onnx import _runtime

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT provider")
    asked: list[object] = []

    def recording(path: str, **kwargs: object) -> object:
        asked.append(kwargs["providers"])
        return object()

    monkeypatch.setattr(ort, "InferenceSession", recording)
    monkeypatch.setattr(_runtime, "nvidia_driver", lambda: True)
    cache = tmp_path / "cache"
    folders = []
    for export in ("bert-1111", "bert-2222"):
        _runtime.open_session(cache / "onnx" / export / "model.onnx", providers=("tensorrt",),
                              threads=1, cache=cache)
        [(name, options)] = asked.pop()  # type: ignore[misc]
        assert name == "TensorrtExecutionProvider" and options["trt_engine_cache_enable"]
        folder = Path(options["trt_engine_cache_path"])
        assert folder.is_relative_to(cache / "tensorrt")
        folders.append(folder)
    assert folders[0] != folders[1]


def test_tensorrt_engines_kept_per_runtime_version(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime names a TensorRT engine by the graph and the GPU's compute capability
    only, and loads a cached one whatever ONNX Runtime or TensorRT built it (an engine of
    another TensorRT fails to deserialize, and the session with it): each ONNX Runtime
    and TensorRT version gets its own engine folder."""
    import onnxruntime as ort
    from aieng_onnx import _runtime

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT provider")
    asked: list[object] = []
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, **kwargs: asked.append(kwargs["providers"]))
    monkeypatch.setattr(_runtime, "nvidia_driver", lambda: True)
    model = tmp_path / "onnx" / "bert-1111" / "model.onnx"

    def engines() -> Path:
        _runtime.open_session(model, providers=("tensorrt",), threads=1, cache=tmp_path)
        [(_, options)] = asked.pop()  # type: ignore[misc]
        return Path(options["trt_engine_cache_path"])

    first = engines()
    assert first.is_relative_to(tmp_path / "tensorrt" / "bert-1111")
    assert engines() == first
    monkeypatch.setattr(_runtime, "tensorrt_version", lambda: "10.99.0", raising=False)
    other_trt = engines()
    monkeypatch.setattr(ort, "__version__", "9.9.9")
    assert len({first, other_trt, engines()}) == 3


def test_long_text_truncated_at_a_roberta_limit(tmp_path: Path) -> None:
    """A text past the model's limit is truncated, as documented, also for a RoBERTa-style
    encoder whose ``max_position_embeddings`` counts the padding offset (66 positions: 65
    tokens), where a ``max_length`` above the limit used to fail the forward pass."""
    from _tiny_onnx import tiny_roberta

    folder = tiny_roberta(tmp_path / "roberta")
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(folder), cache_dir=str(tmp_path / "cache"), providers=("cpu",),
        max_length=1000))
    texts = ["cat " * 500, "cat " * 63]
    vectors = embedder.encode(texts)
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # both cut at 65 tokens


def test_concurrent_first_loads_export_once(bert_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two components of one model opening at once (a pipeline opens its components
    concurrently) export it once and quantize it once: the second waits for the first's
    files instead of making them again (SmolLM2: 45 s of export, 24 s of int8)."""
    import threading

    made: list[str] = []
    real_export, real_quantize = export_module._export_now, export_module.quantize

    def export(*args: object) -> None:
        made.append("export")
        real_export(*args)

    def quantize(*args: object, **kwargs: object) -> None:
        made.append("quantize")
        real_quantize(*args, **kwargs)

    monkeypatch.setattr(export_module, "_export_now", export)
    monkeypatch.setattr(export_module, "quantize", quantize)
    barrier = threading.Barrier(2)
    files: list[Path] = []

    def load() -> None:
        barrier.wait()
        folder, _ = export_module.exported(bert_dir, tmp_path, opset=18)
        files.append(export_module.int8_variant(folder, weights="s8"))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(files) == 2 and files[0] == files[1] and files[0].is_file()
    assert made == ["export", "quantize"]
