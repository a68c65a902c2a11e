"""The second day: ONNX Runtime's TensorRT engine folder shared by two live sessions (two
``aieng serve`` workers), and an export whose external-data file went missing or was cut
short (a copy in half, a crash before the disk had it)."""

from __future__ import annotations

import errno
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import structlog
from aieng_onnx import _export as export_module
from aieng_onnx import _runtime
from onnx import TensorProto, helper, numpy_helper


class _Session:
    """An ``InferenceSession`` stand-in (weakly referable, like the real one)."""

    def __init__(self, path: str, **kwargs: object) -> None:
        self.providers = kwargs["providers"]


def _engines(session: _Session) -> Path:
    [(name, options)] = session.providers  # type: ignore[misc]
    assert name == "TensorrtExecutionProvider" and options["trt_engine_cache_enable"]
    return Path(options["trt_engine_cache_path"])


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT provider")
    monkeypatch.setattr(ort, "InferenceSession", _Session)
    monkeypatch.setattr(_runtime, "nvidia_driver", lambda: True)


def _open(model: Path, cache: Path) -> _Session:
    session = _runtime.open_session(model, providers=("tensorrt", "cpu"), threads=1,
                                    cache=cache)
    session.providers = session.providers[:1]  # type: ignore[attr-defined]
    return session  # type: ignore[no-any-return]


def test_live_sessions_never_share_an_engine_folder(tmp_path: Path,
                                                    recording: None) -> None:
    """ONNX Runtime writes a TensorRT engine in place while a session runs and reads it
    back as it is: two live sessions on one export get two folders (before, both wrote
    and read one folder: an engine half written by one failed the other, and every
    later session). A session gone frees its folder, which the next one takes, engines
    and all (a restart rebuilds nothing)."""
    model = tmp_path / "onnx" / "bert-1111" / "model.onnx"
    first = _open(model, tmp_path)
    second = _open(model, tmp_path)
    assert _engines(first) != _engines(second)
    assert _engines(first).parent == _engines(second).parent
    assert _engines(first).is_dir() and _engines(second).is_dir()
    (_engines(first) / "built.engine").write_bytes(b"engine")
    kept = _engines(first)
    del first
    gc.collect()
    third = _open(model, tmp_path)
    assert _engines(third) == kept and (kept / "built.engine").read_bytes() == b"engine"
    assert _engines(third) != _engines(second)


_HOLD = """
import sys, time
from pathlib import Path
from aieng_onnx import _runtime
folder, fd = _runtime.engine_slot(Path(sys.argv[1]))
print(folder, flush=True)
sys.stdin.readline()
"""


def test_another_process_holds_its_engine_folder(tmp_path: Path) -> None:
    """A session of another process (another worker) keeps its folder while it lives;
    once it ends (killed too), its folder is free again."""
    engines = tmp_path / "tensorrt" / "bert-1111" / "ort1-trt2"
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(engines)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        theirs = Path(child.stdout.readline().strip())
        ours, fd = _runtime.engine_slot(engines)
        assert fd is not None
        assert theirs == engines / "slot-0" and ours == engines / "slot-1"
        os.close(fd)
    finally:
        child.kill()
        child.wait()
    mine, fd = _runtime.engine_slot(engines)
    assert mine == engines / "slot-0"
    assert fd is not None
    os.close(fd)


def test_a_read_only_cache_serves_its_engines_unlocked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache on a read-only mount (a container): the engines there are read, no lock
    file can be made, and the first slot is used as it is (nobody can write to it)."""
    engines = tmp_path / "engines"
    (engines / "slot-0").mkdir(parents=True)
    real_open = os.open

    def read_only(path: object, flags: int, *args: object) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_runtime.os, "open", read_only)
    assert _runtime.engine_slot(engines) == (engines / "slot-0", None)


def _external_export(folder: Path) -> Path:
    # A tiny ONNX model keeping its weights in ``model.onnx_data`` (as optimum does for
    # models over 2 GB).
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    folder.mkdir(parents=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    location="model.onnx_data", size_threshold=0)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder / "model.onnx"


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_an_export_missing_its_external_data_is_exported_again(tmp_path: Path,
                                                               damage: str) -> None:
    """An export whose ``model.onnx_data`` is gone or cut short is damaged, and the folder
    is exported again with a warning naming the file (before, ``model.onnx`` parsed, so
    ONNX Runtime's error was raised at every load until the folder was deleted by hand)."""
    model = _external_export(tmp_path / "onnx" / "big-1111")
    assert export_module.unreadable(model) is None
    data = model.parent / "model.onnx_data"
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:10])
    why = export_module.unreadable(model)
    assert why is not None and "model.onnx_data" in why
    with structlog.testing.capture_logs() as logs:
        assert export_module.discard_damaged(model.parent) == [model]
    assert not model.parent.exists()
    assert [e["file"] for e in logs if e["event"] == "onnx.cache_damaged"] == [str(model)]
