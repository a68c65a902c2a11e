"""A causal LM exported to ONNX (with its KV cache as inputs and outputs) behind the call
that aieng-transformers' decoding loop makes of a transformers model.

The loop (``aieng_transformers._causal``: templates, sampling, stop strings, constraints,
log-probabilities, speculation, dynamic batching) calls ``model(input_ids=...,
attention_mask=..., position_ids=..., past_key_values=..., use_cache=...,
logits_to_keep=...)`` and uses the returned ``logits`` and ``past_key_values``, and of
the cache only ``get_seq_length``, ``crop`` and ``batch_select_indices``.
:class:`OrtCausalModel` answers that call with one ``session.run`` and
:class:`OrtCache` holds the past keys and values, so the whole loop runs unchanged on
ONNX Runtime.

On a GPU provider the cache stays on the device: the session runs with I/O binding, the
present keys and values are bound to device memory and fed back as the next pass's past,
only the logits (and the few ids of each pass) cross to and from the host, and the two
things the loop does to a cache (crop it, keep some rows) run on the device as two small
ONNX graphs (:class:`CacheOps`). On the CPU the plain ``session.run`` with numpy arrays
is the default; I/O binding can be asked for there too (``io_binding = true``), which is
how the device path is tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from aieng_hookspecs import MODEL_BUILD

from ._export import KEEP_INPUT

if TYPE_CHECKING:
    from aieng_transformers._causal import CausalLM
    from aieng_transformers._templates import TemplateName

__all__ = ["CacheOps", "OrtCache", "OrtCausalModel", "OrtOutput", "causal_lm",
           "session_device"]

#: ONNX Runtime's element type names a KV cache may have: numpy's and ONNX's names.
_DTYPES = {"tensor(float)": ("float32", 1), "tensor(float16)": ("float16", 10),
           "tensor(double)": ("float64", 11)}
#: Providers whose tensors live in CUDA device memory.
_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def session_device(session: Any) -> tuple[str, int]:
    """Where ``session`` keeps its tensors: ``("cuda", device_id)`` when its first provider
    is CUDA or TensorRT, else ``("cpu", 0)``."""
    provider = session.get_providers()[0]
    if provider not in _CUDA_PROVIDERS:
        return "cpu", 0
    options = session.get_provider_options().get(provider, {})
    return "cuda", int(options.get("device_id", 0) or 0)


class CacheOps:
    """Crop and row selection of a KV cache held as ``OrtValue`` tensors on a device, without a
    round trip through host memory: two small ONNX graphs over all the cache's tensors at
    once — ``Slice`` on the position axis and ``Gather`` on the batch axis — run with I/O
    binding on the same device as the model.

    :param count: tensors in the cache (two per layer).
    :param element_type: their ONNX element type (``onnx.TensorProto.FLOAT``…).
    :param device: ``("cuda", id)`` or ``("cpu", 0)``.
    """

    def __init__(self, count: int, element_type: int, device: tuple[str, int]) -> None:
        self.count = count
        self.device = device
        self._crop = self._session(self._graph("crop", element_type))
        self._select = self._session(self._graph("select", element_type))

    def crop(self, values: Sequence[Any], stop: int) -> list[Any]:
        """The first ``stop`` positions of every tensor."""
        import numpy as np

        return self._run(self._crop, values, np.array([stop], dtype=np.int64))

    def select(self, values: Sequence[Any], rows: Any) -> list[Any]:
        """The rows ``rows`` (an int64 array) of every tensor, in that order."""
        return self._run(self._select, values, rows)

    def _run(self, session: Any, values: Sequence[Any], argument: Any) -> list[Any]:
        binding = session.io_binding()
        for i, value in enumerate(values):
            binding.bind_ortvalue_input(f"x{i}", value)
        binding.bind_cpu_input("argument", argument)
        for i in range(len(values)):
            binding.bind_output(f"y{i}", self.device[0], self.device[1])
        return _run_binding(session, binding, self.device[0])

    def _graph(self, kind: str, element_type: int) -> bytes:
        from onnx import TensorProto, helper

        shape = ["batch", "heads", "length", "width"]
        inputs = [helper.make_tensor_value_info(f"x{i}", element_type, shape)
                  for i in range(self.count)]
        outputs = [helper.make_tensor_value_info(f"y{i}", element_type, shape)
                   for i in range(self.count)]
        inputs.append(helper.make_tensor_value_info("argument", TensorProto.INT64, ["n"]))
        if kind == "crop":
            constants = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                         helper.make_tensor("axis", TensorProto.INT64, [1], [2])]
            nodes = [helper.make_node("Slice", [f"x{i}", "zero", "argument", "axis"], [f"y{i}"])
                     for i in range(self.count)]
        else:
            constants = []
            nodes = [helper.make_node("Gather", [f"x{i}", "argument"], [f"y{i}"], axis=0)
                     for i in range(self.count)]
        graph = helper.make_graph(nodes, f"kv_{kind}", inputs, outputs, constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return bytes(model.SerializeToString())

    def _session(self, model: bytes) -> Any:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device[0] == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device[1]}))
        return ort.InferenceSession(model, sess_options=options, providers=providers)


class OrtCache:
    """Past keys and values of one or more sequences: per layer a key and a value tensor of
    shape ``(batch, kv_heads, length, head_dim)``, in the session's input order — numpy
    arrays, or with ``ops`` ``OrtValue`` tensors on the session's device (cropped and
    selected there by ``ops``)."""

    def __init__(self, arrays: Sequence[Any], ops: CacheOps | None = None) -> None:
        self.arrays = list(arrays)
        self.ops = ops

    def get_seq_length(self) -> int:
        """Positions held (the same for every sequence: batches are left-padded)."""
        if not self.arrays:
            return 0
        first = self.arrays[0]
        return int((first.shape() if self.ops is not None else first.shape)[2])

    def crop(self, length: int) -> None:
        """Keep the first ``length`` positions (a negative ``length`` drops that many from
        the end, as transformers' ``DynamicCache.crop``)."""
        import numpy as np

        keep = length if length >= 0 else max(self.get_seq_length() + length, 0)
        if keep >= self.get_seq_length():
            return
        if self.ops is not None:
            self.arrays = self.ops.crop(self.arrays, keep)
        else:
            self.arrays = [np.ascontiguousarray(a[:, :, :keep]) for a in self.arrays]

    def batch_select_indices(self, indices: Any) -> None:
        """Keep the sequences at ``indices`` (a torch or numpy index array), in that order."""
        import numpy as np

        rows = np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices, dtype=np.int64)
        if self.ops is not None:
            self.arrays = self.ops.select(self.arrays, np.ascontiguousarray(rows))
        else:
            self.arrays = [a[rows] for a in self.arrays]

    def host(self) -> list[Any]:
        """The tensors as numpy arrays (copied from the device when they live there)."""
        return [a.numpy() for a in self.arrays] if self.ops is not None else list(self.arrays)


