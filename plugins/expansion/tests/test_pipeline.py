"""The expanders in pipelines: the retrieve stage searches with every expansion and fuses,
generating through the pipeline's backend."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import aieng_expansion
import pytest
from aieng_expansion import HyDEExpander, MultiQueryExpander, MultiQueryOptions
from aieng_hookspecs.types import Document, ModelCall

from aieng_core import ConfigError, Kernel
from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.registry import PluginInfo
from aieng_core.testing import EventCapture, ScriptedBackend

pytestmark = pytest.mark.anyio

Register = Callable[..., AbstractContextManager[PluginInfo]]

CORPUS = [
    Document("noodles", "Boil the noodles in salted water until they are soft."),
    Document("paris", "Paris is the capital city of France, on the river Seine."),
    Document("bread", "Bake bread from flour, water, salt and yeast in a hot oven."),
]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_multi_query_finds_what_the_query_words_miss(
    aieng_kernel: Kernel, captured_events: EventCapture
) -> None:
    """A query sharing no word with the corpus retrieves nothing by itself; its rewrites
    do, every run is kept (``docs@i``) and fused, and the rewrite request is a
    ``backend.call`` made for the expander."""
    backend = ScriptedBackend(["boil noodles\nnoodles salted water"])
    pipeline = aieng_kernel.compose(
        {"docs": MemoryRetriever(MemoryOptions()),
         "rewrite": MultiQueryExpander(MultiQueryOptions(n=2)), "llm": backend},
        stages=["retrieve"], stage={"retrieve": {"k": 2}})
    await pipeline.index(CORPUS)
    result = await pipeline.run("how long to cook spaghetti")
    assert [q.text for q in result.expansions] == ["boil noodles", "noodles salted water"]
    assert set(result.runs) == {"docs", "docs@1", "docs@2"}
    assert result.runs["docs"] == ()
    assert result.retrieved[0].document.id == "noodles"
    calls = [e for e in captured_events.of(ModelCall)
             if e.parameters.get("caller") == "rewrite"]
    assert [e.component for e in calls] == ["llm"]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_hyde_retrieves_with_the_hypothetical_passage(aieng_kernel: Kernel) -> None:
    """HyDE's passage is searched like a query; the user's query still ranks its own run."""
    backend = ScriptedBackend(["Spaghetti are noodles: boil them in salted water."])
    pipeline = aieng_kernel.compose(
        {"docs": MemoryRetriever(MemoryOptions()), "hyde": HyDEExpander(), "llm": backend},
        stages=["retrieve"])
    await pipeline.index(CORPUS)
    result = await pipeline.run("cook spaghetti")
    assert len(result.expansions) == 1 and result.expansions[0].text.startswith("Spaghetti")
    assert result.retrieved[0].document.id == "noodles"


async def test_a_failing_expander_is_skipped_under_fallback(aieng_kernel: Kernel) -> None:
    """With ``on_error = "fallback"`` on the retrieve stage, a backend that fails leaves
    the run with the user's query alone."""
    backend = ScriptedBackend(fail_with=ConnectionError("backend down"))
    pipeline = aieng_kernel.compose(
        {"docs": MemoryRetriever(MemoryOptions()), "rewrite": MultiQueryExpander(),
         "llm": backend},
        stages=["retrieve"], stage={"retrieve": {"on_error": "fallback"}})
    await pipeline.index(CORPUS)
    result = await pipeline.run("paris capital")
    assert result.expansions == ()
    assert result.retrieved[0].document.id == "paris"


async def test_a_failing_expander_skips_the_whole_stage_under_skip(
    aieng_kernel: Kernel
) -> None:
    """``on_error = "skip"`` skips the retrieve stage, as the README warns: nothing is
    retrieved, not even for the user's query."""
    backend = ScriptedBackend(fail_with=ConnectionError("backend down"))
    pipeline = aieng_kernel.compose(
        {"docs": MemoryRetriever(MemoryOptions()), "rewrite": MultiQueryExpander(),
         "llm": backend},
        stages=["retrieve"], stage={"retrieve": {"on_error": "skip"}})
    await pipeline.index(CORPUS)
    result = await pipeline.run("paris capital")
    assert result.retrieved == () and result.expansions == ()


@pytest.mark.parametrize(("component", "key"), [
    ({"use": "multi-query", "n": 0}, "n must be from 1 to 10"),
    ({"use": "multi-query", "rewrites": 3}, "rewrites"),
    ({"use": "hyde", "temperature": "hot"}, "temperature"),
])
async def test_registered_by_name_with_checked_options(
    aieng_kernel: Kernel, register_plugin: Register, component: dict[str, Any], key: str
) -> None:
    """Both expanders are offered by name; bad options fail the load naming the table."""
    with register_plugin(aieng_expansion, "expansion") as info:
        assert info.status == "loaded", info.error
        assert {"multi-query", "hyde"} <= set(info.components)
        good = {"pipeline": {"name": "x", "stages": ["retrieve"]},
                "components": {"docs": {"use": "memory"}, "expand": {"use": "hyde"}}}
        aieng_kernel.pipeline(good)
        bad = {**good, "components": {"docs": {"use": "memory"}, "expand": component}}
        with pytest.raises(ConfigError, match=r"components\.expand") as caught:
            aieng_kernel.pipeline(bad)
    assert key in str(caught.value)
