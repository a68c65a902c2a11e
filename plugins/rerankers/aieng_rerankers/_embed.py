"""Embeddings for the ``mmr`` and ``embedding`` rerankers: through the pipeline, or given,
with a bounded cache of the unit vectors already computed."""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aieng_hookspecs import PipelineContext

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float64]

__all__ = ["DEFAULT_CACHE_SIZE", "Embedder", "Embeddings", "VectorCache", "cosines"]

#: An embedding function given to a reranker directly (tests, notebooks):
#: ``(texts, model) -> vectors``, plain or ``async``; an ``aieng_embed`` impl fits.
Embedder = Callable[[Sequence[str], "str | None"], Any]

#: Unit vectors a reranker keeps by default: 4,096 × 384 dimensions × 8 bytes ≈ 12 MiB.
DEFAULT_CACHE_SIZE = 4096

_Key = tuple[int, "str | None", bytes]


def _digest(text: str) -> bytes:
    """A 128-bit digest of ``text`` (lone surrogates included): the cache keeps it, not the
    text, so a long passage costs the cache 16 bytes."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class VectorCache:
    """A least-recently-used map of unit vectors, holding at most ``size`` of them.

    Thread-safe: a host may share one reranker between event loops in several threads
    (one ``asyncio.run`` per thread), and a lookup racing an eviction in another thread
    must not fail (``move_to_end`` of a key just dropped raises ``KeyError``).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: OrderedDict[_Key, Matrix] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def get(self, key: _Key) -> Matrix | None:
        """The vector kept under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def put(self, key: _Key, row: Matrix) -> None:
        """Keep ``row`` under ``key``, dropping the least recently used past ``size``."""
        with self._lock:
            self._rows[key] = row
            self._rows.move_to_end(key)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        """Drop every vector."""
        with self._lock:
            self._rows.clear()


def _unit(vectors: Any, count: int) -> Matrix:
    """``vectors`` (``count`` of them) as rows scaled to unit length; a zero or broken
    vector stays zero."""
    import numpy as np

    if len(vectors) != count:
        raise ValueError(f"the embedder returned {len(vectors)} vectors for {count} texts")
    try:
        matrix = np.asarray(vectors, dtype=np.float64).reshape(count, -1)
    except ValueError as exc:
        raise ValueError(f"the embedder returned vectors of different sizes: {exc}") from None
    matrix = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(norms > 0.0, matrix / np.where(norms > 0.0, norms, 1.0), 0.0)
    result: Matrix = scaled
    return result


def cosines(rows: Matrix, vector: Matrix) -> Matrix:
    """The cosines of unit ``rows`` with the unit ``vector``, each in -1..1.

    Each row's products are summed in one order, whatever the row's place or the rows
    beside it (``einsum``): a matrix product (BLAS) sums a row by a kernel chosen by its
    place, so equal rows, or a row alone and in a batch, could differ in their last bits,
    breaking ties by position, and a row equal to ``vector`` could score above 1.
    """
    import numpy as np

    result: Matrix = np.clip(np.einsum("ij,j->i", rows, vector), -1.0, 1.0)
    return result


class Embeddings:
    """Where a reranker gets its vectors: an injected embedder, else its pipeline's
    ``context.embed`` (the pipeline's embedding backend, else the kernel's default).

    The unit vectors are kept in a bounded LRU cache keyed by the embedding source, the
    model and the exact text, so a passage that comes back query after query is embedded
    once. Setting another ``context`` or ``embedder`` empties it: vectors of one source
    never serve another.

    :param model: the embedding model asked for (``None``: the backend's default).
    :param embedder: embed with this function instead of the pipeline.
    :param cache_size: the most vectors kept (``0``: no cache, every text embedded on every
        call).
    """

    def __init__(self, model: str | None, embedder: Embedder | None, *,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.model = model
        self._embedder = embedder
        self._context: PipelineContext | None = None
        # Part of every key: vectors asked of a source no longer in use are never served.
        self._source = 0
        self.cache = VectorCache(cache_size) if cache_size > 0 else None

    def _switch(self) -> None:
        self._source += 1
        if self.cache is not None:
            self.cache.clear()

    @property
    def embedder(self) -> Embedder | None:
        """The injected embedding function, if any."""
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: Embedder | None) -> None:
        self._embedder = embedder
        self._switch()

    @property
    def context(self) -> PipelineContext | None:
        """The pipeline context embedded through when there is no injected embedder."""
        return self._context

    @context.setter
    def context(self, context: PipelineContext | None) -> None:
        if context is not self._context:
            self._context = context
            self._switch()

    async def _embed(self, texts: list[str]) -> Any:
        if self._embedder is not None:
            vectors = self._embedder(texts, self.model)
            if inspect.isawaitable(vectors):
                vectors = await vectors
            return vectors
        if self._context is not None:
            return await self._context.embed(texts, self.model)
        raise RuntimeError(
            "this reranker has no embedder: it embeds through its pipeline, which opens "
            "it first (Pipeline.open, run or index), or through the embedder= it was "
            "built with")

    async def unit_rows(self, texts: Sequence[str]) -> Matrix:
        """The texts' embeddings as rows scaled to unit length (a zero or broken vector
        stays zero, so its cosine with anything is 0). With the cache, only the texts it
        lacks are embedded, each once, in one call.

        :raises RuntimeError: when there is no embedder and the pipeline never opened.
        :raises ValueError: when the embedder answers with the wrong number of vectors or
            with vectors of different sizes.
        """
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float64)
        cache = self.cache
        if cache is None:
            return _unit(await self._embed(list(texts)), len(texts))
        source, model = self._source, self.model
        keys = [(source, model, _digest(text)) for text in texts]
        found: dict[_Key, Matrix] = {}
        missing: dict[_Key, str] = {}
        for key, text in zip(keys, texts, strict=True):
            row = cache.get(key)
            if row is not None:
                found[key] = row
            else:
                missing[key] = text  # a text given twice is embedded once
        if missing:
            fresh = _unit(await self._embed(list(missing.values())), len(missing))
            for key, row in zip(missing, fresh, strict=True):
                kept = row.copy()  # not a view: it would hold the whole batch in memory
                kept.flags.writeable = False
                found[key] = kept
                cache.put(key, kept)
        try:
            result: Matrix = np.vstack([found[key] for key in keys])
        except ValueError as exc:
            raise ValueError(f"the embedder returned vectors of different sizes: {exc}") from None
        return result
