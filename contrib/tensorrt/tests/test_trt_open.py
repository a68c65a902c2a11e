"""What ``minilm-trt`` does on a machine without TensorRT or a GPU, and the parts of the
engine path that run without either (the build's calls, pooling over padded batches).

The engine itself is not built or run here: TensorRT cannot be installed on this machine
(see README.md); ``scripts/gpu_check.sh`` exercises it on a GPU.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aieng_tensorrt
import anyio
import numpy as np
import pytest
import torch
from aieng_tensorrt import MiniLMTensorRT, ShapeProfile, TensorRTOptions, TensorRTUnavailable
from aieng_tensorrt._component import _Loaded, open_tokenizer
from aieng_tensorrt._engine import EngineBuildError, build_engine

from aieng_core import HookError, Kernel


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import tensorrt`` fails, whatever is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def fake_tensorrt_without_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``import tensorrt`` works, and torch sees no CUDA device."""
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.0.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    yield


@pytest.mark.anyio
async def test_open_without_tensorrt_says_how_to_install(model_dir: Path,
                                                         no_tensorrt: None) -> None:
    """Without TensorRT, opening fails with TensorRTUnavailable saying how to install it."""
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx")))
    with pytest.raises(TensorRTUnavailable, match=r"needs TensorRT.*pip install"):
        await embedder.aieng_pipeline_open()


@pytest.mark.anyio
async def test_open_without_gpu_says_no_cuda_device(model_dir: Path,
                                                    fake_tensorrt_without_gpu: None) -> None:
    """With TensorRT but no GPU, opening fails saying no CUDA device was found."""
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx")))
    with pytest.raises(TensorRTUnavailable, match="no CUDA device was found"):
        await embedder.aieng_pipeline_open()


@pytest.mark.anyio
async def test_open_checks_the_files_first(tmp_path: Path, model_dir: Path) -> None:
    """A missing ONNX file or tokenizer is reported before TensorRT is looked for."""
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        MiniLMTensorRT(TensorRTOptions(onnx_path=str(tmp_path / "nope.onnx"))).load()
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx"),
                                       tokenizer_path=str(tmp_path / "x.json"))).load()


@pytest.mark.anyio
async def test_pipeline_open_fails_with_the_reason(aieng_kernel: Kernel, register_plugin: Any,
                                                   model_dir: Path, no_tensorrt: None) -> None:
    """Through a pipeline, opening a ``minilm-trt`` component fails with the install hint."""
    with register_plugin(aieng_tensorrt, "tensorrt"):
        pipeline = aieng_kernel.pipeline({"pipeline": {"name": "trt"}, "components": {
            "embed": {"use": "minilm-trt", "onnx_path": str(model_dir / "model.onnx")}}})
        with pytest.raises(HookError, match=r"aieng_pipeline_open of 'embed'.*pip install"):
            await pipeline.open()


@pytest.mark.anyio
async def test_other_models_are_not_mine(model_dir: Path, no_tensorrt: None) -> None:
    """A request for another model gets None without loading anything."""
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx")))
    assert await embedder.aieng_embed(["x"], "other-model") is None


@pytest.mark.anyio
async def test_no_texts_are_answered_without_loading(model_dir: Path,
                                                     no_tensorrt: None) -> None:
    """An empty call gets no vectors at once, as from the onnx embedder: no TensorRT or
    GPU is looked for and no engine is loaded or built (minutes)."""
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx")))
    assert list(await embedder.aieng_embed([], None)) == []
    assert list(await embedder.aieng_embed((), "all-MiniLM-L6-v2")) == []
    assert embedder._loaded is None


