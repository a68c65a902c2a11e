"""Role ``retriever``: search, indexing and fusion of several result lists."""

from __future__ import annotations

from collections.abc import Sequence

from .._markers import CallMode, role_spec
from ..types import Document, Hit, Query

__all__ = ["aieng_delete", "aieng_fuse", "aieng_index", "aieng_retrieve"]


@role_spec(CallMode.GATHER, role="retriever")
def aieng_retrieve(query: Query, k: int) -> list[Hit] | None:
    """Return the best hits for a query.

    :called: by the ``retrieve`` stage, once per run, on every retriever concurrently.
    :mode: gather: every retriever runs; the lists that are not ``None`` become the runs
        that ``aieng_fuse`` merges.
    :none: "I take no part" (the retriever ignores this query): it adds no run.
    :async: may be ``async def``; disk or network search must not block the loop.
    :param query: the query; any text, empty included, must yield a list, never an error.
    :param k: the most hits to return, at least 1.
    :returns: at most ``k`` hits, best first, ranks 1..n, scores not increasing; equal
        scores in an order of their own (the bundled retrievers: document id), never in
        the order documents were indexed, the ``k``-th hit included.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.GATHER, role="retriever")
def aieng_index(documents: Sequence[Document]) -> int | None:
    """Add or replace documents in an index.

    :called: by ``Pipeline.index`` and ``aieng index``, on every indexing component
        concurrently, with batches of documents.
    :mode: gather: every index receives the same batch.
    :none: "I keep no index": nothing to report.
    :async: may be ``async def``; writes must not block the loop.
    :param documents: the batch; a document whose id exists replaces the old one.
    :returns: the number of documents now written from this batch.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.GATHER, role="retriever")
def aieng_delete(ids: Sequence[str]) -> int | None:
    """Remove documents from an index by id.

    :called: by ``Pipeline.delete``, and by ``Pipeline.index`` (and ``aieng index``) to
        delete the chunks or sections a document no longer has, on every indexing component
        concurrently.
    :mode: gather: every index deletes the same ids.
    :none: "I keep no index": nothing to report.
    :async: may be ``async def``; writes must not block the loop.
    :param ids: the document ids; unknown ids are ignored.
    :returns: how many of the ids were indexed here and are now deleted: never an id it did
        not hold (the kernel probes for stale chunks by asking for ids that may not exist).

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.FIRST, role="retriever")
def aieng_fuse(query: Query, runs: Sequence[Sequence[Hit]]) -> list[Hit] | None:
    """Merge the runs of several retrievers into one ranking.

    :called: by the ``retrieve`` stage after gathering, when there is more than one run.
    :mode: first: the first fuser answering wins; the kernel's built-in ``rrf`` runs last.
    :none: "not mine": the next fuser is asked.
    :async: may be ``async def``; fusion is usually cheap and sync.
    :param query: the query the runs answer.
    :param runs: one list of hits per retriever; the result must not depend on their order.
    :returns: one list of hits, best first, ranks 1..n, each document once.

    .. versionadded:: 0.1.0
    """
