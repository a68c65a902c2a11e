"""``embedding``: rerank by the cosine between the query's and each hit's embedding."""

from __future__ import annotations

from collections.abc import Sequence

from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Hit, Query

from ._embed import Embedder, Embeddings, cosines
from ._hits import distinct, keep, passage_text, sort_by_score
from ._options import EmbeddingOptions

__all__ = ["EmbeddingReranker"]


class EmbeddingReranker:
    """Re-scores each hit with the cosine between the query's embedding and the hit's
    (title and text), re-sorts (ties keep the incoming order) and keeps the best ``k``.

    It turns a lexical run (BM25) into a dense-scored one without a vector index, at the
    cost of embedding the hits. Embeddings come from the pipeline (``context.embed``: its
    embedding backend, else the kernel's default ``minilm``), at most one call per rerank
    for the texts not in the reranker's cache of unit vectors (option ``cache_size``). The
    hits keep their ``source``.

    :param options: the typed options (defaults when ``None``).
    :param embedder: embed with this function instead of the pipeline:
        ``(texts, model) -> vectors``, plain or ``async`` (an ``aieng_embed`` impl fits).
    """

    def __init__(self, options: EmbeddingOptions | None = None, *,
                 embedder: Embedder | None = None) -> None:
        self.options = options if options is not None else EmbeddingOptions()
        self._embeddings = Embeddings(self.options.model, embedder,
                                      cache_size=self.options.cache_size)

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to embed through it."""
        self._embeddings.context = context

    @hookimpl
    async def aieng_rerank(self, query: Query, hits: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` hits by cosine to the query, scored by that cosine."""
        candidates = distinct(hits)
        limit = keep(k, self.options.k)
        if not candidates or limit < 1:
            return []
        rows = await self._embeddings.unit_rows(
            [query.text, *(passage_text(hit.document) for hit in candidates)])
        return sort_by_score(candidates, cosines(rows[1:], rows[0]).tolist(), limit)
