"""Role ``context``: build the model request from the query and the retrieved hits."""

from __future__ import annotations

from collections.abc import Sequence

from .._markers import CallMode, role_spec
from ..types import Hit, Query, Request

__all__ = ["aieng_context_build"]


@role_spec(CallMode.FIRST, role="context")
def aieng_context_build(query: Query, hits: Sequence[Hit], request: Request) -> Request | None:
    """Render the request the model will see.

    :called: by the ``context`` stage, after retrieval and reranking.
    :mode: first: the first context builder answering renders the prompt.
    :none: "not mine": the next is asked; with none, the request goes to the model unchanged.
    :async: may be ``async def``; token counting must not block the loop.
    :param query: the query.
    :param hits: the hits to ground the answer in, best first.
    :param request: the request so far (the user's messages and sampling parameters).
    :returns: the request with the rendered messages.

    .. versionadded:: 0.1.0
    """
