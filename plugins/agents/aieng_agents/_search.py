"""``search``: a tool that searches the pipeline's own indexes (agentic RAG).

The agent decides when to search and what for; the tool runs the pipeline's retrievers,
fusion and rerankers through its :class:`~aieng_hookspecs.PipelineContext` (``retrieve``)
and gives the passages back numbered, with their ids, so the answer can cite them.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Hit, ToolCall, ToolResult, ToolSpec

__all__ = ["SearchOptions", "SearchTool", "render_hits"]

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")


def _tool_name(instance: Any, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"name must be a tool name (letters, digits, _ . -; at most 64 "
                         f"characters), got {value!r}")


def _at_least(low: int) -> Any:
    def check(instance: Any, attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{attribute.name} must be an integer >= {low}, got {value!r}")
    return check


@attrs.frozen
class SearchOptions:
    """Options of the ``search`` tool.

    :param name: the tool's name, as the model calls it.
    :param description: what the model is told the tool does (say what the documents are).
    :param k: the most passages one call gives back.
    :param passage_chars: the most characters of each passage's text (cut with ``…``).
    """

    name: str = attrs.field(default="search", validator=_tool_name)
    description: str = attrs.field(
        default="Search the documents for passages about a query. Returns numbered "
                "passages with their ids.",
        validator=attrs.validators.instance_of(str))
    k: int = attrs.field(default=5, validator=_at_least(1))
    passage_chars: int = attrs.field(default=600, validator=_at_least(40))


def render_hits(hits: list[Hit], passage_chars: int) -> str:
    """Passages as the model reads them: ``[1] title (id: doc-7)`` then the text, one
    blank line between passages; each text on one line, cut at ``passage_chars``."""
    blocks = []
    for number, hit in enumerate(hits, 1):
        document = hit.document
        text = " ".join(document.text.split())
        if len(text) > passage_chars:
            text = text[: passage_chars - 1] + "…"
        head = f"[{number}] {' '.join(document.title.split())} (id: {document.id})" \
            if document.title else f"[{number}] (id: {document.id})"
        blocks.append(f"{head}\n{text}")
    return "\n\n".join(blocks)


class SearchTool:
    """Offers one tool (``search`` by default) searching the pipeline's indexes.

    :param options: the typed options (defaults when omitted).
    """

    def __init__(self, options: SearchOptions | None = None) -> None:
        self.options = options if options is not None else SearchOptions()
        self._context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context: the searches go through it."""
        self._context = context

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        """The tool and the JSON schema of its argument, ``query``."""
        return [ToolSpec(name=self.options.name, description=self.options.description,
                         parameters={"type": "object",
                                     "properties": {"query": {
                                         "type": "string", "minLength": 1,
                                         "description": "what to search for, in words"}},
                                     "required": ["query"]})]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        """Search; ``None`` for another tool's call. Nothing found, a blank query or an
        unopened tool are error results; a failing search raises (the runner makes it an
        error result the model sees)."""
        if call.name != self.options.name:
            return None
        query = call.arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolResult(call.id, "error: give a non-empty 'query' to search for",
                              is_error=True)
        if self._context is None:
            return ToolResult(call.id, "error: the search tool's pipeline is not open",
                              is_error=True)
        hits = list(await self._context.retrieve(query.strip(), self.options.k))
        if not hits:
            return ToolResult(call.id, f"no passages found for {query.strip()!r}; try other "
                                       "words", is_error=True)
        return ToolResult(call.id, render_hits(hits, self.options.passage_chars))
