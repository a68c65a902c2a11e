"""The HNSW engines behind ``vectors``: usearch (the default) or hnswlib, behind one shape.

The store uses a graph as: ``add(keys, vectors, threads)``, ``remove(keys)`` (how many
were there), ``search(vector, count)`` (keys, best first), ``expansion_search``
(``ef``), ``len()`` (live entries), ``ndim``, ``save(path)``; ``restore(engine, path)``
reads a saved graph back, or gives ``None`` when the file holds another engine's graph
(the store then rebuilds it from the vectors). Both engines are imported only when a
graph is made.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HnswlibGraph", "UsearchGraph", "new_graph", "restore"]

# A graph file written by HnswlibGraph starts with this line, then one line of JSON (the
# live count, for len()), then hnswlib's own file.
_MAGIC = b"aieng-vectors hnswlib graph v1\n"


class UsearchGraph:
    """usearch's ``Index`` (inner product, float32), searched on one thread."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self._ef = int(index.expansion_search)
        # The compiled call under Index.search, skipping its Python wrapper (~15 µs a
        # query); when a usearch version lacks it, Index.search itself.
        compiled = getattr(getattr(index, "_compiled", None), "search_many", None)
        self._search = compiled

    @classmethod
    def create(cls, dim: int, connectivity: int, expansion_add: int,
               expansion_search: int) -> UsearchGraph:
        """An empty graph."""
        from usearch.index import Index

        return cls(Index(ndim=dim, metric="ip", dtype="f32", connectivity=connectivity,
                         expansion_add=expansion_add, expansion_search=expansion_search))

    @property
    def ndim(self) -> int:
        """The vectors' dimension."""
        return int(self.index.ndim)

    @property
    def expansion_search(self) -> int:
        """The search-time candidate list (``ef``)."""
        return self._ef

    @expansion_search.setter
    def expansion_search(self, ef: int) -> None:
        if ef != self._ef:
            self.index.expansion_search = ef
            self._ef = ef

    def __len__(self) -> int:
        return len(self.index)

    def add(self, keys: Any, vectors: Any, threads: int) -> None:
        """Insert ``vectors`` under ``keys`` (uint64)."""
        self.index.add(keys, vectors, threads=threads)

    def remove(self, keys: Any) -> int:
        """Remove ``keys``; how many were in the graph."""
        return int(np.sum(self.index.remove(keys)))

    def search(self, vector: Any, count: int) -> Any:
        """The keys of the ``count`` nearest entries to ``vector`` (float32), best first."""
        if self._search is None:
            return self.index.search(vector, count, threads=1).keys
        # Positional (queries, count, exact, threads): pybind11 parses keywords slower.
        found = self._search(vector.reshape(1, -1), count, False, 1)
        return found[0][0, : int(found[2][0])]  # keys, distances, counts, ...

    def save(self, path: str) -> None:
        """Write the graph to ``path``, through to the disk (the snapshot that holds it
        replaces the last one next)."""
        self.index.save(path)
        with open(path, "rb") as written:
            os.fsync(written.fileno())


