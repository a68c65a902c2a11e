"""ONNX models whose weights live in external data files (exports over 2 GB,
``model.onnx_data``): the engine-cache key follows those files, and models without
external data keep the keys they had (no TensorRT needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from aieng_tensorrt import MiniLMTensorRT, ShapeProfile, TensorRTOptions, engine_cache_key
from aieng_tensorrt._cache import external_data_digests, onnx_digest
from onnx import TensorProto, helper, numpy_helper

GPU = ("10.3.0", (9, 0), "NVIDIA H200")


def _model(*, constant_in_subgraph: bool = False) -> onnx.ModelProto:
    """y = relu(x @ w1) @ w2, with (optionally) a Constant inside an If branch."""
    w1 = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "w1")
    w2 = numpy_helper.from_array(np.ones((8, 8), dtype=np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    if constant_in_subgraph:
        value = numpy_helper.from_array(np.full((8,), 3.0, dtype=np.float32), "c")
        branch = helper.make_graph(
            [helper.make_node("Constant", [], ["c"], value=value)], "branch", [],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [8])])
        nodes.append(helper.make_node("If", ["cond"], ["z"], then_branch=branch,
                                      else_branch=branch))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _key(path: Path) -> str:
    return MiniLMTensorRT(TensorRTOptions(onnx_path=str(path))).cache_key(*GPU)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_keys_of_models_without_external_data_are_unchanged(tmp_path: Path) -> None:
    """Engines cached before external data counted keep their keys: the key of given
    inputs is pinned, and a model with its weights inline keys as its bytes alone did.
    (The pins moved once since, on purpose: the workspace limit joined the key, cache
    format 3.)"""
    base = {"onnx_sha256": "a" * 64, "trt_version": "10.13.0.35",
            "compute_capability": (9, 0), "device_name": "NVIDIA H200",
            "precision": "fp16", "profile": ShapeProfile(), "workspace_mb": 1024}
    pinned = "4aa4e59ed9d56007b2a9108b37ca84af64a7f695f582e938ac041890dac6073e"
    assert engine_cache_key(**base) == pinned  # type: ignore[arg-type]
    assert engine_cache_key(**base, external_data={}) == pinned  # type: ignore[arg-type]
    not_onnx = tmp_path / "graph.onnx"
    not_onnx.write_bytes(b"graph-1")  # TensorRT's parser reports it when it builds
    assert external_data_digests(not_onnx) == {}
    assert MiniLMTensorRT(TensorRTOptions(onnx_path=str(not_onnx))).cache_key(
        "10.0", (8, 6)) == "f02189fabdaae5c8a2fba7972afb85d4e05b9109e7fca99c38afcadefacffd83"
    inline = tmp_path / "inline.onnx"
    onnx.save_model(_model(constant_in_subgraph=True), str(inline))
    assert external_data_digests(inline) == {}
    assert _key(inline) == engine_cache_key(
        onnx_sha256=onnx_digest(inline), trt_version=GPU[0], compute_capability=GPU[1],
        device_name=GPU[2], precision="fp16", profile=ShapeProfile(), workspace_mb=1024)


def test_key_follows_the_external_data_bytes(tmp_path: Path) -> None:
    """A re-export with new weights of the same size in ``model.onnx_data`` (the ``.onnx``
    file byte for byte the same) is another engine: its key changes."""
    path = tmp_path / "model.onnx"
    onnx.save_model(_model(), str(path), save_as_external_data=True,
                    location="model.onnx_data", size_threshold=0)
    data = tmp_path / "model.onnx_data"
    graph_bytes, size = path.read_bytes(), data.stat().st_size
    first = _key(path)
    assert external_data_digests(path) == {"model.onnx_data": onnx_digest(data)}
    _flip_last_byte(data)
    assert path.read_bytes() == graph_bytes and data.stat().st_size == size
    assert _key(path) != first
    _flip_last_byte(data)
    assert _key(path) == first


def test_every_external_data_file_counts(tmp_path: Path) -> None:
    """Each tensor in its own file (``all_tensors_to_one_file=False``), a Constant in a
    subgraph included: each file referenced is in the key, and a change to any changes
    it; an added file is another key."""
    path = tmp_path / "model.onnx"
    onnx.save_model(_model(constant_in_subgraph=True), str(path),
                    save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0, convert_attribute=True)
    digests = external_data_digests(path)
    assert len(digests) == 3  # w1, w2 and the If branch's Constant
    assert all((tmp_path / location).is_file() for location in digests)
    first = _key(path)
    seen = {first}
    for location in digests:
        _flip_last_byte(tmp_path / location)
        seen.add(_key(path))
    assert len(seen) == 4
    base = {"onnx_sha256": "a" * 64, "trt_version": GPU[0], "compute_capability": GPU[1],
            "device_name": GPU[2], "precision": "fp16", "profile": ShapeProfile(),
            "workspace_mb": 1024}
    one = engine_cache_key(**base, external_data={"a.bin": "1" * 64})  # type: ignore[arg-type]
    two = engine_cache_key(**base, external_data={"a.bin": "1" * 64,  # type: ignore[arg-type]
                                                  "b.bin": "2" * 64})
    assert len({engine_cache_key(**base), one, two}) == 3  # type: ignore[arg-type]


def test_missing_external_data_file_is_named(tmp_path: Path) -> None:
    """A model copied without its data file fails at open with the file it needs, not
    minutes later in TensorRT's parser."""
    path = tmp_path / "model.onnx"
    onnx.save_model(_model(), str(path), save_as_external_data=True,
                    location="model.onnx_data", size_threshold=0)
    (tmp_path / "model.onnx_data").unlink()
    with pytest.raises(FileNotFoundError, match="model.onnx_data"):
        _key(path)
