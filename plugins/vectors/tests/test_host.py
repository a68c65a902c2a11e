"""``vectors`` in a host program: under trio, across ``fork``, in a folder whose path has
spaces and non-ASCII characters."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import anyio
import pytest
from _vectors_folders import contents
from aieng_hookspecs.types import Document, Query
from aieng_vectors import VectorIndex, VectorsOptions

DOCS = [Document("rrf", "Reciprocal rank fusion merges ranked lists."),
        Document("bm25", "BM25 scores term frequency."),
        Document("hnsw", "HNSW is a layered graph for nearest neighbour search.")]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("engine", ["usearch", "hnswlib"])
async def test_indexes_persists_and_searches_under_either_backend(
        hashing_embedder: Any, tmp_path: Path, engine: str) -> None:
    """Under trio as under asyncio, with either HNSW engine, the index writes its folder
    (a path with spaces and non-ASCII), reopens it and answers from the graph."""
    path = tmp_path / "vecteurs ü" / "an index"
    options = VectorsOptions(path=str(path), exact_below=0, engine=engine)
    index = VectorIndex(options, embedder=hashing_embedder.aieng_embed)
    assert await index.aieng_index(DOCS) == 3
    await index.aclose()
    again = VectorIndex(options, embedder=hashing_embedder.aieng_embed)
    hits = await again.aieng_retrieve(Query("layered graph nearest neighbour"), 1)
    assert again.uses_hnsw and [hit.document.id for hit in hits] == ["hnsw"]
    await again.aclose()


def _child(index: VectorIndex, results: Any) -> None:
    async def work() -> tuple[list[str], str]:
        hits = await index.aieng_retrieve(Query("rank fusion"), 1)
        try:
            await index.aieng_index([Document("child", "written by the child")])
            refused = ""
        except RuntimeError as exc:
            refused = str(exc)
        await index.aclose()
        return [hit.document.id for hit in hits], refused

    results.put(anyio.run(work))


def test_a_forked_child_searches_but_never_writes_the_parents_folder(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """A child forked from the process that opened the index for writing (multiprocessing
    "fork", gunicorn --preload) shares the writer's lock: it searches the index as of the
    fork, but a write is refused with an error saying why and what to do, and its close
    writes nothing (no snapshot over the parent's files); the parent keeps writing."""
    path = tmp_path / "idx"
    index = VectorIndex(VectorsOptions(path=str(path)), embedder=hashing_embedder.aieng_embed)
    anyio.run(index.aieng_index, DOCS[:2])
    before = contents(path)
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    child = context.Process(target=_child, args=(index, results))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    found, refused = results.get()
    assert found == ["rrf"]
    assert "was forked from it" in refused and "read_only = true" in refused
    assert contents(path) == before
    anyio.run(index.aieng_index, DOCS[2:])
    anyio.run(index.aclose)
    again = VectorIndex(VectorsOptions(path=str(path)), embedder=hashing_embedder.aieng_embed)
    assert [await_get(again, doc.id) for doc in DOCS] == DOCS
    assert await_get(again, "child") is None
    anyio.run(again.aclose)


def await_get(index: VectorIndex, doc_id: str) -> Document | None:
    return anyio.run(index.get, doc_id)