class _RecordingTrt:
    """Records the TensorRT builder calls ``build_engine`` makes (API shape only)."""

    def __init__(self, *, parses: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.__version__ = "10.3.0"
        self.parses = parses
        rec = self
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16")

        class Tensor:
            def __init__(self, name: str) -> None:
                self.name, self.shape = name, (-1, -1)

        class Network:
            num_inputs = 2

            def get_input(self, i: int) -> Tensor:
                return Tensor(["input_ids", "attention_mask"][i])

        class Profile:
            def set_shape(self, *args: Any) -> None:
                rec.calls.append(("set_shape", *args))

        class Config:
            def set_memory_pool_limit(self, *args: Any) -> None:
                rec.calls.append(("pool", *args))

            def set_flag(self, flag: Any) -> None:
                rec.calls.append(("flag", flag))

            def add_optimization_profile(self, profile: Any) -> None:
                rec.calls.append(("add_profile",))

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> Network:
                rec.calls.append(("network", flags))
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Any, config: Any) -> bytes:
                return b"ENGINE"

        class Parser:
            num_errors = 1

            def __init__(self, network: Any, logger: Any) -> None:
                pass

            def parse(self, data: bytes, **kwargs: Any) -> bool:
                rec.calls.append(("parse", data, *kwargs.items()))
                return rec.parses

            def get_error(self, i: int) -> str:
                return "bad node"

        self.Builder, self.OnnxParser = Builder, Parser


def test_build_engine_sets_profile_precision_and_workspace() -> None:
    """Every input gets the profile's (min, opt, max) shapes; fp16 sets the FP16 flag."""
    trt = _RecordingTrt()
    profile = ShapeProfile(1, 8, 32, 4, 64, 128)
    assert build_engine(trt, b"onnx", profile, precision="fp16", workspace_bytes=1 << 30,
                        logger=None) == b"ENGINE"
    assert ("network", 0) in trt.calls and ("flag", "FP16") in trt.calls
    assert ("pool", "WORKSPACE", 1 << 30) in trt.calls
    assert [c for c in trt.calls if c[0] == "set_shape"] == [
        ("set_shape", name, (1, 4), (8, 64), (32, 128))
        for name in ("input_ids", "attention_mask")]
    fp32 = _RecordingTrt()
    build_engine(fp32, b"onnx", profile, precision="fp32", workspace_bytes=1, logger=None)
    assert ("flag", "FP16") not in fp32.calls
    with pytest.raises(EngineBuildError, match="bad node"):
        build_engine(_RecordingTrt(parses=False), b"x", profile, precision="fp32",
                     workspace_bytes=1, logger=None)


def test_build_engine_parses_with_the_model_path(tmp_path: Path) -> None:
    """Given the ONNX file's path, the parser gets it (``OnnxParser.parse(model,
    path=...)``): TensorRT finds a model's external data files (``model.onnx_data``) next
    to it; without a path the call is the plain ``parse(model)``."""
    trt = _RecordingTrt()
    build_engine(trt, b"onnx", ShapeProfile(), precision="fp32", workspace_bytes=1,
                 logger=None, path=tmp_path / "model.onnx")
    assert [c for c in trt.calls if c[0] == "parse"] == [
        ("parse", b"onnx", ("path", str(tmp_path / "model.onnx")))]
    plain = _RecordingTrt()
    build_engine(plain, b"onnx", ShapeProfile(), precision="fp32", workspace_bytes=1,
                 logger=None)
    assert [c for c in plain.calls if c[0] == "parse"] == [("parse", b"onnx")]


class _TableRunner:
    """Stands in for the engine: hidden state = a fixed embedding of each token id."""

    def __init__(self) -> None:
        self.table = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feeds: dict[str, Any]) -> Any:
        self.shapes.append(tuple(feeds["input_ids"].shape))
        return self.table[feeds["input_ids"]]


