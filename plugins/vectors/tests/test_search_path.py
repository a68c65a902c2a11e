"""The unfiltered HNSW search's short path gives exactly what the general ranking gives,
and the key → row map stays right (and small) through writes, deletes and reopening."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Document
from aieng_vectors import VectorsOptions
from aieng_vectors._store import VectorStore, _unit_query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ENGINES = ["usearch", "hnswlib"]


def _store(engine: str, vectors: Any, ids: list[str], **options: Any) -> VectorStore:
    store = VectorStore(VectorsOptions(exact_below=0, threads=1, engine=engine, **options))
    store.upsert([Document(i, i) for i in ids], vectors)
    store.flush()
    assert store.uses_hnsw
    return store


def _general(store: VectorStore, raw: Any, k: int) -> list[tuple[Document, float]]:
    """The general path every search took before the short path: the graph's candidates
    mapped to rows, rescored exactly (``_cosines``), clamped, ordered by score
    then id (``_rank``)."""
    query = _unit_query(raw)
    return store._rank(query, store._hnsw_candidates(query, k, None), k)


def _assert_same(got: list[tuple[Document, float]], want: list[tuple[Document, float]]) -> None:
    assert [doc.id for doc, _ in got] == [doc.id for doc, _ in want]
    # Bit for bit: the same cosines, not merely close ones.
    assert [score.hex() for _, score in got] == [score.hex() for _, score in want]
    assert all(type(score) is float for _, score in got)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Any, list[str], Any, int]:
    """Small sets of vectors with exact ties (repeated rows, shuffled ids), near ties
    (rows an ulp apart) and queries that are stored rows or fresh directions."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dim = draw(st.sampled_from([3, 8, 24]))
    distinct = draw(st.integers(2, 40))
    base = rng.standard_normal((distinct, dim)).astype(np.float32)
    repeats = rng.integers(1, 4, size=distinct)
    rows = np.repeat(base, repeats, axis=0)
    if draw(st.booleans()):  # near ties: a copy nudged by one ulp
        rows = np.vstack([rows, np.nextafter(rows[:5], np.float32(np.inf))])
    ids = [f"d{j:03d}" for j in rng.permutation(len(rows))]
    query = (
        rows[draw(st.integers(0, len(rows) - 1))]
        if draw(st.booleans())
        else (rng.standard_normal(dim).astype(np.float32))
    )
    k = draw(st.integers(1, 12))
    return rows, ids, query[None, :], k


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases())
def test_short_path_equals_the_general_ranking(engine: str, case: Any) -> None:
    """Same documents, same order (ties by id), same scores to the bit as the general
    path, also when the graph returns its candidates in the worst order (the short path
    then sorts). A row's cosine does not depend on its place among the candidates
    (``tests/test_scores.py``)."""
    rows, ids, query, k = case
    store = _store(engine, rows, ids)
    _assert_same(store.search(query, k, {}), _general(store, query, k))
    graph = store._hnsw
    search = graph.search
    graph.search = lambda vector, count: search(vector, count)[::-1]  # worst order
    _assert_same(store.search(query, k, {}), _general(store, query, k))


@pytest.mark.parametrize("engine", ENGINES)
def test_short_path_clamps_as_the_general_ranking(engine: str) -> None:
    """Rows past unit length (what float32 rounding does by an ulp, here by more) score
    past ±1 and are clamped to ±1.0 on both paths."""
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((30, 8)).astype(np.float32)
    store = _store(engine, rows, [f"d{i}" for i in range(30)])
    query = rows[4:5]
    second = store._rows[store.search(query, 2, {})[1][0].id]
    store._matrix[4] *= np.float32(1.001)  # the graph keeps the old vectors: the same
    store._matrix[second] = -store._matrix[4]  # candidates, rescored past +1 and -1
    got = store.search(query, 5, {})
    assert got[0] == (store._docs[4], 1.0) and got[-1] == (store._docs[second], -1.0)
    _assert_same(got, _general(store, query, 5))


def _check_key_map(store: VectorStore) -> None:
    live = store._key_row[: store._next_key]
    assert int((live >= 0).sum()) == len(store)
    for row, key in enumerate(store._keys):
        assert store._key_row[key] == row
    assert store._key_row.shape[0] <= max(16, 2 * store._next_key)


@pytest.mark.parametrize("engine", ENGINES)
def test_key_map_through_replacements_deletes_and_reopening(engine: str, tmp_path: Path) -> None:
    """Thousands of replacements renumber the keys when a fresh graph starts (and while
    there is no graph), so the map stays within a small multiple of the rows; deletes
    move rows; every stored vector still finds itself, before and after reopening."""
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((60, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(60)]
    for exact_below in (0, 1_000):  # the graph's renumbering, then the exact path's
        store = VectorStore(VectorsOptions(exact_below=exact_below, threads=1, engine=engine))
        store.open(tmp_path / f"idx{exact_below}")
        for _ in range(40):
            store.upsert([Document(i, i) for i in ids], vectors)
            _check_key_map(store)
        assert store._next_key <= 2 * 60 + 1024 + 60
        store.delete(["v3", "v30"])
        _check_key_map(store)
        store.flush()
        assert store.uses_hnsw == (exact_below == 0)
        for i in (0, 29, 59):
            assert store.search(vectors[i : i + 1], 1, {})[0][0].id == f"v{i}"
        store.close()
        back = VectorStore(VectorsOptions(exact_below=exact_below, threads=1, engine=engine))
        back.open(tmp_path / f"idx{exact_below}")
        _check_key_map(back)
        assert len(back) == 58 and "v3" not in back
        for i in (0, 29, 59):
            assert back.search(vectors[i : i + 1], 1, {})[0][0].id == f"v{i}"
        back.close()
