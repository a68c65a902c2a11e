"""Role ``expansion``: more queries to retrieve with (multi-query rewriting, HyDE)."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Query

__all__ = ["aieng_query_expand"]


@role_spec(CallMode.GATHER, role="expansion")
def aieng_query_expand(query: Query) -> list[Query] | None:
    """Expand a query into more queries to retrieve with.

    :called: by the ``retrieve`` stage, once per run, before retrieval, when a component of
        the pipeline implements it.
    :mode: gather: every expander runs concurrently; the original query and every expansion
        are each retrieved by every retriever, and all the runs are fused together.
    :none: "no expansion for this query".
    :async: may be ``async def``; expanders await the backend through their context
        (``context.generate``).
    :param query: the user's query (its filters apply to the expansions too).
    :returns: additional queries; the original is always kept, so do not repeat it.

    .. versionadded:: 0.1.0
    """
