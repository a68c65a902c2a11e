"""Role ``cache``: answer repeated requests without a model call."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Completion, Request

__all__ = ["aieng_cache_lookup", "aieng_cache_store"]


@role_spec(CallMode.FIRST, role="cache")
def aieng_cache_lookup(request: Request) -> Completion | None:
    """Look a request up.

    :called: by the ``cache_lookup`` stage, after input guards; a hit skips every stage up to
        ``guard_output`` and the ``cache_store`` stage.
    :mode: first: caches are asked in order (put the fastest first with ``tryfirst``).
    :none: a miss.
    :async: may be ``async def``; disk and network caches must not block the loop.
    :param request: the request after input guards.
    :returns: the cached completion, with ``cached=True``.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.GATHER, role="cache")
def aieng_cache_store(request: Request, completion: Completion) -> None:
    """Store a completion for a request.

    :called: by the ``cache_store`` stage after output guards allowed the completion.
    :mode: gather: every cache stores concurrently.
    :none: the only return value; the result is ignored.
    :async: may be ``async def``.
    :param request: the request as looked up.
    :param completion: the completion to store.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """
