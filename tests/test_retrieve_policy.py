"""Searches under ``on_error = "fallback"``: a retriever that fails gives way to the others,
and a search that every retriever failed is an error, not an answer from no context."""

from __future__ import annotations

import pytest
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Document, Hit, Query

from aieng_core import HookError, Kernel
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio


class Down:
    """A retriever double whose server is down."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        raise ConnectionError("connection refused")


class Up:
    """A retriever double that finds one passage."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return [Hit(Document(id="d1", text="Paris is the capital of France."), score=1.0)]


class Expands:
    """A query expander double: one more query."""

    @hookimpl
    def aieng_query_expand(self, query: Query) -> list[Query]:
        return [Query(text=f"{query.text} again")]


@pytest.mark.parametrize("retrievers", [1, 2])
async def test_every_retriever_failed_is_an_error(aieng_kernel: Kernel,
                                                  retrievers: int) -> None:
    """The run raises the failure (naming hook and component); the model is never asked
    to answer from no context."""
    llm = ScriptedBackend()
    components: dict[str, object] = {f"down{n}": Down() for n in range(retrievers)}
    pipeline = aieng_kernel.compose({**components, "llm": llm}, on_error="fallback")
    with pytest.raises(HookError, match="connection refused") as caught:
        await pipeline.run("What is the capital of France?")
    assert caught.value.hook == "aieng_retrieve" and caught.value.plugin.startswith("down")
    assert llm.requests == []


async def test_one_retriever_that_answered_is_enough(aieng_kernel: Kernel) -> None:
    """Fallback keeps the working retriever's hits, with the expansions searched too."""
    pipeline = aieng_kernel.compose({"down": Down(), "up": Up(), "more": Expands(),
                                     "llm": ScriptedBackend()}, on_error="fallback")
    result = await pipeline.run("What is the capital of France?")
    assert result.status == "ok" and [h.document.id for h in result.hits] == ["d1"]


class Opens:
    """Keeps the pipeline context it is opened with, as the ``search`` tool does."""

    context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.context = context


async def test_the_search_tool_fails_the_same_way(aieng_kernel: Kernel) -> None:
    """``PipelineContext.retrieve`` (the agents' ``search`` tool): every retriever failed
    raises, one working retriever answers."""
    for retrievers, expected in (({"down": Down()}, None), ({"down": Down(), "up": Up()},
                                                           ["d1"])):
        opens = Opens()
        pipeline = aieng_kernel.compose({**retrievers, "opens": opens,
                                         "llm": ScriptedBackend()}, on_error="fallback")
        await pipeline.open()
        assert opens.context is not None
        if expected is None:
            with pytest.raises(HookError, match="connection refused"):
                await opens.context.retrieve("capital of France", k=3)
        else:
            hits = await opens.context.retrieve("capital of France", k=3)
            assert [h.document.id for h in hits] == expected