class HnswlibGraph:
    """hnswlib's ``Index`` (space ``ip``), searched on one thread; deletes mark entries,
    whose slots later inserts reuse."""

    def __init__(self, index: Any, live: int) -> None:
        self.index = index
        self._live = live
        self._ef = int(index.ef)

    @classmethod
    def create(cls, dim: int, connectivity: int, expansion_add: int,
               expansion_search: int) -> HnswlibGraph:
        """An empty graph."""
        import hnswlib  # type: ignore[import-untyped,import-not-found,unused-ignore]

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=1024, M=connectivity, ef_construction=expansion_add,
                         random_seed=100, allow_replace_deleted=True)
        index.set_ef(expansion_search)
        index.set_num_threads(1)
        return cls(index, 0)

    @property
    def ndim(self) -> int:
        """The vectors' dimension."""
        return int(self.index.dim)

    @property
    def expansion_search(self) -> int:
        """The search-time candidate list (``ef``)."""
        return self._ef

    @expansion_search.setter
    def expansion_search(self, ef: int) -> None:
        if ef != self._ef:
            self.index.set_ef(ef)
            self._ef = ef

    def __len__(self) -> int:
        return self._live

    def add(self, keys: Any, vectors: Any, threads: int) -> None:
        """Insert ``vectors`` under ``keys`` (new to this graph: the store never reuses a
        key within one graph)."""
        needed = self.index.element_count + len(keys)
        if needed > self.index.get_max_elements():
            self.index.resize_index(max(needed, 2 * self.index.get_max_elements()))
        self.index.add_items(vectors, keys, num_threads=threads or -1, replace_deleted=True)
        self._live += len(keys)

    def remove(self, keys: Any) -> int:
        """Mark ``keys`` deleted; how many were in the graph."""
        removed = 0
        for key in keys.tolist():
            try:
                self.index.mark_deleted(key)
            except RuntimeError:  # "Label not found", or already deleted
                continue
            removed += 1
        self._live -= removed
        return removed

    def search(self, vector: Any, count: int) -> Any:
        """The keys of the ``count`` nearest live entries to ``vector``, best first (fewer
        or none when the graph cannot reach ``count`` live entries: the store then scans)."""
        try:  # positional: pybind11 parses keywords slower (~3 µs a query)
            return self.index.knn_query(vector, count, 1)[0][0]
        except RuntimeError:  # hnswlib found fewer than count: widen the search
            pass
        self.index.set_ef(max(self._ef, 4 * count, 64))
        try:
            for want in dict.fromkeys((count, min(count, self._live))):
                try:
                    return self.index.knn_query(vector, k=want, num_threads=1)[0][0]
                except RuntimeError:
                    continue
            return np.zeros(0, dtype=np.uint64)
        finally:
            self.index.set_ef(self._ef)

    def save(self, path: str) -> None:
        """Write the graph to ``path``: a tag line, the live count, hnswlib's file."""
        target = Path(path)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            raw = os.path.join(tmp, "graph.bin")
            self.index.save_index(raw)
            with open(target, "wb") as out, open(raw, "rb") as source:
                out.write(_MAGIC + json.dumps({"live": self._live}).encode() + b"\n")
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())

    @classmethod
    def load(cls, path: Path, dim: int) -> HnswlibGraph | None:
        """The graph saved at ``path``, or ``None`` when it is no hnswlib graph of ours."""
        import hnswlib  # type: ignore[import-untyped,import-not-found,unused-ignore]

        with open(path, "rb") as source:
            if source.read(len(_MAGIC)) != _MAGIC:
                return None
            live = int(json.loads(source.readline())["live"])
            with tempfile.TemporaryDirectory() as tmp:
                raw = os.path.join(tmp, "graph.bin")
                with open(raw, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                index = hnswlib.Index(space="ip", dim=dim)
                index.load_index(raw, allow_replace_deleted=True)
        index.set_num_threads(1)
        return cls(index, live)


def new_graph(engine: str, dim: int, connectivity: int, expansion_add: int,
              expansion_search: int) -> UsearchGraph | HnswlibGraph:
    """An empty graph of ``engine``."""
    kind = HnswlibGraph if engine == "hnswlib" else UsearchGraph
    return kind.create(dim, connectivity, expansion_add, expansion_search)


def restore(engine: str, path: Path, dim: int) -> UsearchGraph | HnswlibGraph | None:
    """The graph saved at ``path`` when ``engine`` wrote it, else ``None``."""
    if engine == "hnswlib":
        return HnswlibGraph.load(path, dim)
    with open(path, "rb") as source:
        if source.read(len(_MAGIC)) == _MAGIC:
            return None  # hnswlib's: the index was built with the other engine
    from usearch.index import Index

    index = Index.restore(str(path))
    return None if index is None else UsearchGraph(index)
