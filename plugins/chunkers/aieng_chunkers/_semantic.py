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

__all__ = ["Embedder", "SemanticChunker", "adjacent_similarities", "breakpoints"]

#: An embedding function given to :class:`SemanticChunker` directly:
#: ``(texts, model) -> vectors``, plain or ``async`` (an ``aieng_embed`` impl fits).
Embedder = Callable[[Sequence[str], "str | None"], Any]


_EXPECTED = "expected one finite vector per sentence, all of one length"


def _unit_rows(vectors: Any, width: int | None = None) -> Any:
    """``vectors`` as float64 rows of unit length (a zero vector stays zero), checked: one
    finite vector per row, all of one length, ``width`` when given (the batch before's)."""
    import numpy as np

    try:
        matrix = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # lengths that differ, values not numbers
        raise ValueError(f"the embedder returned vectors numpy cannot stack ({exc}); "
                         f"{_EXPECTED}") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise ValueError(f"the embedder returned vectors of shape {matrix.shape} or with NaN "
                         f"or infinite values; {_EXPECTED}")
    if width is not None and matrix.shape[1] != width:
        raise ValueError(f"the embedder returned vectors of {matrix.shape[1]} dimensions "
                         f"after vectors of {width}; {_EXPECTED}")
    peak = np.abs(matrix).max(axis=1, keepdims=True)
    peak[peak == 0] = 1.0
    matrix = matrix / peak  # so squaring cannot overflow
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def adjacent_similarities(vectors: Any, previous: Any = None) -> tuple[Any, Any]:
    """The cosine similarities of adjacent vectors of one batch, the first of them with
    ``previous`` (the last unit vector of the batch before, if any), and this batch's last
    unit vector: a document is compared batch by batch, holding one batch of vectors at a
    time, never all of them. Runs in a worker thread."""
    import numpy as np

    unit = _unit_rows(vectors, None if previous is None else previous.shape[0])
    rows = unit if previous is None else np.vstack([previous[np.newaxis, :], unit])
    return np.einsum("ij,ij->i", rows[:-1], rows[1:]), unit[-1].copy()


def _cuts(similarities: Sequence[Any], percentile: float) -> list[int]:
    """Where chunks end given the adjacent similarities, batch by batch."""
    import numpy as np

    # Rounded to 12 decimals, so that cosines equal but for rounding tie: two identical
    # sentences (cosine 1, the most there is) may compute as 0.9999999999999998 beside
    # another pair's 1.0, and must not read as a topic shift below a percentile of 1.
    similarity = np.round(np.concatenate(similarities), 12)
    threshold = np.percentile(similarity, percentile)
    return [int(i) + 1 for i in np.nonzero(similarity < threshold)[0]]


def breakpoints(vectors: Any, percentile: float) -> list[int]:
    """Indices ``i`` such that a chunk should end before unit ``i``: where the cosine
    similarity of units ``i - 1`` and ``i`` is below the ``percentile``-th percentile of
    all adjacent similarities (linear interpolation). Runs in a worker thread."""
    return _cuts([adjacent_similarities(vectors)[0]], percentile)


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

    async def _embed(self, batch: list[str]) -> list[Any]:
        """The vectors of one batch of sentences, one per sentence."""
        model = self.options.model or None
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
        return found

    async def _breakpoints(self, text: str, units: Sequence[Span]) -> list[int]:
        """Where chunks end among ``units``: their sentences embedded ``batch_size`` at a
        time, each batch compared with the one before and then dropped."""
        size = self.options.batch_size
        similarities: list[Any] = []
        previous: Any = None
        for start in range(0, len(units), size):
            found = await self._embed([text[a:b] for a, b in units[start:start + size]])
            similarity, previous = await anyio.to_thread.run_sync(
                adjacent_similarities, found, previous)
            similarities.append(similarity)
        return await anyio.to_thread.run_sync(_cuts, similarities, self.options.percentile)

    async def spans(self, text: str) -> list[Span]:
        """The chunk spans of ``text`` (none when it is blank)."""
        if not text.strip():
            return []
        size = self.options.size
        units = await anyio.to_thread.run_sync(sentence_units, text, (0, len(text)), size)
        cuts: list[int] = []
        if len(units) > 2:  # with one gap there is nothing to compare it with
            cuts = await self._breakpoints(text, units)
        spans: list[Span] = []
        for first, last in zip([0, *cuts], [*cuts, len(units)]):
            spans.extend(pack(units[first:last], size))
        return spans

    @hookimpl
    async def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        return chunks_of(document, await self.spans(document.text))
