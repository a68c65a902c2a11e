"""Building a TensorRT engine from ONNX, and running it on torch CUDA tensors.

Written against the TensorRT 10 Python API (``tensorrt`` is passed in, never imported
here): ``Builder`` → network → ``OnnxParser`` → ``BuilderConfig`` with one optimization
profile → ``build_serialized_network``; ``Runtime.deserialize_cuda_engine`` → execution
context → ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

from ._profile import ShapeProfile

__all__ = ["EngineBuildError", "EngineRunner", "build_engine"]

#: The encoder output the embedder pools.
HIDDEN = "last_hidden_state"


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


def build_engine(trt: Any, onnx: bytes, profile: ShapeProfile, *, precision: str,
                 workspace_bytes: int, logger: Any, path: str | PathLike[str] | None = None
                 ) -> bytes:
    """A serialized engine of the ONNX graph ``onnx``, for ``profile`` and ``precision``.

    ``path`` is the file ``onnx`` was read from: TensorRT's parser finds the weights of a
    model with external data (``model.onnx_data``) next to it, and cannot without it.
    Every network input is a ``(batch, seq)`` tensor and gets the profile's shapes.

    :raises EngineBuildError: with the parser's errors, or when the build fails.
    """
    builder = trt.Builder(logger)
    flags = 0
    if int(str(trt.__version__).split(".")[0]) < 10:  # explicit batch is implicit from 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # OnnxParser.parse(model, path=None), TensorRT 8 to 10: path resolves external data.
    parsed = parser.parse(onnx) if path is None else parser.parse(onnx, path=str(path))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if len(tensor.shape) != 2:
            raise EngineBuildError(f"input {tensor.name!r} has shape {tuple(tensor.shape)}; "
                                   f"an encoder's inputs are (batch, seq)")
        optimization.set_shape(tensor.name, low, opt, high)
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build the engine (its log says why)")
    return bytes(serialized)


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
             trt.DataType.BOOL: torch.bool}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    return table[dtype]


class EngineRunner:
    """A deserialized engine and one execution context; ``run`` is not thread-safe (the
    embedder holds a lock around it)."""

    def __init__(self, trt: Any, torch: Any, engine: bytes, *, device: int,
                 logger: Any) -> None:
        self.trt, self.torch = trt, torch
        self.device = torch.device("cuda", device)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise EngineBuildError("TensorRT could not deserialize the cached engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.hidden = HIDDEN if HIDDEN in self.outputs else self.outputs[0]

    def run(self, feeds: Mapping[str, Any]) -> Any:
        """Run the engine on ``feeds`` (``{input name: (batch, seq) tensor}``, on any
        device); returns the hidden states, a float32 CUDA tensor."""
        # The engine lives on its device, which must be current when it runs; a worker
        # thread's current device is 0.
        with self.torch.cuda.device(self.device):
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, Any]) -> Any:
        torch, engine, context = self.torch, self.engine, self.context
        keep = []
        for name in self.inputs:
            if name not in feeds:
                raise KeyError(f"the engine needs input {name!r}")
            tensor = feeds[name].to(device=self.device, dtype=_torch_dtype(
                self.trt, torch, engine.get_tensor_dtype(name))).contiguous()
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        results = {}
        for name in self.outputs:
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, device=self.device, dtype=_torch_dtype(
                self.trt, torch, engine.get_tensor_dtype(name)))
            context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (its log says why)")
        stream.synchronize()
        return results[self.hidden].float()
