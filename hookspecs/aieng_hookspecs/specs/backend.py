"""Role ``backend``: text generation, streaming and embeddings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from .._markers import CallMode, role_spec
from ..types import Completion, Delta, Request

__all__ = ["aieng_embed", "aieng_generate", "aieng_stream"]


@role_spec(CallMode.FIRST, role="backend")
def aieng_generate(request: Request) -> Completion | None:
    """Generate one completion for a request.

    :called: by the ``generate`` stage, once per run, after the context stage rendered the
        request; with a route, on the routed backend first.
    :mode: first: impls are awaited in pluggy's order until one returns a completion.
    :none: "not mine" (an unknown ``request.model``): the next backend is asked; when every
        backend returns ``None`` the stage fails.
    :async: may be ``async def``; a plain function runs on the loop unless marked
        ``@blocking``, so inference must be async or ``@blocking``.
    :param request: the rendered messages and sampling parameters.
    :returns: the completion, with usage counts.
    :raises ValueError: the request asks what this backend cannot do (a
        ``response_schema`` outside what it enforces, a bad regex): the caller's error,
        raised before any token is generated (the gateway answers 422).

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.FIRST, role="backend")
def aieng_stream(request: Request) -> AsyncIterator[Delta] | None:
    """Stream one completion as deltas.

    :called: by the ``generate`` stage when the run streams (``Pipeline.stream``,
        ``aieng generate``, SSE in the gateway).
    :mode: first: the first impl returning an async iterator owns the stream.
    :none: "not mine": the next backend is asked; when none streams, the kernel falls back
        to ``aieng_generate`` and yields its text as one delta.
    :async: an ``async def`` generator (preferred) or a function returning an async iterator.
    :param request: the rendered messages and sampling parameters.
    :returns: an async iterator of :class:`Delta`; the last delta carries ``finish_reason``
        (and ``tool_calls``, whole, when the completion calls tools); any delta may name the
        ``model`` (the last name wins), as ``aieng_generate``'s ``Completion.model``.
    :raises ValueError: as ``aieng_generate``: a request this backend cannot serve.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.FIRST, role="backend")
def aieng_embed(texts: Sequence[str], model: str | None) -> Sequence[Sequence[float]] | None:
    """Embed texts as vectors.

    :called: by components that need vectors (vector indexes, semantic caches, embedding
        rerankers), through the pipeline's embedding backend.
    :mode: first: the first impl returning vectors answers.
    :none: "not mine" (an unknown ``model``): the next backend is asked.
    :async: may be ``async def``; heavy work belongs in a thread or process pool.
    :param texts: the texts, in order; may be empty.
    :param model: the embedding model id, or ``None`` for the backend's default.
    :returns: one vector per text, in order, all of one dimension (a 2-D numpy array is fine).

    .. versionadded:: 0.1.0
    """
