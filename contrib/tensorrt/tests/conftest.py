"""What the tests of ``minilm-trt``'s load path share: a model folder, and TensorRT, a GPU,
the engine builder and runner as ``load`` sees them on a GPU machine (none is installed
here: see README.md)."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder with a (dummy) ONNX file and a real word-level tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(
        ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"])}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "model.onnx").write_bytes(b"not really onnx")
    return tmp_path


class FakeCudaTorch:
    """torch as ``load`` sees it on a GPU machine: a device context that records which
    device is current."""

    def __init__(self) -> None:
        self.current = 0
        torch_cuda = self

        class _Device:
            def __init__(self, index: int) -> None:
                self.index, self.before = index, 0

            def __enter__(self) -> None:
                self.before, torch_cuda.current = torch_cuda.current, self.index

            def __exit__(self, *exc: object) -> None:
                torch_cuda.current = self.before

        self.cuda = types.SimpleNamespace(device=_Device)


@dataclasses.dataclass
class StandIns:
    """What the stand-ins saw: the engines the default builder built, and for each engine
    deserialized, the engine and the CUDA device current then."""

    torch: FakeCudaTorch
    built: list[bytes] = dataclasses.field(default_factory=list)
    loaded: list[bytes] = dataclasses.field(default_factory=list)
    devices: list[int] = dataclasses.field(default_factory=list)


@pytest.fixture
def fake_cuda_torch() -> FakeCudaTorch:
    """A fresh :class:`FakeCudaTorch`."""
    return FakeCudaTorch()


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StandIns]:
    """Put TensorRT 10.3.0, an "NVIDIA H200" (compute capability 9.0), the builder and the
    runner in ``load``'s way: ``stand_ins()`` builds ``b"ENGINE"``, ``stand_ins(build=f)``
    builds with ``f``; a runner given another engine fails as a damaged one does."""
    from aieng_tensorrt import _component
    from aieng_tensorrt._engine import EngineBuildError

    def install(build: Callable[..., bytes] | None = None) -> StandIns:
        seen = StandIns(FakeCudaTorch())
        trt = types.SimpleNamespace(__version__="10.3.0", Logger=lambda level: None)
        trt.Logger.WARNING = 2

        def build_engine(*args: Any, **kwargs: Any) -> bytes:
            seen.built.append(b"ENGINE")
            return b"ENGINE"

        class Runner:
            def __init__(self, trt: Any, torch: Any, engine: bytes, **kwargs: Any) -> None:
                seen.loaded.append(engine)
                seen.devices.append(seen.torch.current)
                if engine != b"ENGINE":
                    raise EngineBuildError("TensorRT could not deserialize the cached engine")

        monkeypatch.setattr(_component, "require_tensorrt", lambda: trt)
        monkeypatch.setattr(_component, "require_cuda", lambda device: seen.torch)
        monkeypatch.setattr(_component, "compute_capability", lambda torch, device: (9, 0))
        monkeypatch.setattr(_component, "device_name", lambda torch, device: "NVIDIA H200")
        monkeypatch.setattr(_component, "build_engine", build or build_engine)
        monkeypatch.setattr(_component, "EngineRunner", Runner)
        return seen

    return install
