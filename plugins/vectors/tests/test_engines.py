"""The two HNSW engines (usearch, hnswlib): same contract, recall, and a folder written
with one engine opens with the other (its graph rebuilt from the vectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Document, Query
from aieng_vectors import VectorIndex, VectorsOptions
from aieng_vectors._graphs import HnswlibGraph, UsearchGraph, new_graph, restore

N, DIM, QUERIES, K = 3_000, 32, 40, 10


def _table(seed: int = 7) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    table = {f"v{i}": row for i, row in enumerate(rng.standard_normal((N, DIM)).tolist())}
    table.update({f"q{j}": row for j, row in
                  enumerate(rng.standard_normal((QUERIES, DIM)).tolist())})
    return table


def test_unknown_engine_is_refused() -> None:
    """An engine that is not offered fails the options, naming the choices."""
    with pytest.raises(ValueError, match="usearch.*hnswlib"):
        VectorsOptions(engine="faiss")


@pytest.mark.parametrize("engine", ["usearch", "hnswlib"])
def test_graph_add_remove_search(engine: str, tmp_path: Path) -> None:
    """Both graphs: search finds an inserted vector first, remove counts the keys that
    were there, removed keys are never returned, len counts live entries, and a saved graph
    restores with the same answers (and not as the other engine's)."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph = new_graph(engine, 16, 16, 64, 64)
    graph.add(np.arange(300, dtype=np.uint64), vectors, threads=1)
    assert len(graph) == 300 and graph.ndim == 16
    assert int(graph.search(vectors[7], 5)[0]) == 7
    assert graph.remove(np.asarray([7, 8, 7000], dtype=np.uint64)) == 2
    assert len(graph) == 298
    found = graph.search(vectors[7], 20).tolist()
    assert 7 not in found and 8 not in found and len(found) == 20
    graph.add(np.asarray([300], dtype=np.uint64), vectors[7:8], threads=1)  # reuses a slot
    assert int(graph.search(vectors[7], 1)[0]) == 300 and len(graph) == 299
    path = tmp_path / "graph"
    graph.save(str(path))
    back = restore(engine, path, 16)
    assert back is not None and len(back) == 299
    assert back.search(vectors[42], 10).tolist() == graph.search(vectors[42], 10).tolist()
    other = "usearch" if engine == "hnswlib" else "hnswlib"
    assert restore(other, path, 16) is None
    assert isinstance(back, HnswlibGraph if engine == "hnswlib" else UsearchGraph)


def test_hnswlib_asked_for_more_than_it_holds() -> None:
    """Asking for more neighbours than live entries gives the live ones, not an error."""
    graph = new_graph("hnswlib", 4, 8, 16, 4)
    graph.add(np.arange(3, dtype=np.uint64), np.eye(3, 4, dtype=np.float32), threads=1)
    graph.remove(np.asarray([1], dtype=np.uint64))
    assert sorted(graph.search(np.eye(1, 4, dtype=np.float32)[0], 3).tolist()) == [0, 2]


@pytest.mark.anyio
async def test_hnswlib_recall_at_10_against_exact(table_embedder: Any) -> None:
    """The hnswlib engine's top 10 holds at least 95% of the exact top 10 on random
    Gaussian vectors, with the same exactly rescored cosines."""
    embedder = table_embedder(_table())
    docs = [Document(f"v{i}", f"v{i}") for i in range(N)]
    exact = VectorIndex(VectorsOptions(batch_size=1024), embedder=embedder.aieng_embed)
    approx = VectorIndex(VectorsOptions(batch_size=1024, exact_below=1_000, threads=1,
                                        engine="hnswlib"), embedder=embedder.aieng_embed)
    for index in (exact, approx):
        await index.aieng_index(docs)
    assert approx.uses_hnsw
    found = 0
    for j in range(QUERIES):
        truth = {hit.document.id: hit.score
                 for hit in await exact.aieng_retrieve(Query(f"q{j}"), K)}
        got = await approx.aieng_retrieve(Query(f"q{j}"), K)
        assert len(got) == K
        for hit in got:
            if hit.document.id in truth:
                found += 1
                assert hit.score == pytest.approx(truth[hit.document.id], abs=1e-6)
    assert found / (QUERIES * K) >= 0.95


@pytest.mark.anyio
@pytest.mark.parametrize(("first", "second"), [("usearch", "hnswlib"), ("hnswlib", "usearch")])
async def test_a_folder_opens_with_the_other_engine(table_embedder: Any, tmp_path: Path,
                                                    first: str, second: str) -> None:
    """A folder saved with one engine's graph, opened with the other, rebuilds its graph
    and answers as the exact scan does for exact matches (each vector finds itself)."""
    embedder = table_embedder(_table(11))
    docs = [Document(f"v{i}", f"v{i}") for i in range(600)]
    path = str(tmp_path / "idx")
    index = VectorIndex(VectorsOptions(path=path, exact_below=200, threads=1, engine=first),
                        embedder=embedder.aieng_embed)
    await index.aieng_index(docs)
    await index.delete(["v5"])
    await index.aclose()
    reopened = VectorIndex(VectorsOptions(path=path, exact_below=200, threads=1,
                                          engine=second), embedder=embedder.aieng_embed)
    await reopened._ensure_loaded()  # what the pipeline's open does
    assert reopened.uses_hnsw and len(reopened) == 599
    for i in (0, 6, 599):
        assert (await reopened.aieng_retrieve(Query(f"v{i}"), 1))[0].document.id == f"v{i}"
    assert "v5" not in {hit.document.id
                        for hit in await reopened.aieng_retrieve(Query("v5"), 10)}
    await reopened.aclose()


@pytest.mark.parametrize("raw", [
    np.asarray([[3.0, 4.0, 0.0]], dtype=np.float32),
    [np.asarray([1e-30, -2e-30, 0.5], dtype=np.float32)],
    np.asarray([[1e300, 1e300]], dtype=np.float64),  # squares overflow: the careful path
    [[0.1, 0.2, 0.3]],  # plain lists: the careful path
    np.zeros((1, 3), dtype=np.float32),  # the zero vector stays zero
])
def test_query_vector_short_path_equals_unit_rows(raw: Any) -> None:
    """The search's short path for one query vector gives what unit_rows gives."""
    from aieng_vectors._store import _unit_query, unit_rows

    assert np.array_equal(_unit_query(raw), unit_rows(raw, 1)[0])


@pytest.mark.parametrize("raw", [np.asarray([[np.nan, 1.0]], dtype=np.float32),
                                 np.asarray([1.0, 2.0], dtype=np.float32)])
def test_bad_query_vectors_still_fail(raw: Any) -> None:
    """NaN, or a bare vector where a matrix of one row is due, fails as before."""
    from aieng_vectors._store import _unit_query

    with pytest.raises(ValueError, match="NaN|shape"):
        _unit_query(raw)


def test_usearch_graph_without_the_compiled_call() -> None:
    """A usearch version without the compiled call is searched through Index.search,
    with the same answer."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    graph = new_graph("usearch", 8, 16, 64, 64)
    assert isinstance(graph, UsearchGraph)
    graph.add(np.arange(200, dtype=np.uint64), vectors, threads=1)
    fast = graph.search(vectors[3], 10).tolist()
    graph._search = None
    assert graph.search(vectors[3], 10).tolist() == fast
