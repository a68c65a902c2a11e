"""ONNX Runtime sessions and the encoder loop: tokenize, batch by length, pool, normalize."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ._options import PROVIDERS

__all__ = ["OnnxEncoder", "open_session"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]

log = structlog.get_logger(__name__)


def _clean(text: str) -> str:
    # Lone surrogates cannot be encoded as UTF-8; the tokenizer would raise on them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def open_session(model: Path, *, providers: Sequence[str], threads: int,
                 cache: Path | None = None) -> Any:
    """An ``InferenceSession`` on ``model`` trying ``providers`` (option names) in order;
    blocking. What it really got is ``session.get_providers()``: ONNX Runtime drops a
    provider whose libraries (CUDA, cuDNN, TensorRT) or device are missing.

    :param cache: where TensorRT keeps its engines (rebuilding one takes minutes).
    """
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    for name in providers:
        full = PROVIDERS[name]
        if full not in available:
            continue
        if name == "tensorrt" and cache is not None:
            engines = cache / "tensorrt"
            chosen.append((full, {"trt_engine_cache_enable": True,
                                  "trt_engine_cache_path": str(engines)}))
        else:
            chosen.append(full)
    if not chosen:
        chosen.append(PROVIDERS["cpu"])
    return ort.InferenceSession(str(model), sess_options=options, providers=chosen)


class OnnxEncoder:
    """An ONNX encoder (``last_hidden_state`` out) and its tokenizer; ``encode`` is
    blocking and serialized by a lock.

    :param session: an ONNX Runtime session on the encoder.
    :param tokenizer: a ``tokenizers.Tokenizer``; its own padding and truncation settings
        are replaced (no padding, truncation at ``max_length``).
    """

    def __init__(self, session: Any, tokenizer: Any, *, dimension: int, batch_size: int,
                 max_length: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.batch_size = batch_size
        self.max_length = max_length
        self.dimension = dimension
        self.inputs = {i.name for i in session.get_inputs()}
        self.output = session.get_outputs()[0].name
        #: The execution providers the session really got, best first.
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalized mean-pooled vector per text, in input order."""
        import numpy as np

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch([_clean(t) for t in texts])
        # Longest first, by tokens, so each batch pads to lengths close to its own.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids), reverse=True)
        with self.lock:
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                width = len(encodings[rows[0]].ids)
                ids = np.zeros((len(rows), width), dtype=np.int64)
                types = np.zeros((len(rows), width), dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    enc = encodings[i]
                    n = len(enc.ids)
                    ids[r, :n] = enc.ids
                    types[r, :n] = enc.type_ids
                    mask[r, :n] = 1
                feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
                hidden = self.session.run(
                    [self.output], {k: a for k, a in feed.items() if k in self.inputs})[0]
                weights = mask[:, :, None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
                norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                out[rows] = pooled / norms
        return out
