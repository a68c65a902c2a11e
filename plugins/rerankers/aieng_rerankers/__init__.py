"""aieng-rerankers: the ``mmr``, ``embedding``, ``cross-encoder`` and ``llm-listwise``
rerankers.

The kernel loads this module through the entry point ``rerankers`` of the group ``aieng``
and calls :func:`aieng_register_components`. Importing it imports nothing heavy: numpy
loads on the first rerank, torch and transformers when a cross-encoder's model loads.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._cross_encoder import CrossEncoderReranker
from ._embed import Embedder
from ._embedding import EmbeddingReranker
from ._listwise import Generate, ListwiseReranker
from ._mmr import MMRReranker, SimilarityRows, mmr_order
from ._options import CrossEncoderOptions, EmbeddingOptions, ListwiseOptions, MMROptions
from ._ranking import parse_ranking, windows

__all__ = [
    "CrossEncoderOptions",
    "CrossEncoderReranker",
    "Embedder",
    "EmbeddingOptions",
    "EmbeddingReranker",
    "Generate",
    "ListwiseOptions",
    "ListwiseReranker",
    "MMROptions",
    "MMRReranker",
    "SimilarityRows",
    "aieng_register_components",
    "mmr_order",
    "parse_ranking",
    "windows",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the four rerankers with their typed options."""
    registry.add("mmr", MMRReranker, options=MMROptions,
                 description="Maximal marginal relevance over embeddings (relevance vs "
                             "diversity)")
    registry.add("embedding", EmbeddingReranker, options=EmbeddingOptions,
                 description="Rerank by cosine between query and hit embeddings")
    registry.add("cross-encoder", CrossEncoderReranker, options=CrossEncoderOptions,
                 description="Rerank with a local cross-encoder model (transformers)")
    registry.add("llm-listwise", ListwiseReranker, options=ListwiseOptions,
                 description="The backend ranks numbered passages, in sliding windows")
