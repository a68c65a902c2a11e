"""aieng-vectors: the embedded vector index, component ``vectors``.

A dense retriever and index: exact cosine search (numpy) below ``exact_below`` vectors,
an HNSW graph (usearch) above, persisted with its ids to a folder, with metadata equality
filters; its vectors come from the pipeline's embedder (``context.embed``). numpy and
usearch are imported when a component is built, not when the plugin loads.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._component import Embedder, VectorIndex
from ._options import VectorsOptions

__all__ = ["Embedder", "VectorIndex", "VectorsOptions", "aieng_register_components"]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``vectors`` index with its typed options."""
    registry.add("vectors", VectorIndex, options=VectorsOptions,
                 description="Embedded vector index: exact cosine, HNSW when large, on disk.")