def test_padding_does_not_change_vectors(model_dir: Path) -> None:
    """Batches padded to the profile's minimums and split at its maximum batch pool to the
    same unit vectors as each text alone."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    runner = _TableRunner()
    texts: Sequence[str] = ["the cat sat on a mat", "dog", "a dog ran far away", "cat"]
    loaded = _Loaded(runner, tokenizer, torch, ShapeProfile(2, 2, 3, 8, 8, 16))  # type: ignore[arg-type]
    vectors = loaded.encode(texts)
    assert runner.shapes == [(3, 8), (2, 8)]  # split at 3, the last padded to batch 2
    for text, vector in zip(texts, vectors):
        ids = torch.tensor(tokenizer.encode(text).ids)
        alone = runner.table[ids].mean(dim=0)
        expected = (alone / alone.norm()).numpy()
        np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)


def test_batches_hold_texts_of_about_one_length(model_dir: Path) -> None:
    """Texts run longest first, a chunk at a time: long and short texts given in turn no
    longer pad each short one to its long neighbour (four batches of long rows ran, now
    two of long rows and two of short), and each vector still lands at its text's place."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    runner = _TableRunner()
    texts = ["the cat sat on a mat and a dog ran far away" if i % 2 else "cat"
             for i in range(8)]
    loaded = _Loaded(runner, tokenizer, torch, ShapeProfile(1, 2, 2, 1, 8, 32))  # type: ignore[arg-type]
    vectors = loaded.encode(texts)
    long, short = (len(tokenizer.encode(t).ids) for t in texts[1::-1])
    assert sorted(runner.shapes) == [(2, short)] * 2 + [(2, long)] * 2
    for text, vector in zip(texts, vectors):
        ids = torch.tensor(tokenizer.encode(text).ids)
        alone = runner.table[ids].mean(dim=0)
        np.testing.assert_allclose(vector, (alone / alone.norm()).numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_engines_are_cached_under_aieng_cache_dir(
        model_dir: Path, tmp_path: Path, stand_ins: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``cache_dir`` a built engine is kept in ``tensorrt/`` of aieng's cache
    folder, ``$AIENG_CACHE_DIR`` when set (as the onnx and transformers caches are), and
    found there by the next open."""
    built = stand_ins().built
    monkeypatch.setenv("AIENG_CACHE_DIR", str(tmp_path / "aieng"))
    options = TensorRTOptions(onnx_path=str(model_dir / "model.onnx"))
    embedder = MiniLMTensorRT(options)
    embedder.load()
    key = embedder.cache_key("10.3.0", (9, 0), "NVIDIA H200")
    assert key != embedder.cache_key("10.3.0", (9, 0), "NVIDIA H100 80GB HBM3")
    assert (tmp_path / "aieng" / "tensorrt" / f"{key}.engine").read_bytes() == b"ENGINE"
    MiniLMTensorRT(options).load()
    assert built == [b"ENGINE"]


def test_engine_is_built_with_the_model_path(
        model_dir: Path, tmp_path: Path, stand_ins: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``load`` builds from the ONNX file's bytes and its path (``~`` expanded), so
    TensorRT's parser resolves external data files next to the model."""
    from aieng_tensorrt import _component

    stand_ins()
    seen: list[tuple[bytes, Any]] = []

    def build(trt: Any, onnx: bytes, profile: ShapeProfile, **kwargs: Any) -> bytes:
        seen.append((onnx, kwargs.get("path")))
        return b"ENGINE"

    monkeypatch.setattr(_component, "build_engine", build)
    monkeypatch.setenv("HOME", str(model_dir))
    MiniLMTensorRT(TensorRTOptions(onnx_path="~/model.onnx", tokenizer_path=str(
        model_dir / "tokenizer.json"), cache_dir=str(tmp_path / "engines"))).load()
    assert seen == [(b"not really onnx", model_dir / "model.onnx")]


def test_unreadable_cached_engine_is_rebuilt(
        model_dir: Path, tmp_path: Path, stand_ins: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached engine TensorRT cannot deserialize (an empty file left by a crash before
    its bytes reached the disk, a damaged file) is built again and replaced, not an error
    at every open; the engine is deserialized with the option's CUDA device current."""
    seen = stand_ins()
    built, devices = seen.built, seen.devices
    options = TensorRTOptions(onnx_path=str(model_dir / "model.onnx"),
                              cache_dir=str(tmp_path / "engines"), device=1)
    embedder = MiniLMTensorRT(options)
    key = embedder.cache_key("10.3.0", (9, 0), "NVIDIA H200")
    cached = tmp_path / "engines" / f"{key}.engine"
    cached.parent.mkdir()
    cached.write_bytes(b"")
    embedder.load()
    assert built == [b"ENGINE"] and cached.read_bytes() == b"ENGINE"
    assert devices and all(device == 1 for device in devices)
    MiniLMTensorRT(options).load()  # the rebuilt engine is reused
    assert built == [b"ENGINE"]


def test_engine_runs_with_its_device_current(fake_cuda_torch: Any) -> None:
    """The engine runs with its CUDA device current (a worker thread's is 0), and every
    input and output goes to TensorRT by address, on that device."""
    from aieng_tensorrt._engine import EngineRunner

    fake_torch = fake_cuda_torch
    calls: list[tuple[Any, ...]] = []

    class Tensor:
        def __init__(self, shape: tuple[int, ...], device: Any = None) -> None:
            self.shape, self.device = shape, device

        def to(self, *, device: Any, dtype: Any) -> Tensor:
            return Tensor(self.shape, device)

        def contiguous(self) -> Tensor:
            return self

        def data_ptr(self) -> int:
            return id(self)

        def float(self) -> Tensor:
            return self

    class Stream:
        cuda_stream = 7

        def synchronize(self) -> None:
            pass

    fake_torch.device = lambda kind, index: (kind, index)  # type: ignore[attr-defined]
    fake_torch.empty = lambda shape, device, dtype: Tensor(shape, device)  # type: ignore[attr-defined]
    for dtype in ("float32", "float16", "int32", "int64", "bool"):
        setattr(fake_torch, dtype, dtype)
    fake_torch.cuda.current_stream = lambda device: Stream()

    class Context:
        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
            calls.append(("shape", name, shape))

        def set_tensor_address(self, name: str, address: int) -> None:
            calls.append(("address", name))

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (2, 3, 4)

        def execute_async_v3(self, stream: int) -> bool:
            calls.append(("execute", stream, fake_torch.current))
            return True

    class Engine:
        num_io_tensors = 2

        def create_execution_context(self) -> Context:
            return Context()

        def get_tensor_name(self, index: int) -> str:
            return ["input_ids", "last_hidden_state"][index]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name == "input_ids" else "OUTPUT"

        def get_tensor_dtype(self, name: str) -> str:
            return "INT64" if name == "input_ids" else "FLOAT"

    trt = types.SimpleNamespace(
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda b: Engine()),
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT"),
        DataType=types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT32="INT32",
                                       INT64="INT64", BOOL="BOOL"))
    runner = EngineRunner(trt, fake_torch, b"ENGINE", device=1, logger=None)
    hidden = runner.run({"input_ids": Tensor((2, 3))})
    assert hidden.shape == (2, 3, 4) and hidden.device == ("cuda", 1)
    assert calls == [("shape", "input_ids", (2, 3)), ("address", "input_ids"),
                     ("address", "last_hidden_state"), ("execute", 7, ("cuda", 1))]
    assert fake_torch.current == 0


def test_nasty_texts_encode(model_dir: Path) -> None:
    """A lone surrogate (text from a broken decoder) is encoded as U+FFFD, as the ONNX
    embedder does, instead of failing the call; a text with no token at all (a tokenizer
    without special tokens) gets a zero vector instead of failing its whole batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    runner = _TableRunner()
    loaded = _Loaded(runner, tokenizer, torch, ShapeProfile(1, 2, 4, 1, 8, 16))  # type: ignore[arg-type]
    vectors = loaded.encode(["the cat \ud800 sat", "the cat \ufffd sat", "", "dog"])
    assert vectors.shape == (4, 6)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[2], 0.0)
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 3]], axis=1), 1.0, rtol=1e-5)
    assert loaded.encode(["", ""]).shape == (2, 6)
    with pytest.raises(TypeError, match="embeds strings, got int"):
        loaded.encode(["dog", 3])  # type: ignore[list-item]


@pytest.mark.anyio
async def test_one_string_is_refused_not_embedded_per_character(model_dir: Path) -> None:
    """``aieng_embed("the cat", ...)`` (a string where a list belongs) is a TypeError, as
    with the other embedders, not one vector per character."""
    from tokenizers import Tokenizer

    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx")))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    embedder._loaded = _Loaded(_TableRunner(), tokenizer, torch,  # type: ignore[arg-type]
                               ShapeProfile(1, 2, 4, 1, 8, 16))
    with pytest.raises(TypeError, match="sequence of strings"):
        await embedder.aieng_embed("the cat", None)
    vectors = await embedder.aieng_embed(["the cat"], None)
    assert vectors.shape == (1, 6)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_deadline_ends_an_embed_call_within_one_batch(
        model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's deadline landing in the first of five engine runs of an ``aieng_embed``
    call ends the call, and its worker thread (which cannot be killed) runs no other
    batch: the lock is free and the next call is served (synchronised on events)."""
    from aieng_transformers.testing import PassGate, cancel_when
    from tokenizers import Tokenizer

    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(model_dir / "model.onnx")))
    runner = _TableRunner()
    gate = PassGate(runner.run)
    monkeypatch.setattr(runner, "run", gate)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    loaded = _Loaded(runner, tokenizer, torch,  # type: ignore[arg-type]
                     ShapeProfile(1, 2, 4, 1, 8, 16))
    embedder._loaded = loaded
    texts = ["the cat sat on a mat"] * 20
    await cancel_when(gate.entered, lambda: embedder.aieng_embed(texts, None))
    gate.release.set()
    assert await anyio.to_thread.run_sync(loaded.lock.acquire, True, 30.0)
    loaded.lock.release()
    assert gate.passes == 1
    vectors = await embedder.aieng_embed(["dog"], None)
    assert vectors.shape == (1, 6)


