"""Embeddings for the ``mmr`` and ``embedding`` rerankers: through the pipeline, or given."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aieng_hookspecs import PipelineContext

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float64]

__all__ = ["Embedder", "Embeddings"]

#: An embedding function given to a reranker directly (tests, notebooks):
#: ``(texts, model) -> vectors``, plain or ``async``; an ``aieng_embed`` impl fits.
Embedder = Callable[[Sequence[str], "str | None"], Any]


class Embeddings:
    """Where a reranker gets its vectors: an injected embedder, else its pipeline's
    ``context.embed`` (the pipeline's embedding backend, else the kernel's default).

    :param model: the embedding model asked for (``None``: the backend's default).
    :param embedder: embed with this function instead of the pipeline.
    """

    def __init__(self, model: str | None, embedder: Embedder | None) -> None:
        self.model = model
        self.embedder = embedder
        self.context: PipelineContext | None = None

    async def unit_rows(self, texts: Sequence[str]) -> Matrix:
        """The texts' embeddings as rows scaled to unit length (a zero or broken vector
        stays zero, so its cosine with anything is 0).

        :raises RuntimeError: when there is no embedder and the pipeline never opened.
        :raises ValueError: when the embedder answers with the wrong number of vectors or
            with vectors of different sizes.
        """
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float64)
        if self.embedder is not None:
            vectors = self.embedder(list(texts), self.model)
            if inspect.isawaitable(vectors):
                vectors = await vectors
        elif self.context is not None:
            vectors = await self.context.embed(list(texts), self.model)
        else:
            raise RuntimeError(
                "this reranker has no embedder: it embeds through its pipeline, which opens "
                "it first (Pipeline.open, run or index), or through the embedder= it was "
                "built with")
        if len(vectors) != len(texts):
            raise ValueError(f"the embedder returned {len(vectors)} vectors for "
                             f"{len(texts)} texts")
        try:
            matrix = np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)
        except ValueError as exc:
            raise ValueError(f"the embedder returned vectors of different sizes: {exc}") from None
        matrix = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = np.where(norms > 0.0, matrix / np.where(norms > 0.0, norms, 1.0), 0.0)
        result: Matrix = scaled
        return result
