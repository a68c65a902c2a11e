"""Role ``memory``: short- and long-term memory of agents and conversations."""

from __future__ import annotations

from collections.abc import Sequence

from .._markers import CallMode, role_spec
from ..types import MemoryItem, Query

__all__ = ["aieng_memory_recall", "aieng_memory_store"]


@role_spec(CallMode.GATHER, role="memory")
def aieng_memory_recall(query: Query, k: int) -> list[MemoryItem] | None:
    """Recall what is relevant to a query.

    :called: by the agent runner before each step.
    :mode: gather: every memory answers; results are merged by score.
    :none: "nothing kept".
    :async: may be ``async def``.
    :param query: what the agent is working on.
    :param k: the most items to return.
    :returns: at most ``k`` items, best first.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.GATHER, role="memory")
def aieng_memory_store(items: Sequence[MemoryItem]) -> None:
    """Remember items.

    :called: by the agent runner after each step.
    :mode: gather: every memory stores concurrently.
    :none: the only return value.
    :async: may be ``async def``.
    :param items: the items to remember.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """
