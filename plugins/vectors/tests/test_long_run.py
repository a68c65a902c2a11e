"""The long run: a ``vectors`` folder written for weeks, its documents replaced and
deleted again and again. Its size follows its live rows, not the history of its writes;
a restart replays a bounded journal; memory keeps nothing per id once deleted. Measured
in bytes and files, never in time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from aieng_hookspecs.types import Document
from aieng_vectors._disk import JOURNAL
from aieng_vectors._options import VectorsOptions
from aieng_vectors._store import VectorStore

from aieng_core.testing.steady import measure_growth

DIM = 128
DOCS = 100
# The journal bound of a folder whose snapshot is smaller (aieng_vectors._store).
BOUND = 4 * 1024 * 1024


def folder_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def open_store(root: Path) -> VectorStore:
    store = VectorStore(VectorsOptions(path=str(root)))
    store.open(root)
    return store


def test_overwrites_and_deletes_keep_the_folder_to_its_live_rows(tmp_path: Path) -> None:
    """200 rounds of replacing the same 100 documents (64 KB of vectors a round) and
    deleting a tenth of them: the folder stays within the journal's bound (it kept every
    round, 14 MB and growing, until 64 MiB of them), one snapshot, and a restart reads
    the live documents back from what is left."""
    root = tmp_path / "idx"
    store = open_store(root)
    rng = np.random.default_rng(7)
    peak = 0
    for round_ in range(200):
        docs = [Document(f"d{i}", f"round {round_} of document {i}") for i in range(DOCS)]
        store.upsert(docs, rng.standard_normal((DOCS, DIM)))
        store.delete([f"d{i}" for i in range(round_ % 10, DOCS, 10)])
        peak = max(peak, folder_bytes(root))
    assert peak < BOUND + 2 * DOCS * DIM * 4 + 200_000, peak
    assert (root / JOURNAL).stat().st_size <= BOUND + 200_000
    assert len(list(root.glob("gen-*"))) <= 1
    live = sorted(doc_id for doc_id in (f"d{i}" for i in range(DOCS)) if doc_id in store)
    store.close()
    again = open_store(root)
    assert sorted(doc_id for doc_id in (f"d{i}" for i in range(DOCS)) if doc_id in again) \
        == live and len(again) == 90
    assert (root / JOURNAL).stat().st_size == 0  # closed: folded into the snapshot
    again.close()


def test_ids_written_once_and_deleted_keep_no_memory() -> None:
    """A store of a new id, a filtered search and the deletion of the id 100 writes
    before: the rows, id maps, keys and filter columns keep nothing per id (100 live rows
    throughout; keys are renumbered past twice the rows and 1,024, a saw-tooth of a few
    KB that 2,000 calls divide down)."""
    store = VectorStore(VectorsOptions())  # in memory: the folder's writes are above
    rng = np.random.default_rng(3)

    def call(i: int) -> None:
        store.upsert([Document(f"d{i}", "text", metadata={"user": f"u{i % 64}"})],
                     rng.standard_normal((1, 16)))
        if i >= 100:
            store.delete([f"d{i - 100}"])
        store.search(rng.standard_normal((1, 16)), 3, {"user": f"u{i % 64}"})

    growth = measure_growth(call, warmup=300, calls=2_000)
    assert growth.per_call < 32 and not growth.held, growth.report()
    assert len(store) == 100


def test_deleting_most_rows_gives_their_memory_back() -> None:
    """20,000 rows with a filtered field, then all but 100 deleted: the vectors' matrix
    and the filter columns shrink to about twice the rows left (they kept room for
    20,000 rows for as long as the process lived), and the rows left still answer."""
    import tracemalloc

    store = VectorStore(VectorsOptions())
    rng = np.random.default_rng(11)
    tracemalloc.start()
    try:
        for start in range(0, 20_000, 1_000):
            docs = [Document(f"d{i}", "text", metadata={"user": f"u{i % 50}"})
                    for i in range(start, start + 1_000)]
            store.upsert(docs, rng.standard_normal((1_000, DIM)))
        assert store.search(rng.standard_normal((1, DIM)), 3, {"user": "u7"})
        full = tracemalloc.get_traced_memory()[0]
        for start in range(100, 20_000, 1_000):
            store.delete([f"d{i}" for i in range(start, min(start + 1_000, 20_000))])
        left = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    matrix = 20_000 * DIM * 4  # 10 MB of float32 rows
    # The documents, their ids and filter codes (~9 MB), and the matrix with them.
    assert full - left > 1.5 * matrix, (full, left)
    assert len(store) == 100
    hits = store.search(rng.standard_normal((1, DIM)), 5, {"user": "u7"})
    assert [doc.id for doc, _ in hits] and all(doc.metadata["user"] == "u7" for doc, _ in hits)
