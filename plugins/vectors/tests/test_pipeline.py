"""``vectors`` in pipelines built by name: options, registration, hybrid retrieval with RRF."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import aieng_vectors
import pytest
from aieng_hookspecs.types import Document

from aieng_core import ConfigError, Kernel, reciprocal_rank_fusion
from aieng_core.registry import PluginInfo

Register = Callable[..., AbstractContextManager[PluginInfo]]

CORPUS = [
    Document("rrf", "Reciprocal rank fusion merges the ranked lists of several retrievers."),
    Document("bm25", "BM25 ranks documents by term frequency and inverse document frequency."),
    Document("hnsw", "HNSW builds a layered proximity graph for nearest neighbour search."),
    Document("dense", "Dense retrieval embeds queries and documents as vectors and ranks "
             "them by cosine similarity."),
    Document("chunk", "Chunking cuts long documents into passages before indexing."),
    Document("cache", "A semantic cache answers repeated questions from stored completions."),
]


def hybrid(tmp_path: Path, **dense: Any) -> dict[str, Any]:
    return {
        "pipeline": {"name": "hybrid", "stages": ["retrieve"]},
        "stage": {"retrieve": {"k": 4}},
        "components": {
            "lexical": {"use": "memory"},
            "dense": {"use": "vectors", "path": str(tmp_path / "vectors"), **dense},
            "embedder": {"use": "hash-embed"},
        },
    }


@pytest.mark.anyio
async def test_hybrid_memory_and_vectors_fused_by_rrf(
    aieng_kernel: Kernel, register_plugin: Register, hash_embed_plugin: Any, tmp_path: Path
) -> None:
    """A pipeline of the built-in ``memory`` retriever and ``vectors`` (embedding through
    the pipeline's embedder) indexes one corpus into both and fuses their runs with the
    kernel's reciprocal rank fusion."""
    with register_plugin(aieng_vectors, "vectors") as info, \
            register_plugin(hash_embed_plugin, "hash-embed"):
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline(hybrid(tmp_path))
    async with pipeline:
        assert await pipeline.index(CORPUS) == len(CORPUS)
        result = await pipeline.run("ranked lists of retrievers and reciprocal fusion")
    assert result.status == "ok"
    assert set(result.runs) == {"lexical", "dense"}
    assert all(hit.source == "memory" for hit in result.runs["lexical"])
    assert all(hit.source == "vectors" for hit in result.runs["dense"])
    expected = reciprocal_rank_fusion([result.runs["lexical"], result.runs["dense"]])[:4]
    assert list(result.retrieved) == expected
    assert result.retrieved[0].document.id == "rrf"
    assert all(hit.source == "rrf" for hit in result.retrieved)


@pytest.mark.anyio
async def test_options_are_checked_by_name(
    aieng_kernel: Kernel, register_plugin: Register, hash_embed_plugin: Any, tmp_path: Path
) -> None:
    """A misspelled or mistyped option fails the load, naming the key and the choices."""
    with register_plugin(aieng_vectors, "vectors"), \
            register_plugin(hash_embed_plugin, "hash-embed"):
        with pytest.raises(ConfigError, match="exact_belw.*valid choices: batch_size"):
            aieng_kernel.pipeline(hybrid(tmp_path, exact_belw=10))
        with pytest.raises(ConfigError, match="components.dense"):
            aieng_kernel.pipeline(hybrid(tmp_path, batch_size="8"))
        with pytest.raises(ConfigError, match="exact_below must be at least 0"):
            aieng_kernel.pipeline(hybrid(tmp_path, exact_below=-1))


def test_entry_point_names_the_plugin_module() -> None:
    """The installed distribution declares ``vectors = "aieng_vectors"`` in group aieng."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("aieng-vectors")
    except PackageNotFoundError:
        pytest.skip("aieng-vectors is not installed")
    points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "aieng"}
    assert points == {"vectors": "aieng_vectors"}


def test_imports_alone_without_numpy_or_usearch() -> None:
    """The plugin module imports with warnings as errors, and without numpy or usearch:
    they load when a component is built."""
    import subprocess
    import sys

    code = ("import sys, aieng_vectors; "
            "assert not {'numpy', 'usearch'} & set(sys.modules), 'heavy import at load'")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, env=_env())


def _env() -> dict[str, str]:
    """The environment with this plugin's folder first on the path, installed or not."""
    import os
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}
