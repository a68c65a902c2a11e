"""A causal LM exported to ONNX (with its KV cache as inputs and outputs) behind the call
that aieng-transformers' decoding loop makes of a transformers model.

The loop (``aieng_transformers._causal``: templates, sampling, stop strings, constraints,
log-probabilities, speculation, dynamic batching) calls ``model(input_ids=...,
attention_mask=..., position_ids=..., past_key_values=..., use_cache=...,
logits_to_keep=...)`` and uses the returned ``logits`` and ``past_key_values``, and of
the cache only ``get_seq_length``, ``crop`` and ``batch_select_indices``.
:class:`OrtCausalModel` answers that call with one ``session.run`` and
:class:`OrtCache` holds the past keys and values as numpy arrays, so the whole loop runs
unchanged on ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._export import KEEP_INPUT

if TYPE_CHECKING:
    from aieng_transformers._causal import CausalLM
    from aieng_transformers._templates import TemplateName

__all__ = ["OrtCache", "OrtCausalModel", "OrtOutput", "causal_lm"]


class OrtCache:
    """Past keys and values of one or more sequences: per layer a key and a value array of
    shape ``(batch, kv_heads, length, head_dim)``, in the session's input order."""

    def __init__(self, arrays: Sequence[Any]) -> None:
        self.arrays = list(arrays)

    def get_seq_length(self) -> int:
        """Positions held (the same for every sequence: batches are left-padded)."""
        return int(self.arrays[0].shape[2]) if self.arrays else 0

    def crop(self, length: int) -> None:
        """Keep the first ``length`` positions (a negative ``length`` drops that many from
        the end, as transformers' ``DynamicCache.crop``)."""
        import numpy as np

        keep = length if length >= 0 else max(self.get_seq_length() + length, 0)
        if keep >= self.get_seq_length():
            return
        self.arrays = [np.ascontiguousarray(a[:, :, :keep]) for a in self.arrays]

    def batch_select_indices(self, indices: Any) -> None:
        """Keep the sequences at ``indices`` (a torch or numpy index array), in that order."""
        import numpy as np

        rows = np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices, dtype=np.int64)
        self.arrays = [a[rows] for a in self.arrays]


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
    """

    def __init__(self, session: Any, config: Any, generation_config: Any = None) -> None:
        import torch

        self.session = session
        self.config = config
        self.generation_config = generation_config
        #: Inputs and outputs pass through host memory, whatever the provider.
        self.device = torch.device("cpu")
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
        outputs = [o.name for o in session.get_outputs()]
        self._present = [name.replace("past_key_values.", "present.") for name in self._past]
        missing = [name for name in ["logits", *self._present] if name not in outputs]
        if missing:
            raise ValueError(f"the ONNX model lacks the outputs {missing}")
        self._outputs = ["logits", *self._present]

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
        if past_key_values is not None and past_key_values.arrays:
            feed.update(zip(self._past, past_key_values.arrays, strict=True))
        else:
            empty = np.zeros((batch, self._empty_shape[0], 0, self._empty_shape[1]),
                             dtype=np.float32)
            feed.update({name: empty for name in self._past})
        # No lock here: the decoding loop holds its model's lock around each call, and an
        # ONNX Runtime session may run from several threads anyway.
        logits, *present = self.session.run(self._outputs, feed)
        if logits_to_keep and logits.shape[1] > logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return OrtOutput(torch.from_numpy(np.ascontiguousarray(logits)),
                         OrtCache(present) if use_cache else None)


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


def causal_lm(session: Any, folder: Path, *, template: TemplateName = "auto") -> CausalLM:
    """aieng-transformers' :class:`~aieng_transformers._causal.CausalLM` over ``session``,
    with the config, generation config and tokenizer of the export ``folder``; blocking."""
    from aieng_transformers._causal import CausalLM
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    generation: Any = None
    if (folder / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(folder), local_files_only=True)
    tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        str(folder), local_files_only=True)
    return CausalLM(OrtCausalModel(session, config, generation), tokenizer, template=template)
