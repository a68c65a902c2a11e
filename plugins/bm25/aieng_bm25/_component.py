"""``bm25``: the retriever component, hook impls over a :class:`BM25Index`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Document, Hit, Query

from ._index import BM25Index
from ._options import BM25Options

__all__ = ["BM25Retriever"]


class BM25Retriever:
    """BM25 search over a tantivy index on disk: index, upsert and delete by id, search.

    Every hook impl is ``@blocking``: the kernel runs it in a worker thread, so disk and
    index work never holds the event loop, and searches run in parallel. Building the
    component touches nothing; the index opens when the pipeline opens (or on first use).

    :param options: the typed options; ``path`` is required.
    """

    def __init__(self, options: BM25Options) -> None:
        self.options = options
        #: The index itself, for work outside a pipeline (all its methods block).
        self.index = BM25Index(options)

    @hookimpl
    @blocking
    def aieng_pipeline_open(self) -> None:
        """Open (or create) the index, so a bad path fails the pipeline's opening."""
        self.index.open()

    @hookimpl
    @blocking
    def aieng_pipeline_close(self) -> None:
        """Release the index's files."""
        self.index.close()

    @hookimpl
    @blocking
    def aieng_index(self, documents: Sequence[Document]) -> int:
        """Add or replace (by id) the documents, commit, and make them searchable."""
        return self.index.add(documents)

    @hookimpl
    @blocking
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        """The best ``k`` documents by BM25; ``query.filters`` must equal their metadata."""
        return self.index.search(query.text, k, query.filters)

    @hookimpl
    @blocking
    def aieng_delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id, commit, and make the deletion visible."""
        return self.index.delete(ids)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (blocking: in async code, run it in a worker thread).

        :returns: how many of the ids were indexed, and are now deleted.
        """
        return self.index.delete(ids)

    def close(self) -> None:
        """Release the index's files (what closing the pipeline does)."""
        self.index.close()
