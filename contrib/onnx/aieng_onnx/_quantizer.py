"""``ort-int8``: quantize an ONNX model to int8 (dynamic, per-channel) and measure the cost."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_process
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import QuantizeResult

from ._embedder import encoder_width, load_tokenizer
from ._export import EXPORT_FILE, scratch_name, weights_size
from ._options import OrtInt8Options
from ._paths import ModelNotFound
from ._quantize import SCHEMES, matmuls_named, quantize, weights
from ._runtime import OnnxEncoder, open_session

if TYPE_CHECKING:
    from aieng_transformers._causal import CausalLM

__all__ = ["QUALITY_SENTENCES", "OrtInt8Quantizer"]

log = structlog.get_logger(__name__)

#: The fixed sentences whose fp32 and int8 embeddings are compared.
QUALITY_SENTENCES = (
    "A cat is sitting on the mat.",
    "There is a kitten resting on a rug.",
    "The stock market fell sharply today.",
    "Share prices dropped steeply this morning.",
    "Reciprocal rank fusion merges several ranked lists into one.",
    "How do I write a plugin for the retrieval pipeline?",
    "The weather in Zürich was cold and clear.",
    "Quantization trades a little accuracy for smaller, faster models.",
)


class OrtInt8Quantizer:
    """Quantizes an ONNX model (a ``.onnx`` file, or a folder holding ``model.onnx``) with
    ONNX Runtime's dynamic quantization: int8 weights with one scale per output channel,
    activations quantized at run time.

    Schemes ``q8`` and ``q4`` quantize block-wise instead (ONNX Runtime's
    ``MatMulNBits``: 8 or 4 bits per weight, a scale per 32; see ``smollm2-onnx``).

    The result is ``<name>.<scheme>.onnx`` beside the source (or in ``output_dir``). When the
    model is an encoder (a ``config.json`` and a tokenizer beside it, ``last_hidden_state``
    out), ``quality`` holds the mean and the lowest cosine between the fp32 and int8
    mean-pooled embeddings of :data:`QUALITY_SENTENCES`; when it is a causal LM exported
    with its KV cache (``smollm2-onnx``'s export), the perplexity before and after on
    aieng-transformers' held-out paragraph; otherwise it is empty.

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: OrtInt8Options | None = None) -> None:
        self.options = options if options is not None else OrtInt8Options()

    def _measurable(self, model: Path, folder: Path) -> OnnxEncoder | CausalLM | None:
        # What ``model``'s quality is measured with, over one session: an encoder
        # (``last_hidden_state`` out) or a causal LM exported with its KV cache; None when
        # no config and tokenizer sit beside it, or it is neither.
        config_file = folder / "config.json"
        if not config_file.is_file() or not any(
                (folder / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
            return None
        session = open_session(model, providers=("cpu",), threads=self.options.intra_op_threads)
        names = {i.name for i in session.get_inputs()}
        if "input_ids" in names and any(n.startswith("past_key_values.") for n in names):
            from ._causal import causal_lm

            return causal_lm(session, folder) if (folder / "tokenizer.json").is_file() else None
        if session.get_outputs()[0].name != "last_hidden_state":
            return None
        try:
            width = encoder_width(folder)
        except (ValueError, AttributeError, OSError):  # a config transformers cannot read
            return None
        return OnnxEncoder(session, load_tokenizer(folder), dimension=width,
                           batch_size=len(QUALITY_SENTENCES), max_length=128)

    def quality(self, source: Path, quantized: Path) -> dict[str, float]:
        """What quantizing cost, measured on fixed held-out inputs; blocking. An encoder:
        cosines between ``source``'s and ``quantized``'s embeddings of the fixed
        sentences. A causal LM exported with its KV cache: perplexity on
        aieng-transformers' held-out paragraph before and after. Otherwise empty."""
        import numpy as np

        before = self._measurable(source, source.parent)
        if before is None:
            return {}
        after = self._measurable(quantized, source.parent)
        if isinstance(before, OnnxEncoder) and isinstance(after, OnnxEncoder):
            cosines = np.sum(before.encode(QUALITY_SENTENCES) * after.encode(QUALITY_SENTENCES),
                             axis=1)
            return {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min())}
        if isinstance(before, OnnxEncoder) or after is None or isinstance(after, OnnxEncoder):
            return {}
        from aieng_transformers._heldout import HELDOUT_TEXT

        before_ppl, after_ppl = before.perplexity(HELDOUT_TEXT), after.perplexity(HELDOUT_TEXT)
        return {"perplexity_before": before_ppl, "perplexity_after": after_ppl,
                "perplexity_delta": after_ppl - before_ppl}

    def quantize(self, source: Path, scheme: str = "int8") -> QuantizeResult:
        """Quantize ``source`` (an ``.onnx`` file) now with ``scheme`` (``int8``, ``q8``
        or ``q4``); blocking."""
        started = time.perf_counter()
        result = self._quantize(source, scheme)
        _log_made(source, result, time.perf_counter() - started)
        return result

    def _quantize(self, source: Path, scheme: str) -> QuantizeResult:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; ort-int8 makes {list(SCHEMES)}")
        folder = Path(self.options.output_dir).expanduser() if self.options.output_dir \
            else source.parent
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{source.stem}.{scheme}.onnx"
        scratch = scratch_name(folder, scheme, ".onnx")
        keep = matmuls_named(source, self.options.keep_fp32) \
            if self.options.keep_fp32 else ()
        try:
            quantize(source, scratch, scheme, keep=keep,
                     weights=weights(self.options.int8_weights))
            os.replace(scratch, target)
        finally:
            scratch.unlink(missing_ok=True)
        return QuantizeResult(model=str(target), scheme=scheme,
                              size_before=weights_size(source),
                              size_after=weights_size(target),
                              quality=self.quality(source, target))

    @hookimpl
    async def aieng_quantize(self, model: str, scheme: str) -> QuantizeResult | None:
        """``int8`` (dynamic, per-channel), ``q8`` or ``q4`` (block-wise ``MatMulNBits``)
        on an ONNX model (``None`` for other schemes and non-ONNX models)."""
        if scheme not in SCHEMES:
            return None
        path = Path(model).expanduser()
        source = path / EXPORT_FILE if path.is_dir() else path
        if source.suffix != ".onnx" or (path.is_dir() and not source.is_file()):
            # Not an ONNX model: a folder without model.onnx is another quantizer's (a
            # Hugging Face folder is torch-int8's, which a pipeline may hold beside this).
            return None
        if not source.is_file():
            raise ModelNotFound(f"no ONNX model at {str(source)!r}: export one first "
                                "(the `minilm-onnx` component caches its export)")
        # In a worker process, not a thread: ONNX's shape inference, protobuf parsing and
        # the first import of onnxruntime.quantization hold the GIL for up to ~0.4 s at a
        # time, which a thread would turn into a stalled event loop.
        started = time.perf_counter()
        result = await anyio.to_process.run_sync(_quantize_in_worker, self.options, source,
                                                 scheme, cancellable=True)
        _log_made(source, result, time.perf_counter() - started)
        return result


def _quantize_in_worker(options: OrtInt8Options, source: Path,
                        scheme: str) -> QuantizeResult:
    """:meth:`OrtInt8Quantizer._quantize` in an anyio worker process (whose output is
    discarded: the caller logs)."""
    return OrtInt8Quantizer(options)._quantize(source, scheme)


def _log_made(source: Path, result: QuantizeResult, seconds: float) -> None:
    log.info("model.quantized", source=str(source), model=result.model, scheme=result.scheme,
             size_before=result.size_before, size_after=result.size_after,
             quality=result.quality, seconds=round(seconds, 3))
