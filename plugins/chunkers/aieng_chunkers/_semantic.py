"""``semantic``: chunks that end where the topic shifts, by sentence embeddings."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import anyio.to_thread
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Chunk, Document

from ._options import SemanticOptions
from ._sentences import sentence_units
from ._spans import Span, chunks_of, pack

__all__ = ["Embedder", "SemanticChunker", "breakpoints"]

#: An embedding function given to :class:`SemanticChunker` directly:
#: ``(texts, model) -> vectors``, plain or ``async`` (an ``aieng_embed`` impl fits).
Embedder = Callable[[Sequence[str], "str | None"], Any]


def breakpoints(vectors: Any, percentile: float) -> list[int]:
    """Indices ``i`` such that a chunk should end before unit ``i``: where the cosine
    similarity of units ``i - 1`` and ``i`` is below the ``percentile``-th percentile of
    all adjacent similarities (linear interpolation). Runs in a worker thread."""
    import numpy as np

    expected = "expected one finite vector per sentence, all of one length"
    try:
        matrix = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # lengths that differ, values not numbers
        raise ValueError(f"the embedder returned vectors numpy cannot stack ({exc}); "
                         f"{expected}") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise ValueError(f"the embedder returned vectors of shape {matrix.shape} or with NaN "
                         f"or infinite values; {expected}")
    peak = np.abs(matrix).max(axis=1, keepdims=True)
    peak[peak == 0] = 1.0
    matrix = matrix / peak  # so squaring cannot overflow
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit = matrix / norms
    similarity = np.einsum("ij,ij->i", unit[:-1], unit[1:])
    threshold = np.percentile(similarity, percentile)
    return [int(i) + 1 for i in np.nonzero(similarity < threshold)[0]]


class SemanticChunker:
    """Cuts a document into sentences, embeds them through the pipeline
    (``context.embed``), and ends a chunk where adjacent sentences are least alike: below
    the ``percentile``-th percentile of the document's adjacent cosine similarities.
    Between those breakpoints sentences are packed into chunks of at most ``size``
    characters (a longer sentence is cut at whitespace).

    :param options: the typed options (defaults when omitted).
    :param embedder: embed with this function instead of the pipeline's embedder:
        ``(texts, model) -> vectors``, plain or ``async`` (an ``aieng_embed`` impl fits).
    """

    def __init__(self, options: SemanticOptions | None = None, *,
                 embedder: Embedder | None = None) -> None:
        self.options = options if options is not None else SemanticOptions()
        self._embedder = embedder
        self._context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to embed through it."""
        self._context = context

    async def _embed(self, texts: Sequence[str]) -> list[Any]:
        model = self.options.model or None
        size = self.options.batch_size
        vectors: list[Any] = []
        for start in range(0, len(texts), size):
            batch = list(texts[start:start + size])
            if self._embedder is not None:
                found = self._embedder(batch, model)
                if inspect.isawaitable(found):
                    found = await found
            elif self._context is not None:
                found = await self._context.embed(batch, model)
            else:
                raise RuntimeError(
                    "the semantic chunker has no embedder: it embeds through its pipeline, "
                    "which opens it first (Pipeline.open, run or index), or through the "
                    "embedder= given to SemanticChunker")
            found = list(found)  # a generator or a numpy matrix: one vector per row
            if len(found) != len(batch):
                raise ValueError(f"the embedder returned {len(found)} vectors for "
                                 f"{len(batch)} sentences")
            vectors.extend(found)
        return vectors

    async def spans(self, text: str) -> list[Span]:
        """The chunk spans of ``text`` (none when it is blank)."""
        if not text.strip():
            return []
        size = self.options.size
        units = await anyio.to_thread.run_sync(sentence_units, text, (0, len(text)), size)
        cuts: list[int] = []
        if len(units) > 2:  # with one gap there is nothing to compare it with
            vectors = await self._embed([text[start:end] for start, end in units])
            cuts = await anyio.to_thread.run_sync(breakpoints, vectors,
                                                  self.options.percentile)
        spans: list[Span] = []
        for first, last in zip([0, *cuts], [*cuts, len(units)]):
            spans.extend(pack(units[first:last], size))
        return spans

    @hookimpl
    async def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        return chunks_of(document, await self.spans(document.text))
