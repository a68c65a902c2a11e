"""Role ``chunker``: cut documents into chunks before indexing."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Chunk, Document

__all__ = ["aieng_chunk_document"]


@role_spec(CallMode.FIRST, role="chunker")
def aieng_chunk_document(document: Document) -> list[Chunk] | None:
    """Cut a document into chunks.

    :called: by ``Pipeline.index`` for each document before ``aieng_index``.
    :mode: first: the first chunker answering cuts the document.
    :none: "not mine" (a chunker for another content type): the next is asked; with no
        chunker the document is indexed whole.
    :async: may be ``async def``; a semantic chunker awaits embeddings.
    :param document: the document.
    :returns: the chunks in document order. The kernel indexes the i-th as
        ``<document id>#<i>`` (from 0), whatever its own id (kept in metadata as
        ``chunk_id`` when it differs), so that indexing the document again deletes the
        chunks it no longer has and ``Pipeline.delete([document id])`` deletes them all.

    .. versionadded:: 0.1.0
    """
