"""Storage levels of the multi-level cache: each holds encoded completions under keys.

A level is any object with the async methods of :class:`Level`. The memory level is not
one: it holds decoded completions, so a memory hit costs no decoding (see
:class:`~aieng_cache.ExactCache`). Other distributions add levels through the entry-point
group ``aieng_cache.levels`` (``aieng-redis`` adds ``redis``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.to_thread

from ._sqlite import SQLiteStore

__all__ = ["LEVEL_GROUP", "Level", "SQLiteLevel", "Stored", "load_level"]

#: The entry-point group through which distributions offer cache levels.
LEVEL_GROUP = "aieng_cache.levels"


class Stored(NamedTuple):
    """An encoded completion and when it expires (wall-clock seconds since the Unix epoch,
    as the ``now`` given to :meth:`Level.get`; ``inf``: never)."""

    payload: str
    expires_at: float


class Level(Protocol):
    """A storage level: encoded completions under string keys, each with an expiry.

    A level is shared with other processes (a file, a server): ``now`` and ``expires_at``
    are wall-clock seconds since the Unix epoch (``time.time()``), which every process
    reads alike. A level keeps an entry no longer than ``expires_at - now`` from the
    store, even when the clock is set back meanwhile (Redis counts its ``PX`` itself;
    the SQLite level reads a row stored after its ``now`` as expired)."""

    #: the level's name in events and stats (``sqlite``, ``redis``)
    name: str

    async def get(self, key: str, now: float) -> Stored | None:
        """The live entry under ``key``, or ``None`` (expired entries are misses)."""

    async def put(self, key: str, payload: str, *, kind: str, now: float,
                  expires_at: float) -> None:
        """Store ``payload`` under ``key`` until ``expires_at``."""

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    async def clear(self) -> None:
        """Remove every entry of this level: of every namespace (the SQLite level empties
        its file, the Redis level every key under its prefix).

        A level may also offer ``async clear_namespace(namespace)``: remove the entries
        whose payload carries that namespace (:func:`~aieng_cache.payload_namespace`) and
        those whose namespace is unknown. :meth:`ExactCache.clear` uses it when present,
        else this method."""

    async def aclose(self) -> None:
        """Release connections and files.

        A level that runs on one async library only may also offer ``check_backend()``
        (sync): called when the cache's pipeline opens, it raises an error saying so
        under another one (the Redis level under trio)."""


class SQLiteLevel:
    """The SQLite file level; every call runs in a worker thread (limited to
    ``threads`` at once), each thread with its own connection.

    :param path: the database file.
    :param threads: worker threads used at once.
    :param max_entries: most entries of the file (``0``: no bound); a ``put`` past it
        deletes the oldest (see :class:`~aieng_cache.SQLiteStore`).
    :param busy_timeout: seconds a call waits for another connection's lock.
    """

    name = "sqlite"

    def __init__(self, path: str | Path, *, threads: int = 4, max_entries: int = 0,
                 busy_timeout: float = 5.0) -> None:
        self.store = SQLiteStore(path, max_entries=max_entries, busy_timeout=busy_timeout)
        self._limiter = anyio.CapacityLimiter(threads)

    async def _run(self, func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def get(self, key: str, now: float) -> Stored | None:
        """The live entry under ``key``, or ``None``."""
        row = await self._run(self.store.get, key, now)
        return None if row is None else Stored(row.value, row.expires_at)

    async def put(self, key: str, payload: str, *, kind: str, now: float,
                  expires_at: float) -> None:
        """Store ``payload`` under ``key`` until ``expires_at``."""
        await self._run(lambda: self.store.put(key, payload, kind=kind, now=now,
                                               expires_at=expires_at))

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        await self._run(self.store.delete, key)

    async def clear(self) -> None:
        """Remove every entry."""
        await self._run(self.store.clear)

    async def clear_namespace(self, namespace: str) -> None:
        """Remove the entries of ``namespace`` and those of no known namespace."""
        await self._run(self.store.clear, namespace)

    async def vacuum(self, now: float) -> int:
        """Purge expired entries and compact the file; returns how many were purged."""
        purged: int = await self._run(self.store.vacuum, now)
        return purged

    async def aclose(self) -> None:
        """Close the file's connections."""
        await self._run(self.store.close)


def load_level(name: str, **options: Any) -> Level:
    """Build a level offered through the ``aieng_cache.levels`` entry points.

    :raises LookupError: when no installed distribution offers it, saying what to install.
    """
    found = entry_points(group=LEVEL_GROUP, name=name)
    if not found:
        raise LookupError(f"no cache level {name!r} is installed: pip install aieng-{name} "
                          f"(it offers the entry point {name!r} in group {LEVEL_GROUP!r})")
    factory = next(iter(found)).load()
    level: Level = factory(**options)
    return level
