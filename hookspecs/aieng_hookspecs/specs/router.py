"""Role ``router``: choose the backend for a request."""

from __future__ import annotations

from collections.abc import Sequence

from .._markers import CallMode, role_spec
from ..types import Request, Route

__all__ = ["aieng_route"]


@role_spec(CallMode.FIRST, role="router")
def aieng_route(request: Request, candidates: Sequence[str]) -> Route | None:
    """Choose which backend answers a request.

    :called: by the ``route`` stage, before retrieval and generation.
    :mode: first: the first router to choose decides.
    :none: "no opinion": the next router is asked; with no route, backends are tried in
        pluggy's order.
    :async: may be ``async def``.
    :param request: the request.
    :param candidates: the names of the pipeline's backend components.
    :returns: a route whose ``target`` and ``fallbacks`` are among ``candidates``.

    .. versionadded:: 0.1.0
    """