@attrs.frozen
class OrtOutput:
    """What a forward pass returns: ``logits`` (a float32 torch tensor,
    ``(batch, positions, vocab)``) and the updated cache (``None`` without ``use_cache``)."""

    logits: Any
    past_key_values: OrtCache | None


class OrtCausalModel:
    """An ONNX Runtime session on a causal LM exported with its KV cache (optimum-onnx's
    ``text-generation-with-past``: inputs ``input_ids``, ``attention_mask``, optionally
    ``position_ids``, and ``past_key_values.<i>.key`` / ``.value``; outputs ``logits`` and
    ``present.<i>.key`` / ``.value``), called like a transformers causal LM. When the
    export has the ``logits_to_keep`` input (:func:`~._export.keep_logits_input`), a call's
    ``logits_to_keep`` reaches the graph, so the output head runs on those positions only.

    :param session: the ``InferenceSession``.
    :param config: the model's transformers config (``config.json`` of the export).
    :param generation_config: its generation config, if the export has one.
    :param io_binding: keep the KV cache where the session runs (I/O binding, the cache
        as ``OrtValue`` tensors, cropped and selected by :class:`CacheOps`) rather than pass
        it through host memory as numpy arrays each pass; ``None`` (default): when the
        session's first provider is CUDA or TensorRT.
    """

    def __init__(self, session: Any, config: Any, generation_config: Any = None, *,
                 io_binding: bool | None = None) -> None:
        import torch

        self.session = session
        self.config = config
        self.generation_config = generation_config
        #: The torch device of the logits the loop gets (the host: it samples there).
        self.device = torch.device("cpu")
        #: Where the session keeps tensors: ``("cuda", id)`` or ``("cpu", 0)``.
        self.session_device = session_device(session)
        inputs = session.get_inputs()
        self._names = {i.name for i in inputs}
        self._past = [i.name for i in inputs if i.name.startswith("past_key_values.")]
        if "input_ids" not in self._names or not self._past:
            raise ValueError("the ONNX model is not a causal LM exported with its KV cache "
                             "(no input_ids or no past_key_values.* inputs): export it with "
                             "the task text-generation-with-past")
        shapes = {i.name: i.shape for i in inputs}
        first = shapes[self._past[0]]
        heads = first[1] if isinstance(first[1], int) else _kv_heads(config)
        width = first[3] if isinstance(first[3], int) else _head_dim(config)
        self._empty_shape = (int(heads), int(width))
        kind = {i.name: i.type for i in inputs}[self._past[0]]
        if kind not in _DTYPES:
            raise ValueError(f"the ONNX model's KV cache is {kind}; supported: "
                             f"{sorted(_DTYPES)}")
        self._dtype, element_type = _DTYPES[kind]
        outputs = [o.name for o in session.get_outputs()]
        self._present = [name.replace("past_key_values.", "present.") for name in self._past]
        missing = [name for name in ["logits", *self._present] if name not in outputs]
        if missing:
            raise ValueError(f"the ONNX model lacks the outputs {missing}")
        self._outputs = ["logits", *self._present]
        if io_binding is None:
            io_binding = self.session_device[0] == "cuda"
        #: Ops on a cache kept on the device; ``None`` when the cache passes through numpy.
        self.cache_ops = CacheOps(len(self._past), element_type, self.session_device) \
            if io_binding else None

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None,
                 past_key_values: OrtCache | None = None, use_cache: bool = True,
                 logits_to_keep: int = 0, **_: Any) -> OrtOutput:
        """One forward pass: ``input_ids`` ``(batch, new)`` after the cached positions."""
        import numpy as np
        import torch

        ids = _numpy(input_ids).astype(np.int64, copy=False)
        batch, new = ids.shape
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if attention_mask is None:
            mask = np.ones((batch, past + new), dtype=np.int64)
        else:
            mask = _numpy(attention_mask).astype(np.int64, copy=False)
        if position_ids is None:
            # Left-padded rows count positions from their first real token.
            positions = np.maximum(np.cumsum(mask, axis=1)[:, -new:] - 1, 0)
        else:
            positions = _numpy(position_ids).astype(np.int64, copy=False)
        feed: dict[str, Any] = {"input_ids": np.ascontiguousarray(ids),
                                "attention_mask": np.ascontiguousarray(mask)}
        if "position_ids" in self._names:
            feed["position_ids"] = np.ascontiguousarray(positions)
        if KEEP_INPUT in self._names:
            feed[KEEP_INPUT] = np.array([logits_to_keep or new], dtype=np.int64)
        past_values: list[Any] = []
        if past_key_values is not None and past_key_values.arrays:
            past_values = past_key_values.arrays
            if (past_key_values.ops is None) != (self.cache_ops is None):
                raise ValueError("the cache was made by a model with other I/O binding")
        # No lock here: the decoding loop holds its model's lock around each call, and an
        # ONNX Runtime session may run from several threads anyway.
        if not past_values:  # the first pass: no position cached yet
            empty = np.zeros((batch, self._empty_shape[0], 0, self._empty_shape[1]),
                             dtype=self._dtype)
            feed.update(dict.fromkeys(self._past, empty))
        if self.cache_ops is None:
            if past_values:
                feed.update(zip(self._past, past_values, strict=True))
            logits, *present = self.session.run(self._outputs, feed)
        else:
            logits, present = self._run_bound(feed, past_values)
        if logits_to_keep and logits.shape[1] > logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return OrtOutput(torch.from_numpy(np.ascontiguousarray(logits)),
                         OrtCache(present, self.cache_ops) if use_cache else None)

    def _run_bound(self, feed: dict[str, Any], past: Sequence[Any]) -> tuple[Any, list[Any]]:
        """One pass with I/O binding: the host arrays of ``feed`` copied in (the first
        pass's empty past among them), ``past`` bound where it lives, the present left on
        the session's device, the logits on the host."""
        device, index = self.session_device
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        if past:
            for name, value in zip(self._past, past, strict=True):
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present:
            binding.bind_output(name, device, index)
        logits, *present = _run_binding(self.session, binding, device)
        return logits.numpy(), present


