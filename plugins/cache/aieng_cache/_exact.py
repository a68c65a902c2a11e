"""``cache``: the exact-match cache, in levels memory → Redis → SQLite."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import anyio
import attrs
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Completion, Event, Request

from ._clock import Clock, Clocks, remaining
from ._codec import CodecError, decode_completion, encode_completion
from ._events import CacheLevelHit, CacheMiss, CacheStored
from ._keys import KeyScope, cacheable, content_type, request_key
from ._levels import Level, SQLiteLevel, load_level
from ._lru import LRU
from ._options import CacheOptions, ttl_for

__all__ = ["CacheStats", "ExactCache"]

log = structlog.get_logger(__name__)


@attrs.define
class CacheStats:
    """Counters of one cache since it was built."""

    hits: dict[str, int] = attrs.field(factory=dict)  #: per level
    misses: int = 0
    uncacheable: int = 0
    stores: int = 0
    errors: int = 0  #: unreadable stored values (treated as misses and deleted)


class ExactCache:
    """A cache answering requests whose key (see :mod:`aieng_cache._keys`) was stored.

    Levels are looked up fastest first: the in-process LRU, then the given levels in order
    (Redis, then SQLite, from the options). A hit in a slower level is copied into the
    faster ones with the time it has left (never more than its content type's TTL); a
    store writes every level at once. Entries live ``ttl[content type]`` seconds; an
    expired entry is a miss. The memory level counts them on the monotonic clock, the
    shared levels on the wall clock (see :mod:`aieng_cache._clock`).

    :param options: the typed options (defaults when omitted).
    :param levels: use these levels instead of the ones the options name (after the memory
        level, when ``memory`` is on).
    :param clock: wall-clock seconds since the Unix epoch, for the levels other processes
        share; inject a fake one in tests.
    :param monotonic: a clock that never steps, for the memory level's expiry; inject a
        fake one in tests (the same object as ``clock`` moves both together).
    """

    def __init__(self, options: CacheOptions | None = None, *,
                 levels: Sequence[Level] | None = None, clock: Clock = time.time,
                 monotonic: Clock = time.monotonic) -> None:
        self.options = options if options is not None else CacheOptions()
        opts = self.options
        self.clock = clock
        self.monotonic = monotonic
        self._clocks = Clocks(clock, monotonic)
        self.memory: LRU[Completion] | None = (
            LRU(opts.max_entries, opts.max_bytes) if opts.memory else None)
        if levels is None:
            built: list[Level] = []
            if opts.redis:
                built.append(load_level("redis", url=opts.redis, prefix=opts.redis_prefix))
            if opts.sqlite:
                built.append(SQLiteLevel(opts.sqlite, max_entries=opts.sqlite_max_entries,
                                         busy_timeout=opts.sqlite_busy_timeout))
            levels = built
        self.levels: list[Level] = list(levels)
        self.scope = KeyScope(namespace=opts.namespace, template_version=opts.template_version)
        self.stats = CacheStats()
        self._context: PipelineContext | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Key entries by the pipeline (when ``key_pipeline``) and publish events on it;
        a level that runs on one async library only (Redis: asyncio) says so here, at open,
        through its optional ``check_backend()``."""
        for level in self.levels:
            check = getattr(level, "check_backend", None)
            if check is not None:
                check()
        self._context = context
        if self.options.key_pipeline:
            self.scope = attrs.evolve(self.scope, pipeline=context.pipeline)

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Close the levels' connections and files."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close every level (once)."""
        if self._closed:
            return
        self._closed = True
        for level in self.levels:
            await level.aclose()

    def _emit(self, event: Event) -> None:
        if self._context is not None:
            self._context.emit(event)

    @property
    def _name(self) -> str:
        return self._context.component if self._context is not None else "cache"

    # -- the cache role ------------------------------------------------------------------

    def key(self, request: Request) -> str:
        """The request's key in this cache."""
        return request_key(request, self.scope)

    @hookimpl
    async def aieng_cache_lookup(self, request: Request) -> Completion | None:
        """The stored completion of this request (``cached=True``), or ``None``."""
        if not cacheable(request, cache_sampled=self.options.cache_sampled):
            self.stats.uncacheable += 1
            self._emit(CacheMiss(component=self._name, reason="uncacheable"))
            return None
        key = self.key(request)
        now, mono = self._clocks.now()
        if self.memory is not None:
            found = self.memory.get(key, mono)
            if found is not None:
                self._hit("memory")
                return found.value
        for index, level in enumerate(self.levels):
            stored = await level.get(key, now)
            if stored is None:
                continue
            try:
                completion = decode_completion(stored.payload)
            except CodecError as exc:
                self.stats.errors += 1
                log.warning("cache.unreadable", level=level.name, key=key, error=str(exc))
                if not exc.newer:  # a newer writer sharing the level still reads it
                    await level.delete(key)
                continue
            if self.options.promote:
                await self._promote(key, stored.payload, completion, request, index,
                                    (now, mono), stored.expires_at)
            self._hit(level.name)
            return completion
        self.stats.misses += 1
        self._emit(CacheMiss(component=self._name))
        return None

    def _hit(self, level: str) -> None:
        self.stats.hits[level] = self.stats.hits.get(level, 0) + 1
        self._emit(CacheLevelHit(component=self._name, level=level))

    async def _promote(self, key: str, payload: str, completion: Completion,
                       request: Request, found_at: int, now: tuple[float, float],
                       expires_at: float) -> None:
        """Copy a hit into the levels faster than the one that answered, with the time it
        has left: no more than its content type's TTL, whatever a level said (a clock
        set back meanwhile, a level of another program)."""
        kind = content_type(request)
        left = remaining(expires_at, now[0], ttl_for(self.options.ttl, kind))
        if left <= 0:
            return
        if self.memory is not None:
            self.memory.put(key, completion, len(payload), now[1] + left)
        for level in self.levels[:found_at]:
            await level.put(key, payload, kind=kind, now=now[0], expires_at=now[0] + left)

    @hookimpl
    async def aieng_cache_store(self, request: Request, completion: Completion) -> None:
        """Store the completion in every level, for its content type's TTL."""
        if not cacheable(request, cache_sampled=self.options.cache_sampled):
            return
        key = self.key(request)
        now, mono = self._clocks.now()
        kind = content_type(request)
        ttl = ttl_for(self.options.ttl, kind)
        expires_at = now + ttl if math.isfinite(ttl) else math.inf
        payload = encode_completion(completion, namespace=self.options.namespace)
        if self.memory is not None:
            self.memory.put(key, attrs.evolve(completion, cached=True), len(payload),
                            mono + ttl)
        if self.levels:
            failed: list[Exception] = []

            async def put(level: Level) -> None:
                try:
                    await level.put(key, payload, kind=kind, now=now, expires_at=expires_at)
                except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped
                    log.warning("cache.store_failed", level=level.name, error=repr(exc))
                    failed.append(exc)

            async with anyio.create_task_group() as group:
                for level in self.levels:
                    group.start_soon(put, level)
            if failed:
                # The level's own error (a locked or corrupt SQLite file...), not an
                # ExceptionGroup that hides it; every other level was still written.
                raise failed[0]
        self.stats.stores += 1
        self._emit(CacheStored(component=self._name, kind=kind, ttl_s=ttl))

    # -- beyond the hooks ----------------------------------------------------------------

    async def invalidate(self, request: Request) -> None:
        """Remove the request's entry from every level."""
        key = self.key(request)
        if self.memory is not None:
            self.memory.delete(key)
        for level in self.levels:
            await level.delete(key)

    async def clear(self) -> None:
        """Remove this cache's entries (of its ``namespace``) from every level.

        Entries of other namespaces sharing a SQLite file or a Redis prefix stay; entries
        whose namespace is unknown (stored by a version that did not record it) go, as
        they may be this namespace's. A level without ``clear_namespace`` (see
        :class:`~aieng_cache.Level`) is emptied whole.
        """
        if self.memory is not None:
            self.memory.clear()
        for level in self.levels:
            clear_namespace = getattr(level, "clear_namespace", None)
            if clear_namespace is not None:
                await clear_namespace(self.options.namespace)
            else:
                await level.clear()

    async def vacuum(self) -> int:
        """Drop expired entries from memory and compact the SQLite levels.

        :returns: the number of entries purged.
        """
        now, mono = self._clocks.now()
        purged = self.memory.purge(mono) if self.memory is not None else 0
        for level in self.levels:
            if isinstance(level, SQLiteLevel):
                purged += await level.vacuum(now)
        return purged
