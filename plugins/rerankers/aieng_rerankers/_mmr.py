"""``mmr``: maximal marginal relevance, for a top-k that is relevant and not redundant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Hit, Query

from ._embed import Embedder, Embeddings, cosines
from ._hits import distinct, keep, passage_text, ranked
from ._options import MMROptions

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["MMRReranker", "SimilarityRows", "mmr_order"]


class SimilarityRows:
    """The cosine similarities of unit vectors, one candidate's row at a time:
    ``rows[i]`` is ``vectors @ vectors[i]``. MMR reads only the rows of its ``k`` picks, so
    it never needs the ``n × n`` matrix (800 MB for 10,000 candidates).

    :param vectors: the candidates' unit vectors, one per row.
    """

    def __init__(self, vectors: npt.NDArray[np.float64]) -> None:
        self.vectors = vectors

    def __getitem__(self, index: int) -> npt.NDArray[np.float64]:
        return cosines(self.vectors, self.vectors[index])


def mmr_order(relevance: npt.NDArray[np.float64],
              similarity: npt.NDArray[np.float64] | SimilarityRows,
              lambda_: float, k: int) -> list[tuple[int, float]]:
    """Greedy maximal marginal relevance (Carbonell & Goldstein, 1998).

    Each step picks the candidate maximizing
    ``lambda_ * relevance - (1 - lambda_) * max(0, max similarity to the picked ones)``;
    ties go to the earlier candidate. Negative similarity counts as 0 (a passage unlike
    the picked ones is not redundant, and is not rewarded either), so a candidate's value
    can only fall as picks accumulate, and the values returned never increase.

    :param relevance: one relevance per candidate.
    :param similarity: the candidates' pairwise similarities (square, symmetric), or
        :class:`SimilarityRows` computing only the rows of the picks (``O(k·n)`` work and
        ``O(n)`` memory instead of ``O(n²)``).
    :param lambda_: the weight of relevance, 0..1.
    :param k: the most candidates to pick.
    :returns: ``(candidate index, its MMR value when picked)``, in pick order.
    """
    import numpy as np

    count = len(relevance)
    penalty = np.zeros(count, dtype=np.float64)
    picked = np.zeros(count, dtype=bool)
    order: list[tuple[int, float]] = []
    for _ in range(min(k, count)):
        value = lambda_ * relevance - (1.0 - lambda_) * penalty
        value[picked] = -np.inf
        best = int(np.argmax(value))  # the first maximum: ties keep the incoming order
        order.append((best, float(value[best])))
        picked[best] = True
        penalty = np.maximum(penalty, np.clip(similarity[best], 0.0, None))
    return order


def _normalized(scores: Sequence[float]) -> npt.NDArray[np.float64]:
    """Scores min-max scaled to 0..1 (all equal: all 1)."""
    import numpy as np

    values = np.asarray(scores, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.ones_like(values)
    # Dividing each by the span could overflow for scores near the float limits.
    return (values - low) / (high - low) if np.isfinite(high - low) else \
        (values / 2 - low / 2) / (high / 2 - low / 2)


class MMRReranker:
    """Reorders hits by maximal marginal relevance: each pick trades the hit's relevance
    to the query against its cosine similarity to the hits already picked.

    Embeddings come from the pipeline (``context.embed``: its embedding backend, else the
    kernel's default ``minilm``), at most one call per rerank for the query and the hits
    (title and text) not in the reranker's cache of unit vectors (option ``cache_size``,
    keyed by the exact text). A hit's new score is its MMR value when it was picked, so scores never
    increase; relevance is the query-hit cosine, or the incoming score normalized to 0..1
    (option ``relevance``). It keeps at most ``k`` hits (the stage's ``k``, lowered by the
    option ``k``); the hits keep their ``source``.

    :param options: the typed options (defaults when ``None``).
    :param embedder: embed with this function instead of the pipeline:
        ``(texts, model) -> vectors``, plain or ``async`` (an ``aieng_embed`` impl fits).
    """

    def __init__(self, options: MMROptions | None = None, *,
                 embedder: Embedder | None = None) -> None:
        self.options = options if options is not None else MMROptions()
        self._embeddings = Embeddings(self.options.model, embedder,
                                      cache_size=self.options.cache_size)

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to embed through it."""
        self._embeddings.context = context

    @hookimpl
    async def aieng_rerank(self, query: Query, hits: Sequence[Hit], k: int) -> list[Hit]:
        """The hits in MMR order, at most ``k``, scored by their MMR values."""
        candidates = distinct(hits)
        limit = keep(k, self.options.k)
        if not candidates or limit < 1:
            return []
        texts = [passage_text(hit.document) for hit in candidates]
        if self.options.relevance == "cosine":
            rows = await self._embeddings.unit_rows([query.text, *texts])
            vectors = rows[1:]
            relevance = cosines(vectors, rows[0])
        else:
            vectors = await self._embeddings.unit_rows(texts)
            relevance = _normalized([hit.score for hit in candidates])
        picks = mmr_order(relevance, SimilarityRows(vectors), self.options.lambda_, limit)
        return ranked((candidates[index], value) for index, value in picks)
