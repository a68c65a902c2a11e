"""aieng-weaviate: a retriever and index in a Weaviate server, component ``weaviate``.

BM25, vector (``near_vector``) and hybrid search over one Weaviate collection, upserts by
document id (deterministic UUIDs), deletes by id and metadata equality filters. Vectors come
from the pipeline's embedder (``context.embed``): the collection has no vectorizer.
weaviate-client is imported when a component opens, not when the plugin loads.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._component import (
    WeaviateAuthenticationFailed,
    WeaviateCollectionMismatch,
    WeaviateStore,
    WeaviateTimeout,
    WeaviateUnavailable,
)
from ._options import WeaviateOptions

__all__ = ["WeaviateAuthenticationFailed", "WeaviateCollectionMismatch", "WeaviateOptions",
           "WeaviateStore", "WeaviateTimeout", "WeaviateUnavailable",
           "aieng_register_components"]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``weaviate`` store with its typed options."""
    registry.add("weaviate", WeaviateStore, options=WeaviateOptions,
                 description="Weaviate server: BM25, vector and hybrid search, upsert by id.")