def test_an_engine_the_cache_cannot_keep_still_runs(
        model_dir: Path, tmp_path: Path, stand_ins: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder that cannot be written (read-only, full disk) costs the next open a
    rebuild, not this one its engine: minutes of build are not thrown away for a warning."""
    import structlog
    from aieng_tensorrt import _cache

    seen = stand_ins()
    built, devices = seen.built, seen.devices

    def full(self: Any, key: str, engine: bytes) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_cache.EngineCache, "store", full)
    options = TensorRTOptions(onnx_path=str(model_dir / "model.onnx"),
                              cache_dir=str(tmp_path / "engines"))
    with structlog.testing.capture_logs() as logs:
        MiniLMTensorRT(options).load()
    assert built == [b"ENGINE"] and len(devices) == 1  # built, and the runner made
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == \
        ["tensorrt.engine.not_cached"]


def test_a_tokenizer_that_pads_does_not_pool_its_padding(model_dir: Path) -> None:
    """A ``tokenizer.json`` that pads (all-MiniLM-L6-v2's pads every text to 128 tokens)
    gives each text the vector of its own tokens: padding is masked out of the mean, and
    a short text's vector does not depend on what shares its batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    plain = [tokenizer.encode(text).ids for text in ("dog", "the cat sat on a mat")]
    tokenizer.enable_padding(pad_id=1, pad_token="[PAD]", length=12)
    padding = model_dir / "padding.json"
    tokenizer.save(str(padding))
    options = TensorRTOptions(onnx_path=str(model_dir / "model.onnx"),
                              tokenizer_path=str(padding), seq=[1, 8, 16])
    runner = _TableRunner()
    loaded = _Loaded(runner, open_tokenizer(options), torch,  # type: ignore[arg-type]
                     options.profile)
    vectors = loaded.encode(["dog", "the cat sat on a mat"])
    for ids, vector in zip(plain, vectors):
        alone = runner.table[torch.tensor(ids)].mean(dim=0)
        np.testing.assert_allclose(vector, (alone / alone.norm()).numpy(), atol=1e-6)


def test_no_texts_encode_to_an_empty_matrix(model_dir: Path) -> None:
    """``encode([])`` gives a (0, width) float32 array, as ``minilm`` and ``minilm-onnx``
    encoders do (regression: an AttributeError, its result never created); the width is
    the engine's, and texts after it still embed."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    loaded = _Loaded(_TableRunner(), tokenizer, torch,  # type: ignore[arg-type]
                     ShapeProfile(1, 2, 4, 1, 8, 16))
    empty = loaded.encode([])
    assert isinstance(empty, np.ndarray) and empty.shape == (0, 6)
    assert empty.dtype == np.float32
    assert loaded.encode(()).shape == (0, 6)
    assert loaded.encode(["dog"]).shape == (1, 6)
