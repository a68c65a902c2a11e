"""Shape-profile and option validation, and the plugin's registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aieng_tensorrt import ShapeProfile, TensorRTOptions
from aieng_tensorrt._profile import batches

import aieng_tensorrt
from aieng_core import ConfigError, Kernel


def test_profile_defaults_and_shapes() -> None:
    """The default profile is valid and gives set_shape's (min, opt, max) shapes."""
    assert ShapeProfile().shapes() == ((1, 1), (16, 128), (64, 256))


@pytest.mark.parametrize("numbers", [(2, 1, 4, 1, 1, 1), (1, 5, 4, 1, 1, 1),
                                     (1, 1, 1, 8, 4, 16), (1, 1, 1, 1, 32, 16)])
def test_profile_needs_min_opt_max_in_order(numbers: tuple[int, ...]) -> None:
    """min <= opt <= max is required of both dimensions, naming the dimension."""
    with pytest.raises(ValueError, match=r"min_(batch|seq) <= opt_\1 <= max_\1"):
        ShapeProfile(*numbers)


@pytest.mark.parametrize(("numbers", "error"), [((0, 1, 1, 1, 1, 1), ValueError),
                                                ((1, 1, 1, 1, 1, True), TypeError),
                                                ((1, 1, 1.5, 1, 1, 1), TypeError)])
def test_profile_needs_positive_integers(numbers: tuple[Any, ...],
                                         error: type[Exception]) -> None:
    """Each bound is an integer of at least 1."""
    with pytest.raises(error):
        ShapeProfile(*numbers)


def test_run_shape_pads_to_min_and_refuses_beyond_max() -> None:
    """A batch runs padded up to the minimums; beyond the maximums is an error."""
    profile = ShapeProfile(2, 4, 8, 8, 16, 32)
    assert profile.run_shape(1, 3) == (2, 8)
    assert profile.run_shape(8, 32) == (8, 32)
    with pytest.raises(ValueError, match="exceeds the engine profile's maximum"):
        profile.run_shape(9, 4)
    with pytest.raises(ValueError, match="exceeds"):
        profile.run_shape(1, 33)
    assert batches(17, profile) == [range(0, 8), range(8, 16), range(16, 17)]
    assert batches(0, profile) == []


def test_options_validation(tmp_path: Path) -> None:
    """onnx_path is required, precision is fp16 or fp32, batch and seq are ordered
    [min, opt, max] triples."""
    assert TensorRTOptions(onnx_path="m.onnx").profile == ShapeProfile()
    assert TensorRTOptions(onnx_path="m.onnx", batch=[1, 2, 4]).batch == (1, 2, 4)
    with pytest.raises(TypeError):
        TensorRTOptions()  # type: ignore[call-arg]
    for bad, match in (({"onnx_path": " "}, "onnx_path"),
                       ({"precision": "int8"}, "precision"),
                       ({"batch": (1, 2)}, "batch must be"),
                       ({"batch": 5}, "batch must be \\[min, opt, max\\] integers, got 5"),
                       ({"seq": "1,2,3"}, "seq must be"),
                       ({"seq": (1, "2", 3)}, "seq must be"),
                       ({"seq": (64, 32, 128)}, "min_seq <= opt_seq"),
                       ({"workspace_mb": 1}, "workspace_mb"),
                       ({"device": -1}, "device")):
        with pytest.raises((TypeError, ValueError), match=match):
            TensorRTOptions(**{"onnx_path": "m.onnx", **bad})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_plugin_registers_minilm_trt(aieng_kernel: Kernel, register_plugin: Any) -> None:
    """The plugin offers ``minilm-trt``; building a pipeline imports no TensorRT, and a
    bad profile fails to load naming the component's table."""
    with register_plugin(aieng_tensorrt, "tensorrt") as info:
        assert info.status == "loaded", info.error
        aieng_kernel.pipeline({"pipeline": {"name": "trt"}, "components": {
            "embed": {"use": "minilm-trt", "onnx_path": "model.onnx", "seq": [1, 64, 128]}}})
        with pytest.raises(ConfigError, match="components.embed"):
            aieng_kernel.pipeline({"pipeline": {"name": "trt"}, "components": {
                "embed": {"use": "minilm-trt", "onnx_path": "m.onnx",
                          "batch": [4, 2, 8]}}})


def _model(folder: Path, config: dict[str, Any] | None) -> Path:
    """A folder with a dummy ONNX file, a tokenizer file and ``config`` as config.json."""
    import json

    (folder / "model.onnx").write_bytes(b"not really onnx")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder / "model.onnx"


@pytest.mark.parametrize(("config", "seq", "limit"), [
    ({"model_type": "bert", "max_position_embeddings": 512}, [1, 128, 1024], 512),
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
     [1, 128, 513], 512)])
def test_a_profile_longer_than_the_model_is_refused(tmp_path: Path, config: dict[str, Any],
                                                    seq: list[int], limit: int) -> None:
    """A ``seq`` whose max exceeds the tokens the model holds (its config.json beside the
    ONNX file) fails on open with the limit, before TensorRT is looked for (an engine
    would take minutes to build, then fail: positions beyond the model's table)."""
    from aieng_tensorrt import MiniLMTensorRT

    onnx = _model(tmp_path, config)
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(onnx), seq=seq))
    with pytest.raises(ValueError, match=rf"up to {seq[2]} tokens.*holds {limit}\b"):
        embedder.load()


@pytest.mark.parametrize("config", [
    {"model_type": "bert", "max_position_embeddings": 512},
    {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
    {"model_type": "bert"}, None])
def test_a_profile_within_the_model_passes_the_check(tmp_path: Path,
                                                     config: dict[str, Any] | None) -> None:
    """At the limit, or without a limit (no config, none in it), the check passes."""
    from aieng_tensorrt._component import check_positions

    onnx = _model(tmp_path, config)
    check_positions(TensorRTOptions(onnx_path=str(onnx), seq=[1, 128, 512]))
