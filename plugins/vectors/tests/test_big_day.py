"""``vectors`` on the big day: opening a large folder holds what it must, not twice that.

Growth is shown by memory counts (``tracemalloc``: numpy reports its array buffers to
it), never by timings.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from aieng_hookspecs.types import Document
from aieng_vectors import VectorsOptions
from aieng_vectors._disk import Folder
from aieng_vectors._store import VectorStore

T = TypeVar("T")


def peak_of(work: Callable[[], T]) -> tuple[T, int]:
    """``work()``'s result and the most memory (bytes) it held at once."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = work()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def vectors(count: int, dim: int, seed: int = 0) -> Any:
    return np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)


def test_opening_a_snapshot_holds_its_vectors_once(tmp_path: Path) -> None:
    """Opening a folder loads the snapshot's vectors into the index without a second copy:
    the load used to copy the freshly read array, so opening a 1M x 384 index (1.5 GB)
    needed 3 GB at its peak."""
    count, dim = 1000, 1024  # 4 MiB of vectors, documents of no text: the vectors dominate
    store = VectorStore(VectorsOptions(path=str(tmp_path)))
    store.open(tmp_path)
    store.upsert([Document(f"d{i}", "") for i in range(count)], vectors(count, dim))
    store.close()
    matrix_bytes = count * dim * 4

    reopened = VectorStore(VectorsOptions(path=str(tmp_path)))
    _, peak = peak_of(lambda: reopened.open(tmp_path))
    assert len(reopened) == count
    assert peak < 1.5 * matrix_bytes, (peak, matrix_bytes)
    reopened.close()


def test_replaying_the_journal_holds_one_line_at_a_time(tmp_path: Path) -> None:
    """The journal's operations are read one line at a time: replaying a journal (up to
    the size of the snapshot, 1.5 GB for a 1M x 384 index) no longer parses it whole into
    memory before applying the first line."""
    store = VectorStore(VectorsOptions(path=str(tmp_path)))
    store.open(tmp_path)
    lines, batch, dim = 40, 32, 256  # 40 lines of ~44 KB
    for line in range(lines):
        store.upsert([Document(f"d{line}-{i}", "") for i in range(batch)],
                     vectors(batch, dim, seed=line))
    journal = tmp_path / "journal.jsonl"
    size = journal.stat().st_size
    assert len(journal.read_bytes().splitlines()) == lines
    store._folder.unlock()  # type: ignore[union-attr]  # as a crash leaves it: no snapshot

    folder = Folder(tmp_path)
    manifest = folder.manifest()
    assert manifest is not None

    def replay() -> int:
        count = 0
        for op in folder.journal(manifest.generation):
            count += len(op["documents"])
        return count

    count, peak = peak_of(replay)
    assert count == lines * batch
    assert peak < size / 4, (peak, size)
