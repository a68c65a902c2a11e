"""What registration hooks receive: narrow protocols, so plugins never import the kernel."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .types import Completion, Document, Event, Hit, Query, Request

__all__ = ["ComponentRegistry", "DocumentReader", "EventRegistry", "PipelineContext", "ReaderRegistry"]


class ComponentRegistry(Protocol):
    """Where a plugin declares the components it offers (``aieng_register_components``)."""

    def add(
        self,
        name: str,
        factory: Callable[..., object],
        *,
        options: type[Any] | None = None,
        description: str = "",
    ) -> None:
        """Offer a component under ``name``.

        :param name: the name pipeline files use (``use = "NAME"``); unique across plugins.
        :param factory: a class or callable building the component; it receives one
            argument, the options instance, when ``options`` is given, and none otherwise.
        :param options: an attrs class of the component's typed options (unknown keys in a
            pipeline file are an error).
        :param description: one line for ``aieng plugins``.
        """


class EventRegistry(Protocol):
    """Where a plugin declares its own event types (``aieng_register_events``)."""

    def add(self, event_type: type[Event]) -> None:
        """Declare an event type; its ``name`` must be unique and dotted (``"drift.detected"``)."""


#: Reads one file into documents (``aieng index``); raises ``ValueError`` for bad content.
DocumentReader = Callable[[Path], Iterable[Document]]


class ReaderRegistry(Protocol):
    """Where a plugin declares the file formats it reads (``aieng_register_readers``)."""

    def add(self, suffix: str, reader: DocumentReader, *, description: str = "") -> None:
        """Read files ending in ``suffix`` (``".csv"``, lower case, with the dot) with
        ``reader``; a suffix belongs to one plugin."""


class PipelineContext(Protocol):
    """A component's handle on its pipeline, given to ``aieng_pipeline_open``.

    Through it a component uses the pipeline's other roles by hook — a vector index asks
    for embeddings, a query expander for a completion — and publishes its own events,
    without importing the kernel or another plugin.
    """

    @property
    def pipeline(self) -> str:
        """The pipeline's name."""

    @property
    def component(self) -> str:
        """This component's name in the pipeline."""

    @property
    def backends(self) -> Sequence[str]:
        """The names of the pipeline's backend components (those implementing
        ``aieng_generate`` or ``aieng_stream``), in the order the ``route`` stage passes
        them to ``aieng_route`` as ``candidates``. A router checks the backends its options
        name against them when it opens, so that a misspelt name fails the opening instead
        of never being routed to.

        .. versionadded:: 0.1.0
        """

    async def embed(
        self, texts: Sequence[str], model: str | None = None
    ) -> Sequence[Sequence[float]]:
        """Embed texts with the pipeline's embedding backend (``aieng_embed``), or the
        kernel's default embedder when no component of the pipeline embeds.

        :raises LookupError: when there is neither, saying what to install.
        """

    async def generate(self, request: Request) -> Completion:
        """Generate with the pipeline's backends (``aieng_generate``); the call is
        published as a ``backend.call`` event like the generate stage's."""

    async def retrieve(self, query: str | Query, k: int = 10) -> Sequence[Hit]:
        """Search the pipeline's retrievers as its ``retrieve`` and ``rerank`` stages do:
        every retriever (``aieng_retrieve``), their runs fused (``aieng_fuse``, else
        reciprocal rank fusion), then the rerankers (``aieng_rerank``); the best ``k``,
        best first. A tool component uses it to search the pipeline's indexes (an agent's
        ``search``); a retriever calling it would search itself.

        .. versionadded:: 0.1.0
        """

    def emit(self, event: Event) -> None:
        """Publish an event on the bus (and into the current run's trace, during a run);
        empty ``run_id`` / ``pipeline`` fields are filled in."""
