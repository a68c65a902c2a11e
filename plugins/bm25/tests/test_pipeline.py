"""``bm25`` through the kernel: a TOML pipeline file, composition, fusion, config errors."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import aieng_bm25
import pytest
from aieng_bm25 import BM25Options, BM25Retriever
from aieng_hookspecs.types import Document, Query

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo

Register = Callable[..., AbstractContextManager[PluginInfo]]

DOCS = [
    Document("rrf", "Reciprocal rank fusion merges ranked lists.", title="Fusion"),
    Document("bm25", "BM25 ranks documents by term frequency and inverse document frequency.",
             title="BM25", metadata={"kind": "lexical"}),
    Document("hnsw", "HNSW searches dense vectors approximately.", title="HNSW",
             metadata={"kind": "dense"}),
]


def write_pipeline(folder: Path, options: str) -> Path:
    """A retrieval-only pipeline file whose component ``search`` uses bm25."""
    path = folder / "search.toml"
    path.write_text(
        '[pipeline]\nname = "lexical"\nstages = ["retrieve"]\n\n'
        '[stage.retrieve]\nk = 2\n\n'
        f'[components.search]\nuse = "bm25"\n{options}\n', encoding="utf-8")
    return path


@pytest.mark.anyio
async def test_pipeline_file_indexes_and_retrieves(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """A TOML pipeline with ``[components.search] use = "bm25"`` indexes, retrieves with
    filters, and a new pipeline on the same path finds the documents again."""
    index_dir = tmp_path / "index"
    file = write_pipeline(tmp_path, f'path = "{index_dir.as_posix()}"\ntitle_boost = 0.5')
    with register_plugin(aieng_bm25, "bm25") as info:
        assert info.status == "loaded", info.error
        assert info.components == ("bm25",)
        async with aieng_kernel.load_pipeline(file) as pipeline:
            assert await pipeline.index(DOCS) == 3
            result = await pipeline.run("How does term frequency rank documents?")
            assert result.status == "ok"
            assert [h.document.id for h in result.retrieved][:1] == ["bm25"]
            gathered = await pipeline.dispatcher.gather(
                "aieng_retrieve", {"query": Query("documents vectors",
                                                  filters={"kind": "dense"}), "k": 2},
                stage="retrieve")
            assert [[h.document.id for h in hits] for hits, _ in gathered] == [["hnsw"]]
        assert (index_dir / "meta.json").exists()
        async with aieng_kernel.load_pipeline(file) as again:
            result = await again.run("reciprocal rank fusion")
            assert [h.document for h in result.retrieved][:1] == [DOCS[0]]
            assert all(h.source == "bm25" for h in result.retrieved)


@pytest.mark.anyio
async def test_composes_with_another_retriever(aieng_kernel: Kernel, tmp_path: Path) -> None:
    """Composed with the built-in ``memory`` retriever, bm25's run is fused (RRF) with it:
    a hybrid of two lexical retrievers returns each document once."""
    from aieng_core.builtins import MemoryOptions, MemoryRetriever

    pipeline = aieng_kernel.compose(
        {"bm25": BM25Retriever(BM25Options(path=str(tmp_path / "i"))),
         "memory": MemoryRetriever(MemoryOptions())},
        stages=["retrieve"], stage={"retrieve": {"k": 3}})
    await pipeline.index(DOCS)
    result = await pipeline.run("approximate dense vectors, fusion")
    assert set(result.runs) == {"bm25", "memory"}
    assert [h.document.id for h in result.runs["bm25"]] == ["hnsw", "rrf"]
    assert [h.document.id for h in result.retrieved] == ["hnsw", "rrf"]
    assert all(h.source == "rrf" for h in result.retrieved)
    await pipeline.aclose()


@pytest.mark.anyio
async def test_run_passes_query_filters(aieng_kernel: Kernel, tmp_path: Path) -> None:
    """Running a pipeline on a Query with filters filters bm25's hits."""
    pipeline = aieng_kernel.compose({"bm25": BM25Retriever(BM25Options(path=str(tmp_path)))},
                                    stages=["retrieve"])
    await pipeline.index(DOCS)
    result = await pipeline.run(Query("documents vectors", filters={"kind": "dense"}))
    assert [h.document.id for h in result.retrieved] == ["hnsw"]
    await pipeline.aclose()


@pytest.mark.anyio
async def test_config_errors_name_the_key(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """A missing path, an unknown key (k1: tantivy fixes it) and a bad value fail to load,
    naming the component's key."""
    with register_plugin(aieng_bm25, "bm25"):
        with pytest.raises(ConfigError, match=r"components\.search.*path"):
            aieng_kernel.load_pipeline(write_pipeline(tmp_path, ""))
        with pytest.raises(ConfigError, match=r"components\.search\.k1.*title_boost"):
            aieng_kernel.load_pipeline(write_pipeline(tmp_path, 'path = "x"\nk1 = 1.5'))
        with pytest.raises(ConfigError, match=r"components\.search"):
            aieng_kernel.load_pipeline(write_pipeline(tmp_path, 'path = "x"\ntitle_boost = -1'))


@pytest.mark.anyio
async def test_bad_folder_fails_the_opening(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """A path that is a file fails when the pipeline opens, with the reason."""
    (tmp_path / "taken").write_text("not an index")
    file = write_pipeline(tmp_path, f'path = "{(tmp_path / "taken").as_posix()}"')
    with register_plugin(aieng_bm25, "bm25"):
        pipeline = aieng_kernel.load_pipeline(file)
        with pytest.raises(Exception, match="is a file"):
            await pipeline.open()


@pytest.mark.anyio
async def test_pipeline_file_with_the_impacts_scorer(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """``scorer = "impacts"`` in a pipeline file: the pipeline opens (building the impacts
    of an existing folder), indexes, retrieves, deletes; a bad scorer fails to load."""
    index_dir = tmp_path / "index"
    file = write_pipeline(tmp_path, f'path = "{index_dir.as_posix()}"\nscorer = "impacts"')
    with register_plugin(aieng_bm25, "bm25"):
        async with aieng_kernel.load_pipeline(file) as pipeline:
            assert await pipeline.index(DOCS) == 3
            result = await pipeline.run("How does term frequency rank documents?")
            assert [h.document.id for h in result.retrieved][:1] == ["bm25"]
        async with aieng_kernel.load_pipeline(file) as again:  # reopened from the folder
            result = await again.run("dense vectors")
            assert [h.document.id for h in result.retrieved] == ["hnsw"]
            assert await again.delete(["hnsw"]) == 1
            assert not (await again.run("dense vectors")).retrieved
        bad = write_pipeline(tmp_path, f'path = "{index_dir.as_posix()}"\nscorer = "fast"')
        with pytest.raises(ConfigError, match="scorer"):
            async with aieng_kernel.load_pipeline(bad):
                pass
