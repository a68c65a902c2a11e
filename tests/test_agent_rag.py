"""Agentic RAG: the ``search`` tool (aieng-agents) searches the pipeline's own indexes
through ``PipelineContext.retrieve`` — a real tantivy index on disk here — when the model
asks, instead of a ``retrieve`` stage before every model call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aieng_agents import SearchOptions, SearchTool
from aieng_agents._search import render_hits
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query, Request, ToolCall, Usage

from aieng_core import Kernel
from aieng_core.agent import Agent
from aieng_core.testing import ScriptedBackend, kernel_with

pytestmark = pytest.mark.anyio

DOCS = [Document("plugins", "A plugin registers components through aieng_register_"
                            "components and is found by its entry point.", title="Plugins"),
        Document("events", "The event bus delivers events to each subscriber in order; a "
                           "slow subscriber drops events, counted.", title="Events"),
        Document("cache", "The exact cache keys on the request's messages and sampling.",
                 title="Caching")]


def researcher(request: Request) -> Any:
    """Searches once for 'entry point plugin', then answers quoting the first passage."""
    results = [m.content for m in request.messages if m.role == "tool"]
    if results:
        return f"From the docs: {results[-1].splitlines()[0]}"
    return [ToolCall(id="s1", name="search", arguments={"query": "entry point plugin"})]


def _kernel(model: ScriptedBackend) -> Kernel:
    return kernel_with({"researcher": lambda: model}, plugins="builtin,bm25,agents")


async def test_the_agent_searches_a_real_index_when_it_decides_to(tmp_path: Path) -> None:
    """stages = ["generate"]: no retrieval before the model call; the model calls search,
    which runs the bm25 index on disk; the passages come back numbered with their ids."""
    path = tmp_path / "agent-rag.toml"
    path.write_text(f'''[pipeline]
name = "agent-rag"
stages = ["generate"]

[components.lexical]
use = "bm25"
path = "{(tmp_path / 'bm25').as_posix()}"

[components.search]
use = "search"
k = 2

[components.llm]
use = "researcher"
''', encoding="utf-8")
    model = ScriptedBackend(researcher, usage=Usage(1, 1))
    async with _kernel(model) as kernel:
        pipeline = kernel.load_pipeline(path)
        assert await pipeline.index(DOCS) == 3
        result = await Agent(pipeline).run("How is a plugin found?")
    assert result.answered
    assert result.answer == "From the docs: [1] Plugins (id: plugins)"
    [observation] = result.steps[0].results
    assert not observation.is_error and observation.content.count("(id: ") <= 2
    assert [m.role for m in model.requests[0].messages] == ["user"]  # nothing retrieved


class Fixed:
    """A retriever double answering the same hits whatever the query."""

    def __init__(self, *ids: str) -> None:
        self.ids = ids

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return [Hit(Document(i, f"text of {i}"), score=1.0 / n, rank=n, source="fixed")
                for n, i in enumerate(self.ids[:k], 1)]


class Reverse:
    """A reranker double reversing the hits."""

    @hookimpl
    def aieng_rerank(self, query: Query, hits: list[Hit], k: int) -> list[Hit]:
        return list(reversed(hits))[:k]


async def test_retrieve_fuses_the_runs_and_reranks() -> None:
    """Two retrievers' runs are fused (reciprocal rank fusion without a fuser), the
    rerankers run, and k holds; a k below 1 is refused."""
    tool = SearchTool(SearchOptions(k=2))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"a": Fixed("x", "y", "z"), "b": Fixed("y", "w"),
                                   "rerank": Reverse(), "search": tool}, name="r")
        await pipeline.open()
        context = tool._context
        assert context is not None
        hits = await context.retrieve("anything", 3)
        assert [h.document.id for h in hits] == ["w", "x", "y"]  # RRF: y, x, w (z 4th); reversed
        with pytest.raises(ValueError, match="k must be"):
            await context.retrieve("anything", 0)


async def test_search_errors_are_results_the_model_reads() -> None:
    """A blank query and a search that finds nothing are error results, not exceptions."""
    tool = SearchTool()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"none": Fixed(), "search": tool}, name="e")
        await pipeline.open()
        blank = await tool.aieng_call_tool(ToolCall(id="1", name="search",
                                                    arguments={"query": "  "}))
        empty = await tool.aieng_call_tool(ToolCall(id="2", name="search",
                                                    arguments={"query": "x"}))
        other = await tool.aieng_call_tool(ToolCall(id="3", name="calculate"))
    assert blank is not None and blank.is_error and "non-empty" in blank.content
    assert empty is not None and empty.is_error and "no passages" in empty.content
    assert other is None


def test_passages_are_numbered_cut_and_on_one_line() -> None:
    """Each passage: its number, title and id, then its text on one line, cut."""
    hit = Hit(Document("d1", "word " * 100 + "\nend", title="A\ntitle"), score=1.0)
    text = render_hits([hit, Hit(Document("d2", "short"), score=0.5)], 40)
    first, body, _, second, short = text.split("\n")
    assert first == "[1] A title (id: d1)" and len(body) == 40 and body.endswith("…")
    assert (second, short) == ("[2] (id: d2)", "short")


@pytest.mark.parametrize("options", [{"k": 0}, {"name": "has space"},
                                     {"passage_chars": 10}])
def test_options_are_checked(options: dict[str, Any]) -> None:
    """Bad options are refused when the component is configured."""
    with pytest.raises(ValueError):
        SearchOptions(**options)
