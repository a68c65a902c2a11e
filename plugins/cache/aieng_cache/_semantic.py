"""``semantic-cache``: answers a request whose prompt means what a stored one meant."""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Completion, Event, Request

from ._clock import Clock, Clocks, remaining
from ._codec import CodecError, decode_completion, encode_completion
from ._events import CacheLevelHit, CacheMiss, CacheStored
from ._index import SemanticIndex, unit_vector
from ._keys import KeyScope, cacheable, content_type, partition_key, request_key, scope_key
from ._options import SemanticOptions, ttl_for
from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from ._index import Vector

__all__ = ["Embedder", "SemanticCache"]

log = structlog.get_logger(__name__)

#: An embedding function given to :class:`SemanticCache` directly (tests, benchmarks):
#: ``(texts, model) -> vectors``, plain or ``async``; an ``aieng_embed`` impl fits.
Embedder = Callable[[Sequence[str], "str | None"], Any]

# Vectors of prompts looked up but not yet stored: a miss's store reuses its lookup's
# embedding instead of embedding the prompt again. Kept under the prompt's digest, not the
# prompt: a run that fails after its lookup never stores, and prompts near a model's
# context limit would each keep their whole text.
_PENDING = 256
# Cosines are float32 dot products of unit vectors: a prompt's cosine with an identical
# embedding comes out up to ~1e-6 under 1.0 (or over it). A cosine this close under the
# threshold counts as at it, so that threshold = 1.0 answers identical embeddings.
_COSINE_SLACK = 1e-5