def _run_binding(session: Any, binding: Any, device: str) -> list[Any]:
    """Run ``session`` on ``binding``; its outputs (``OrtValue``), finished on ``device``
    before they are returned: the next reader may be another session (another stream)."""
    session.run_with_iobinding(binding)
    if device != "cpu":
        binding.synchronize_outputs()
    return list(binding.get_outputs())


def _numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _kv_heads(config: Any) -> int:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return int(heads)


def _head_dim(config: Any) -> int:
    width = getattr(config, "head_dim", None)
    return int(width) if width else int(config.hidden_size) // int(config.num_attention_heads)


def causal_lm(session: Any, folder: Path, *, template: TemplateName = "auto",
              io_binding: bool | None = None) -> CausalLM:
    """aieng-transformers' :class:`~aieng_transformers._causal.CausalLM` over ``session``,
    with the config, generation config and tokenizer of the export ``folder``; blocking.
    ``io_binding`` as :class:`OrtCausalModel`'s."""
    from aieng_transformers._causal import CausalLM

    with MODEL_BUILD:  # transformers' first imports, one thread at a time
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        config: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                 trust_remote_code=False)
        generation: Any = None
        if (folder / "generation_config.json").is_file():
            generation = GenerationConfig.from_pretrained(str(folder), local_files_only=True)
        tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
            str(folder), local_files_only=True, trust_remote_code=False)
    model = OrtCausalModel(session, config, generation, io_binding=io_binding)
    return CausalLM(model, tokenizer, template=template)
