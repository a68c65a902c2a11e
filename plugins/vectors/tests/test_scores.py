"""The numbers a search returns: cosines against a float64 brute force written here, and
the tie rule (equal scores by id) for duplicate vectors at real dimensions, on every
path (exact scan, filtered scan, HNSW), whatever the rows' positions."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Document
from aieng_vectors import VectorsOptions
from aieng_vectors._store import VectorStore
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st


def _brute_force(rows: Any, ids: list[str], query: Any, k: int) -> list[tuple[str, float]]:
    """The best ``k`` by cosine, computed in float64 from the raw vectors (no store code),
    equal scores in id order."""
    rows64 = np.asarray(rows, np.float64)
    rows64 = rows64 / np.linalg.norm(rows64, axis=1, keepdims=True)
    q64 = np.asarray(query, np.float64).reshape(-1)
    q64 = q64 / np.linalg.norm(q64)
    scores = [float(np.clip(sum(float(a) * float(b) for a, b in zip(row, q64)), -1, 1))
              for row in rows64]
    return sorted(zip(ids, scores), key=lambda pair: (-pair[1], pair[0]))[:k]


def _store(rows: Any, ids: list[str], **options: Any) -> VectorStore:
    store = VectorStore(VectorsOptions(threads=1, **options))
    store.upsert([Document(i, i, metadata={"even": int(i[1:]) % 2 == 0}) for i in ids], rows)
    store.flush()
    return store


@st.composite
def _duplicates(draw: st.DrawFn) -> tuple[Any, list[str], Any, int]:
    """A few distinct directions, each stored several times under shuffled ids, at
    dimensions where BLAS blocks rows (so a row's float32 product depends on its place)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dim = draw(st.sampled_from([3, 139, 384]))
    distinct = draw(st.integers(1, 6))
    base = rng.standard_normal((distinct, dim)).astype(np.float32)
    rows = np.repeat(base, rng.integers(1, 12, size=distinct), axis=0)
    rows = rows[rng.permutation(len(rows))]
    ids = [f"d{j:03d}" for j in rng.permutation(len(rows))]
    query = rng.standard_normal((1, dim)).astype(np.float32)
    return rows, ids, query, draw(st.integers(1, len(rows) + 2))


def _separated(pairs: list[tuple[str, float]]) -> bool:
    """Whether distinct directions' cosines are far apart (no near tie: the oracle's order
    is then the only right one)."""
    values = sorted({round(score, 9) for _, score in pairs})
    return all(b - a > 1e-4 for a, b in pairwise(values))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_duplicates())
def test_duplicates_are_ties_by_id(case: Any) -> None:
    """Exact scan, plain and filtered: equal vectors score equal (to the bit) and come in
    id order, the scores are the brute force's cosines, and a store filled in another
    order, then after a delete moved a row, answers the same, bit for bit. The HNSW path
    (approximate: of many copies it may return other ones) returns its hits in the same
    rule's order, with the same scores."""
    rows, ids, query, k = case
    everything = _brute_force(rows, ids, query, len(ids))
    assume(_separated(everything))
    want = everything[:k]
    store = _store(rows, ids)
    got = [(doc.id, score) for doc, score in store.search(query, k, {})]
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    even = [pair for pair in everything if int(pair[0][1:]) % 2 == 0][:k]
    got_even = [(doc.id, s) for doc, s in store.search(query, k, {"even": True})]
    assert [i for i, _ in got_even] == [i for i, _ in even]
    order = list(reversed(range(len(ids))))
    other = _store(rows[order], [ids[i] for i in order])
    assert [(doc.id, s) for doc, s in other.search(query, k, {})] == got
    other.upsert([Document("a", "a")], rows[-1:])  # row 0's id: every row moves up
    other.delete(["a"])
    assert [(doc.id, s) for doc, s in other.search(query, k, {})] == got
    exact = {doc.id: s for doc, s in store.search(query, len(ids), {})}
    graph = _store(rows, ids, exact_below=0)
    for filters in ({}, {"even": True}):
        hits = [(doc.id, s) for doc, s in graph.search(query, k, filters)]
        assert hits == sorted(hits, key=lambda pair: (-pair[1], pair[0]))
        assert hits == [(i, exact[i]) for i, _ in hits]  # the exact scan's cosines


@pytest.mark.parametrize("seed", [3, 4, 8, 11])
def test_copies_of_a_384_dimension_vector_tie_by_id(seed: int) -> None:
    """45 copies of one MiniLM-sized vector score the same and come in id order, k = 1
    included (with OpenBLAS's blocked float32 product, the last row of 45 scored an ulp
    above the others for these seeds: it came first)."""
    rng = np.random.default_rng(seed)
    rows = np.tile(rng.standard_normal(384).astype(np.float32), (45, 1))
    ids = [f"d{j:03d}" for j in range(45)]
    store = _store(rows, ids)
    query = rng.standard_normal((1, 384)).astype(np.float32)
    got = store.search(query, 45, {})
    assert [doc.id for doc, _ in got] == ids
    assert len({score for _, score in got}) == 1
    assert [doc.id for doc, _ in store.search(query, 1, {})] == ["d000"]
