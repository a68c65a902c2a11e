"""One engine build across processes: two workers opening the same ``minilm-trt`` at once
build the engine once; the second waits on the lock file beside the engine, then loads
the first one's (no TensorRT needed: the builder and runner are stand-ins)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import structlog
from aieng_tensorrt import MiniLMTensorRT, TensorRTOptions

#: How long a step that is immediate unless the code hangs may take (a busy machine's
#: scheduling delays stay far below it; it only turns a hang into a failure).
HANG = 60.0


def test_two_openers_build_one_engine(model_dir: Path, tmp_path: Path,
                                      stand_ins: Any) -> None:
    """Two embedders of one engine opening together (two workers: separate locks of their
    own, one cache folder) build it once: the second waits for the first's build, logging
    ``cache.build_waiting``, then deserializes the engine the first stored."""
    built: list[str] = []
    building, release = threading.Event(), threading.Event()

    def build(*args: Any, **kwargs: Any) -> bytes:
        built.append(threading.current_thread().name)
        if len(built) == 1:
            building.set()
            release.wait(HANG)  # the first build lasts until the test lets it end
        return b"ENGINE"

    loaded = stand_ins(build=build).loaded
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
        assert building.wait(HANG)
        second = threading.Thread(target=open_one, name="second")
        second.start()
        # The second opener waits on the lock (or, without one, builds too): whichever
        # comes, however long the machine takes to get there.
        deadline = time.monotonic() + HANG
        while len(built) < 2 and not any(
                e["event"] == "cache.build_waiting" for e in list(logs)):
            assert time.monotonic() < deadline, "the second opener neither waited nor built"
            time.sleep(0.01)
        release.set()
        first.join(HANG)
        second.join(HANG)
    assert errors == []
    assert built == ["first"]
    assert loaded == [b"ENGINE", b"ENGINE"]
    waiting = [e for e in logs if e["event"] == "cache.build_waiting"]
    key = MiniLMTensorRT(options).cache_key("10.3.0", (9, 0), "NVIDIA H200")
    engine = tmp_path / "engines" / f"{key}.engine"
    assert [e["entry"] for e in waiting] == [str(engine)]
    assert [p.name for p in engine.parent.iterdir()] == [engine.name]  # no lock left
