"""An in-process LRU map bounded by entry count and by bytes, with per-entry expiry."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

__all__ = ["LRU", "Found"]

V = TypeVar("V")


class Found(NamedTuple, Generic[V]):
    """A live entry: its value and when it expires (``inf``: never)."""

    value: V
    expires_at: float


class _Slot(NamedTuple, Generic[V]):
    value: V
    size: int
    expires_at: float


class LRU(Generic[V]):
    """Least-recently-used map: every operation is O(1) (amortized, for evictions).

    A ``get`` makes an entry the most recent; a ``put`` evicts the least recent entries
    until both bounds hold. An entry larger than ``max_bytes`` is not stored at all. An
    expired entry is a miss and is dropped when it is found (or by :meth:`purge`).

    :param max_entries: most entries held, at least 1.
    :param max_bytes: most bytes held (the sum of the sizes given to :meth:`put`), at least 1.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"max_entries and max_bytes must be at least 1, got "
                             f"{max_entries} and {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, _Slot[V]] = OrderedDict()
        self._bytes = 0
        #: entries evicted to respect a bound, since creation
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    @property
    def nbytes(self) -> int:
        """The bytes held now."""
        return self._bytes

    def keys(self) -> list[str]:
        """The keys from least to most recently used."""
        return list(self._data)

    def get(self, key: str, now: float) -> Found[V] | None:
        """The live entry under ``key`` (made most recent), or ``None``."""
        slot = self._data.get(key)
        if slot is None:
            return None
        if slot.expires_at <= now:
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return Found(slot.value, slot.expires_at)

    def put(self, key: str, value: V, size: int, expires_at: float = math.inf) -> bool:
        """Store ``value`` (``size`` bytes) as the most recent entry; returns whether it was
        stored (``False`` when it alone is over ``max_bytes``)."""
        if size < 0:
            raise ValueError(f"size must be at least 0, got {size}")
        if key in self._data:
            self._remove(key)
        if size > self.max_bytes:
            return False
        self._data[key] = _Slot(value, size, expires_at)
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._remove(oldest)
            self.evictions += 1
        return True

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        if key not in self._data:
            return False
        self._remove(key)
        return True

    def clear(self) -> None:
        """Remove every entry."""
        self._data.clear()
        self._bytes = 0

    def purge(self, now: float) -> int:
        """Drop every expired entry (O(n)); returns how many."""
        dead = [k for k, slot in self._data.items() if slot.expires_at <= now]
        for key in dead:
            self._remove(key)
        return len(dead)

    def _remove(self, key: str) -> None:
        slot = self._data.pop(key)
        self._bytes -= slot.size
