"""aieng-agents: the building blocks of an agent, as components.

- ``calculator``: the tool ``calculate``, exact and bounded arithmetic (no ``eval``);
- ``clock``: the tool ``now``, the current time in an IANA time zone;
- ``long-memory``: long-term memory in SQLite, recalled by embedding or word overlap;
- ``search``: the tool ``search``, the pipeline's own retrievers as a tool (agentic RAG);
- ``react``: an agent policy that ReAct-prompts models without native tool calling.

The kernel loads this module through the entry point ``agents`` of the group ``aieng``.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._calculator import CalculationError, CalculatorOptions, CalculatorTool, calculate
from ._clock import ClockOptions, ClockTool
from ._memory import MemoryOptions, SQLiteMemory
from ._react import ReActFormatError, ReActOptions, ReActPolicy, parse_react
from ._search import SearchOptions, SearchTool

__all__ = [
    "CalculationError",
    "CalculatorOptions",
    "CalculatorTool",
    "ClockOptions",
    "ClockTool",
    "MemoryOptions",
    "ReActFormatError",
    "ReActOptions",
    "ReActPolicy",
    "SQLiteMemory",
    "SearchOptions",
    "SearchTool",
    "aieng_register_components",
    "calculate",
    "parse_react",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``calculator``, ``clock``, ``long-memory``, ``react`` and ``search``
    components."""
    registry.add("calculator", CalculatorTool, options=CalculatorOptions)
    registry.add("clock", ClockTool, options=ClockOptions)
    registry.add("long-memory", SQLiteMemory, options=MemoryOptions)
    registry.add("react", ReActPolicy, options=ReActOptions)
    registry.add("search", SearchTool, options=SearchOptions)
