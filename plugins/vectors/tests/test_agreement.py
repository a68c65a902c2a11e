"""HNSW against the exact scan, after deletes and replacements (hypothesis): an HNSW
answer holds as many hits as the exact one, each with its exact cosine, never better than
the exact scan's at the same rank."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Document
from aieng_vectors import VectorsOptions
from aieng_vectors._store import VectorStore
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ENGINES = ["usearch", "hnswlib"]


def _doc(i: int, version: int) -> Document:
    return Document(f"d{i}", f"version {version}", metadata={"group": i % 3})


@st.composite
def _histories(draw: st.DrawFn) -> tuple[int, int, float, float, int]:
    """(seed, documents, share deleted, share of the rest replaced, dim)."""
    return (draw(st.integers(0, 2**32 - 1)), draw(st.integers(2, 160)),
            draw(st.floats(0.0, 0.99)), draw(st.floats(0.0, 1.0)), draw(st.integers(2, 12)))


def _build(engine: str, exact_below: int, history: tuple[int, int, float, float, int],
           ) -> tuple[VectorStore, Any]:
    seed, count, delete_share, replace_share, dim = history
    rng = np.random.default_rng(seed)
    store = VectorStore(VectorsOptions(exact_below=exact_below, engine=engine, threads=1))
    store.upsert([_doc(i, 0) for i in range(count)], rng.standard_normal((count, dim)))
    order = rng.permutation(count).tolist()
    cut = min(int(delete_share * count), count - 1)
    store.delete([f"d{i}" for i in order[:cut]])
    alive = order[cut:][: int(replace_share * (count - cut))]
    if alive:
        store.upsert([_doc(i, 1) for i in alive], rng.standard_normal((len(alive), dim)))
    store.flush()
    return store, rng.standard_normal((1, dim))


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=_histories(), k=st.integers(1, 170), grouped=st.booleans())
@example(history=(1, 91, 0.97, 1.0, 9), k=1, grouped=False)  # hnswlib: no hit at all
@example(history=(0, 17, 0.0, 1.0, 2), k=17, grouped=False)  # usearch: 16 of 17
def test_hnsw_answers_as_many_hits_as_the_exact_scan(
        engine: str, history: tuple[int, int, float, float, int], k: int,
        grouped: bool) -> None:
    """Both engines, ``exact_below = 0`` (always HNSW), with and without a filter: as many
    hits as the exact scan gives (hnswlib gave none at all once replacements had reused
    deleted slots the graph could no longer reach, usearch fewer than asked for when ``k``
    reached the index's size), each scored with its exact cosine, none better than the
    exact scan's at its rank; asked for every document, the same documents."""
    graph, query = _build(engine, 0, history)
    exact, _ = _build(engine, 10**9, history)
    assert graph.uses_hnsw and not exact.uses_hnsw
    filters = {"group": 1} if grouped else {}
    got, want = graph.search(query, k, filters), exact.search(query, k, filters)
    assert len(got) == len(want)
    scores = {doc.id: score for doc, score in exact.search(query, len(exact), {})}
    for (doc, score), (_, best) in zip(got, want, strict=True):
        assert score == pytest.approx(scores[doc.id], abs=1e-6)
        assert score <= best + 1e-6
    if k >= len(exact):
        assert {doc.id for doc, _ in got} == {doc.id for doc, _ in want}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("grouped", [False, True])
def test_a_zero_query_gets_the_exact_scans_answer(engine: str, grouped: bool) -> None:
    """A zero query vector (what a bag-of-words embedder gives a text without a known
    word) scores every document 0, so the answer is the tie order, by id, on both paths:
    the graph, searched with it, gave arbitrary documents."""
    rng = np.random.default_rng(7)
    docs = [_doc(i, 0) for i in range(200)]
    vectors = rng.standard_normal((200, 6))
    graph = VectorStore(VectorsOptions(exact_below=0, engine=engine, threads=1))
    exact = VectorStore(VectorsOptions(exact_below=10**9))
    for store in (graph, exact):
        store.upsert(docs, vectors)
        store.flush()
    assert graph.uses_hnsw and not exact.uses_hnsw
    filters = {"group": 1} if grouped else {}
    zero = np.zeros((1, 6), dtype=np.float32)
    got = [(doc.id, score) for doc, score in graph.search(zero, 5, filters)]
    want = [(doc.id, score) for doc, score in exact.search(zero, 5, filters)]
    assert got == want
    assert [score for _, score in got] == [0.0] * 5
    assert [doc_id for doc_id, _ in got] == sorted(doc_id for doc_id, _ in got)