class SemanticCache:
    """A cache matching the last user message by embedding similarity.

    A lookup first tries the exact key (no embedding needed), then embeds the prompt
    through the pipeline (``context.embed``, or the ``embedder`` given here) and answers
    with the stored completion whose prompt has the highest cosine, when that cosine is
    at least ``threshold`` and everything else of the request — model, sampling
    parameters, system prompt, earlier turns — matches exactly (its *partition*).

    Entries expire on the monotonic clock in the index, and on the wall clock in the
    file (``path``), which other processes read (see :mod:`aieng_cache._clock`).

    :param options: the typed options (defaults when omitted).
    :param embedder: embed with this function instead of the pipeline's embedder.
    :param clock: wall-clock seconds since the Unix epoch, for the file; inject a fake one
        in tests.
    :param monotonic: a clock that never steps, for the index's expiry; inject a fake one
        in tests (the same object as ``clock`` moves both together).
    """

    def __init__(self, options: SemanticOptions | None = None, *,
                 embedder: Embedder | None = None, clock: Clock = time.time,
                 monotonic: Clock = time.monotonic) -> None:
        self.options = options if options is not None else SemanticOptions()
        self.clock = clock
        self.monotonic = monotonic
        self._clocks = Clocks(clock, monotonic)
        self.index: SemanticIndex[Completion] = SemanticIndex(self.options.max_entries)
        self.scope = KeyScope(namespace=self.options.namespace,
                              template_version=self.options.template_version,
                              embedding_model=self.options.model)
        self.store = (SQLiteStore(self.options.path,
                                  max_entries=self.options.file_max_entries,
                                  busy_timeout=self.options.file_busy_timeout)
                      if self.options.path else None)
        self._embedder = embedder
        self._context: PipelineContext | None = None
        self._pending: OrderedDict[bytes, Vector | None] = OrderedDict()  # by _digest
        self._load_lock = anyio.Lock()
        self._loaded = self.store is None
        self._closed = False
        self._embedded = False  # whether this cache's embedder has given a vector yet
        #: the cosine of the last semantic hit (1.0 for an exact one), for inspection
        self.last_similarity: float | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context (embeddings, events) and load the persisted index."""
        self._context = context
        if self.options.key_pipeline:
            self.scope = attrs.evolve(self.scope, pipeline=context.pipeline)
        await self._ensure_loaded()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Close the index's file."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the index's file (once)."""
        if self._closed:
            return
        self._closed = True
        if self.store is not None:
            await anyio.to_thread.run_sync(self.store.close)

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if not self._loaded:
                await anyio.to_thread.run_sync(self._load)
                self._loaded = True

    def _load(self) -> None:
        import numpy as np

        assert self.store is not None
        # Only this scope's rows: another namespace's or pipeline's never answer here,
        # and would take this one's places in the index (or, embedded by a model of
        # another size, make them unreadable).
        now, mono = self._clocks.now()
        rows = self.store.each_live(now, limit=self.options.max_entries,
                                    scope=scope_key(self.scope))
        # The newest vector's size is the index's: after the embedding model changed
        # size, the rows of the model in use now are the newest, and must stay
        # searchable; the older model's keep answering their exact requests only.
        size: int | None = None
        loaded: list[str] = []  # newest first
        # One row at a time, newest first (not a list of every row's value and vector
        # beside the index's matrix: twice the memory at the peak).
        with closing(rows):
            for row in rows:
                if row.tag is None:
                    continue
                if size is None and row.vector is not None:
                    size = len(row.vector)
                try:
                    completion = decode_completion(row.value)
                    vector = None if row.vector is None or len(row.vector) != size \
                        else np.frombuffer(row.vector, dtype="<f4").astype(np.float32)
                    # The time the row has left, on the index's clock: no more than its
                    # content type's TTL (what a clock set back cannot stretch).
                    left = remaining(row.expires_at, now,
                                     ttl_for(self.options.ttl, row.kind))
                    self.index.put(row.key, row.tag, vector, completion, mono + left,
                                   created=row.created)
                    loaded.append(row.key)
                except (CodecError, ValueError) as exc:
                    log.warning("cache.semantic.unreadable", key=row.key, error=str(exc))
        for key in reversed(loaded):  # oldest first: the newest end up most recent
            self.index.touch(key)

    def _emit(self, event: Event) -> None:
        if self._context is not None:
            self._context.emit(event)

    @property
    def _name(self) -> str:
        return self._context.component if self._context is not None else "semantic-cache"

    # -- embeddings ----------------------------------------------------------------------

    async def _vector(self, prompt: str) -> Vector | None:
        digest = _digest(prompt)
        if digest in self._pending:
            return self._pending[digest]
        model = self.options.model or None
        if self._embedder is not None:
            vectors = self._embedder([prompt], model)
            if inspect.isawaitable(vectors):
                vectors = await vectors
        elif self._context is not None:
            vectors = await self._context.embed([prompt], model)
        else:
            raise RuntimeError(
                "the semantic cache has no embedder: it embeds through its pipeline, which "
                "opens it first (Pipeline.open or run), or through the embedder= given to "
                "SemanticCache")
        if len(vectors) != 1:
            raise ValueError(f"the embedder returned {len(vectors)} vectors for 1 text")
        vector = unit_vector(vectors[0])
        if vector is not None and not self._embedded:
            self._embedded = True
            loaded = self.index.dimension
            if loaded is not None and loaded != vector.shape[0]:
                # The index's vectors were read from the file, made by another embedding
                # model (an earlier one; or another scope's, in rows stored before rows
                # had a scope): none can be compared
                # with this model's. Their entries still answer their exact requests.
                log.warning("cache.semantic.other_model", path=self.options.path,
                            stored_dimension=loaded, dimension=int(vector.shape[0]))
                self.index.keep_exact_only()
        self._pending[digest] = vector
        if len(self._pending) > _PENDING:
            self._pending.popitem(last=False)
        return vector

    # -- the cache role ------------------------------------------------------------------

    @hookimpl
    async def aieng_cache_lookup(self, request: Request) -> Completion | None:
        """The completion stored for this request or for a request whose prompt is at least
        ``threshold`` similar, in the same partition; ``None`` otherwise."""
        if not cacheable(request, cache_sampled=self.options.cache_sampled):
            self._emit(CacheMiss(component=self._name, reason="uncacheable"))
            return None
        await self._ensure_loaded()
        mono = self._clocks.now()[1]
        exact = self.index.get(request_key(request, self.scope), mono)
        if exact is not None:
            return self._hit(exact[0], 1.0)
        vector = await self._vector(request.prompt)
        if vector is not None:
            mono = self.monotonic()  # after the embedding, which may take a while
            match = self.index.search(vector, partition_key(request, self.scope), mono)
            if match is not None and \
                    match.similarity >= self.options.threshold - _COSINE_SLACK:
                self.index.touch(match.key)
                return self._hit(match.value, min(match.similarity, 1.0))
        self.last_similarity = None
        self._emit(CacheMiss(component=self._name))
        return None

    def _hit(self, completion: Completion, similarity: float) -> Completion:
        self.last_similarity = similarity
        self._emit(CacheLevelHit(component=self._name, level="semantic",
                                 similarity=similarity))
        return completion

    @hookimpl
    async def aieng_cache_store(self, request: Request, completion: Completion) -> None:
        """Index the request's prompt with its completion, for its content type's TTL."""
        if not cacheable(request, cache_sampled=self.options.cache_sampled):
            return
        await self._ensure_loaded()
        vector = await self._vector(request.prompt)
        self._pending.pop(_digest(request.prompt), None)
        now, mono = self._clocks.now()
        kind = content_type(request)
        ttl = ttl_for(self.options.ttl, kind)
        expires_at = now + ttl if math.isfinite(ttl) else math.inf
        key = request_key(request, self.scope)
        partition = partition_key(request, self.scope)
        # A prompt without an embedding (an empty text) is stored too: it hits exactly.
        self.index.put(key, partition, vector, attrs.evolve(completion, cached=True),
                       mono + ttl, created=now)
        if self.store is not None:
            payload = encode_completion(completion, namespace=self.options.namespace)
            blob = None if vector is None else vector.astype("<f4").tobytes()
            scope = scope_key(self.scope)
            await anyio.to_thread.run_sync(
                lambda: self.store.put(key, payload, kind=kind, now=now,  # type: ignore[union-attr]
                                       expires_at=expires_at, tag=partition, vector=blob,
                                       scope=scope))
        self._emit(CacheStored(component=self._name, kind=kind, ttl_s=ttl))

    # -- beyond the hooks ----------------------------------------------------------------

    async def clear(self) -> None:
        """Remove this cache's entries (of its ``namespace``): every entry of the index,
        and its rows of the SQLite file (``path``).

        Rows of other namespaces sharing the file stay (an exact ``cache``'s too); rows
        whose namespace is unknown (stored by a version that did not record it) go, as
        they may be this namespace's. Other processes' indexes on the same file keep their
        entries until they reopen it.
        """
        async with self._load_lock:  # not while a load fills the index
            self.index.clear()
            self._pending.clear()
            store = self.store
            if store is not None:
                namespace = self.options.namespace
                await anyio.to_thread.run_sync(lambda: store.clear(namespace))

    async def vacuum(self) -> int:
        """Drop expired entries from the index and compact the file; returns how many
        entries the index dropped."""
        now, mono = self._clocks.now()
        purged = self.index.purge(mono)
        if self.store is not None:
            await anyio.to_thread.run_sync(self.store.vacuum, now)
        return purged


def _digest(prompt: str) -> bytes:
    """A prompt's key in the memory of pending embeddings (a lone surrogate included)."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
