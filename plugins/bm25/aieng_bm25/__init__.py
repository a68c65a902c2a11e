"""aieng-bm25: the ``bm25`` retriever, BM25 over a tantivy index on disk.

The kernel loads this module through the entry point ``bm25`` of the group ``aieng`` and
calls :func:`aieng_register_components`. Importing it imports neither tantivy nor anything
heavy: tantivy loads when an index opens.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._component import BM25Retriever
from ._index import BM25Index, IndexLockedError
from ._options import ANALYZER, ANALYZERS, MEMORY, BM25Options

__all__ = [
    "ANALYZER",
    "ANALYZERS",
    "MEMORY",
    "BM25Index",
    "BM25Options",
    "BM25Retriever",
    "IndexLockedError",
    "aieng_register_components",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``bm25`` retriever with its typed options."""
    registry.add("bm25", BM25Retriever, options=BM25Options,
                 description="BM25 search over a tantivy index on disk (upsert and delete by id)")
