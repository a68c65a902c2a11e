"""The semantic cache's vector index: a bounded numpy matrix of unit vectors.

Each entry has a row (its prompt's normalized embedding), a partition (the key of the
rest of its request) and an expiry. A search is one matrix-vector product over the rows in
use, masked to the query's partition and to live entries. Rows are reused: the least
recently used entry gives its row up when the index is full.

Ties do not depend on rows: the float32 product only picks the entries within its
rounding error of the best, which are scored again exactly (float64, each row alone); of
those equally near, the newest (largest ``created``) answers, then the smallest key, so a
search answers the same before and after the index is rebuilt in another row order (a
reload from SQLite fills rows newest first).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]

__all__ = ["SemanticIndex", "unit_vector"]

V = TypeVar("V")

_FREE = -1  # a row no entry uses
_EXACT_ONLY = -2  # a row whose entry has no vector: found by its key, never by a search


def _float32_error(dimension: int) -> float:
    """A bound on how far BLAS's float32 product of two unit vectors is from the exact
    cosine: ``dimension`` roundings of 2^-24 (``gamma_n``), doubled for vectors an ulp off
    unit length and a kernel's extra steps. BLAS blocks rows, so a row's last bits depend
    on its place: copies of one vector do not score alike in it."""
    return 2.0 * (dimension + 2) * 2.0**-24


class Match(NamedTuple, Generic[V]):
    """The best live entry of a partition: its key, value, cosine and expiry."""

    key: str
    value: V
    similarity: float
    expires_at: float


def unit_vector(values: Sequence[float] | Vector) -> Vector | None:
    """``values`` as a float32 unit vector; ``None`` for a zero (or non-finite) vector,
    which matches nothing."""
    import numpy as np

    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        return None
    out: Vector = vector / norm
    return out


class SemanticIndex(Generic[V]):
    """Entries searchable by cosine within a partition, at most ``capacity`` of them.

    :param capacity: most entries; the least recently used is evicted past it.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        """Remove every entry and forget the dimension (the next vector sets it)."""
        import numpy as np

        capacity = self.capacity
        self.dimension: int | None = None
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._partition = np.full(capacity, _FREE, dtype=np.int64)
        self._expires = np.zeros(capacity, dtype=np.float64)
        self._created = np.zeros(capacity, dtype=np.float64)
        self._slots: OrderedDict[str, int] = OrderedDict()  # key -> row, LRU order
        self._values: dict[str, V] = {}
        self._partitions: dict[str, int] = {}  # partition -> id
        self._pid_names: dict[int, str] = {}
        self._pid_counts: dict[int, int] = {}  # id -> entries in it
        self._next_pid = 0
        self._free: list[int] = list(range(capacity))  # a heap: the lowest row first
        self._row_keys: list[str] = [""] * capacity
        self._high = 0  # one past the highest row ever used

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def _partition_id(self, partition: str) -> int:
        """The id of a partition, counting one more entry in it."""
        found = self._partitions.get(partition)
        if found is None:
            found = self._partitions[partition] = self._next_pid
            self._pid_names[found] = partition
            self._next_pid += 1
        self._pid_counts[found] = self._pid_counts.get(found, 0) + 1
        return found

    def _release(self, pid: int) -> None:
        """Count one entry less in a partition; forget a partition left empty (so the map
        of partitions stays as small as the index)."""
        left = self._pid_counts[pid] - 1
        if left:
            self._pid_counts[pid] = left
        else:
            del self._pid_counts[pid]
            del self._partitions[self._pid_names.pop(pid)]

    def get(self, key: str, now: float) -> tuple[V, float] | None:
        """The live value under exactly ``key`` (made most recent) and its expiry."""
        row = self._slots.get(key)
        if row is None:
            return None
        if self._expires[row] <= now:
            self.delete(key)
            return None
        self._slots.move_to_end(key)
        return self._values[key], float(self._expires[row])

    def put(self, key: str, partition: str, vector: Vector | None, value: V,
            expires_at: float = math.inf, *, created: float = 0.0) -> None:
        """Add or replace an entry. ``vector`` is a unit vector of the index's dimension
        (set by the first one), or ``None`` for an entry found by its exact key only;
        ``created`` (when it was stored) breaks ties of similarity: the newest wins."""
        import numpy as np

        if vector is not None:
            if self.dimension is None:
                self.dimension = int(vector.shape[0])
                self._matrix = np.zeros((self.capacity, self.dimension), dtype=np.float32)
            elif vector.shape[0] != self.dimension:
                raise ValueError(f"the embedding has {vector.shape[0]} dimensions, the index "
                                 f"{self.dimension}: the embedding model changed; use another "
                                 "path or namespace for the new model")
        if key in self._slots:
            self.delete(key)
        if not self._free:
            oldest = next(iter(self._slots))
            self.delete(oldest)
        row = heapq.heappop(self._free)
        self._high = max(self._high, row + 1)
        if vector is not None:
            self._matrix[row] = vector
            self._partition[row] = self._partition_id(partition)
        else:
            self._partition[row] = _EXACT_ONLY
        self._expires[row] = expires_at
        self._created[row] = created
        self._slots[key] = row
        self._row_keys[row] = key
        self._values[key] = value

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        row = self._slots.pop(key, None)
        if row is None:
            return False
        del self._values[key]
        if self._partition[row] >= 0:
            self._release(int(self._partition[row]))
        self._partition[row] = _FREE
        heapq.heappush(self._free, row)
        return True

    def keep_exact_only(self) -> None:
        """Make every entry one found by its exact key only, and forget the dimension (the
        next vector sets it): what to do with entries of another embedding model, whose
        vectors no prompt of the new model can be compared with."""
        import numpy as np

        for row in self._slots.values():
            if self._partition[row] >= 0:
                self._release(int(self._partition[row]))
                self._partition[row] = _EXACT_ONLY
        self.dimension = None
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    def search(self, vector: Vector, partition: str, now: float) -> Match[V] | None:
        """The live entry of ``partition`` whose vector is nearest to ``vector``, or ``None``
        when the partition has none (:meth:`touch` the entry when it is used). Its cosine
        is exact (float64); of entries as near, the newest answers, then the smallest key."""
        import numpy as np

        pid = self._partitions.get(partition)
        if pid is None or self.dimension is None or vector.shape[0] != self.dimension:
            return None
        # Rows are handed out lowest first, so the used ones sit below the high-water mark:
        # one product over that slice (a view, no copy), then mask other partitions.
        high = self._high
        sims = self._matrix[:high] @ vector
        live = (self._partition[:high] == pid) & (self._expires[:high] > now)
        if not live.any():
            return None
        sims = np.where(live, sims, -np.inf)
        # Every row the float32 product puts within twice its error of the best may be the
        # best: those alone are scored exactly, each row alone (no place in a block).
        near = np.flatnonzero(sims >= sims.max() - 2.0 * _float32_error(self.dimension))
        exact = (self._matrix[near].astype(np.float64)
                 * vector.astype(np.float64)).sum(axis=1)
        tied = near[exact == exact.max()]
        # Equally near: the newest, then the smallest key (not the lowest row).
        created = self._created[tied]
        row = min((int(r) for r in tied[created == created.max()]),
                  key=self._row_keys.__getitem__)
        similarity = float(exact.max())
        key = self._row_keys[row]
        return Match(key, self._values[key], similarity, float(self._expires[row]))

    def touch(self, key: str) -> None:
        """Make ``key`` the most recently used entry."""
        if key in self._slots:
            self._slots.move_to_end(key)

    @property
    def partitions(self) -> int:
        """The number of partitions with entries."""
        return len(self._partitions)

    def purge(self, now: float) -> int:
        """Drop every expired entry; returns how many."""
        dead = [k for k, row in self._slots.items() if self._expires[row] <= now]
        for key in dead:
            self.delete(key)
        return len(dead)
