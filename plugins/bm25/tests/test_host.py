"""``bm25`` in a host program: under trio, across ``fork``, in a path with spaces and
non-ASCII characters."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import aieng_bm25
import pytest
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document

from aieng_core import Kernel
from aieng_core.testing import read_only

DOCS = [Document("rrf", "Reciprocal rank fusion merges ranked lists.", title="Fusion"),
        Document("bm25", "BM25 ranks documents by term frequency.", title="BM25"),
        Document("hnsw", "HNSW searches dense vectors approximately.", title="HNSW")]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_pipeline_indexes_and_retrieves_under_either_backend(
        aieng_kernel: Kernel, register_plugin: Any, tmp_path: Path) -> None:
    """Under trio as under asyncio a pipeline with ``bm25`` opens its index (a folder
    whose path has spaces and non-ASCII), indexes, retrieves and closes."""
    config = {"pipeline": {"name": "lexical", "stages": ["retrieve"]},
              "components": {"search": {"use": "bm25",
                                        "path": str(tmp_path / "índice ü" / "an index")}}}
    with register_plugin(aieng_bm25, "bm25"):
        pipeline = aieng_kernel.pipeline(config)
    async with pipeline:
        assert await pipeline.index(DOCS) == 3
        result = await pipeline.run("term frequency ranking")
    assert [hit.document.id for hit in result.retrieved][:1] == ["bm25"]


def _child(index: BM25Index, results: Any) -> None:
    hits = index.search("rank fusion", 1)
    index.close()
    results.put([hit.document.id for hit in hits])


def test_a_forked_child_closing_a_read_only_index_leaves_the_parents(tmp_path: Path) -> None:
    """A read-only folder opens through a private folder of this process; a child forked
    from it (multiprocessing "fork", gunicorn --preload) that closes the index (or exits)
    removed that folder from under the parent. Now only the process that made it does:
    the parent keeps searching, and its own close removes it."""
    folder = tmp_path / "idx"
    made = BM25Index(BM25Options(path=str(folder)))
    made.add(DOCS)
    made.close()
    with read_only(folder) as view:
        index = BM25Index(BM25Options(path=str(view)))
        index.open()
        private = Path(index._meta).parent  # where it searches from
        assert private != view
        context = multiprocessing.get_context("fork")
        results = context.SimpleQueue()
        child = context.Process(target=_child, args=(index, results))
        child.start()
        child.join(30)
        assert child.exitcode == 0 and results.get() == ["rrf"]
        assert (private / "meta.json").is_file()
        index.refresh()
        assert [hit.document.id for hit in index.search("dense vectors", 1)] == ["hnsw"]
        index.close()
        assert not private.exists()
