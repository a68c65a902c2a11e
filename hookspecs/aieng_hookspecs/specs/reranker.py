"""Role ``reranker``: reorder (and cut) retrieved hits."""

from __future__ import annotations

from collections.abc import Sequence

from .._markers import CallMode, role_spec
from ..types import Hit, Query

__all__ = ["aieng_rerank"]


@role_spec(CallMode.CHAIN, role="reranker", chain_arg="hits")
def aieng_rerank(query: Query, hits: Sequence[Hit], k: int) -> list[Hit] | None:
    """Reorder hits for a query.

    :called: by the ``rerank`` stage, once per run, after retrieval.
    :mode: chain: rerankers run in pluggy's order, each receiving the previous one's hits.
    :none: "leave them as they are": the next reranker receives the same hits.
    :async: may be ``async def``; model scoring must not block the loop.
    :param query: the query.
    :param hits: the hits so far, best first.
    :param k: the most hits to keep.
    :returns: hits drawn from ``hits``, best first, ranks 1..n: ``min(k, len(hits))`` of
        them, or fewer (even none) for a reranker that filters by relevance (a threshold,
        a guard), which its documentation says.

    .. versionadded:: 0.1.0
    """
