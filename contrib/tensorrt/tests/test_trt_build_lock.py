"""One engine build across processes: two workers opening the same ``minilm-trt`` at once
build the engine once; the second waits on the lock file beside the engine, then loads
the first one's (no TensorRT needed: the builder and runner are stand-ins)."""

from __future__ import annotations

import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import structlog
from aieng_tensorrt import MiniLMTensorRT, TensorRTOptions


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A (dummy) ONNX file and a word-level tokenizer.json beside it."""
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"[UNK]": 0, "cat": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer.json"))
    (tmp_path / "model.onnx").write_bytes(b"not really onnx")
    return tmp_path


class _CudaDevice:
    def __init__(self, index: int) -> None:
        pass

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


def test_two_openers_build_one_engine(model_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two embedders of one engine opening together (two workers: separate locks of their
    own, one cache folder) build it once: the second waits for the first's build, logging
    ``cache.build_waiting``, then deserializes the engine the first stored."""
    from aieng_tensorrt import _component

    trt = types.SimpleNamespace(__version__="10.3.0", Logger=lambda level: None)
    trt.Logger.WARNING = 2  # type: ignore[attr-defined]
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(device=_CudaDevice))
    built: list[str] = []
    loaded: list[bytes] = []
    release = threading.Event()

    def build(*args: Any, **kwargs: Any) -> bytes:
        built.append(threading.current_thread().name)
        if len(built) == 1:
            release.wait(10)  # the first build lasts until the test lets it end
        return b"ENGINE"

    class Runner:
        def __init__(self, trt: Any, torch: Any, engine: bytes, **kwargs: Any) -> None:
            loaded.append(engine)

    monkeypatch.setattr(_component, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(_component, "require_cuda", lambda device: fake_torch)
    monkeypatch.setattr(_component, "compute_capability", lambda torch, device: (9, 0))
    monkeypatch.setattr(_component, "device_name", lambda torch, device: "NVIDIA H200")
    monkeypatch.setattr(_component, "build_engine", build)
    monkeypatch.setattr(_component, "EngineRunner", Runner)
    options = TensorRTOptions(onnx_path=str(model_dir / "model.onnx"),
                              cache_dir=str(tmp_path / "engines"))
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            MiniLMTensorRT(options).load()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with structlog.testing.capture_logs() as logs:
        first = threading.Thread(target=open_one, name="first")
        first.start()
        deadline = time.monotonic() + 10
        while not built and time.monotonic() < deadline:
            time.sleep(0.01)
        second = threading.Thread(target=open_one, name="second")
        second.start()
        # The second opener waits on the lock (or, without one, builds too).
        while time.monotonic() < deadline and len(built) < 2 and not any(
                e["event"] == "cache.build_waiting" for e in list(logs)):
            time.sleep(0.01)
        release.set()
        first.join(10)
        second.join(10)
    assert errors == []
    assert built == ["first"]
    assert loaded == [b"ENGINE", b"ENGINE"]
    waiting = [e for e in logs if e["event"] == "cache.build_waiting"]
    key = MiniLMTensorRT(options).cache_key("10.3.0", (9, 0), "NVIDIA H200")
    engine = tmp_path / "engines" / f"{key}.engine"
    assert [e["entry"] for e in waiting] == [str(engine)]
    assert [p.name for p in engine.parent.iterdir()] == [engine.name]  # no lock left
