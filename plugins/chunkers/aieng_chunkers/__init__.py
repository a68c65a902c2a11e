"""aieng-chunkers: cut documents into chunks before indexing.

Components (all ``aieng_chunk_document``; chunks carry exact ``start`` / ``end`` offsets,
``text[start:end] == chunk.text``, and tile the document save for overlap):

- ``tokens``: fixed windows of N whitespace tokens (or a tokenizer's) with overlap;
- ``sentences``: whole sentences packed up to a size in characters, optional overlap;
- ``markdown``: sections at headings, paragraphs packed up to a size;
- ``semantic``: ends chunks where the topic shifts, by sentence embeddings through the
  pipeline (``context.embed``); numpy is imported only when it runs.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._options import MarkdownOptions, SemanticOptions, SentencesOptions, TokensOptions
from ._semantic import Embedder, SemanticChunker
from ._text import MarkdownChunker, SentenceChunker
from ._tokens import TokenChunker, Tokenizer, whitespace_tokens

__all__ = [
    "Embedder",
    "MarkdownChunker",
    "MarkdownOptions",
    "SemanticChunker",
    "SemanticOptions",
    "SentenceChunker",
    "SentencesOptions",
    "TokenChunker",
    "Tokenizer",
    "TokensOptions",
    "aieng_register_components",
    "whitespace_tokens",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``tokens``, ``sentences``, ``markdown`` and ``semantic`` chunkers."""
    registry.add("tokens", TokenChunker, options=TokensOptions,
                 description="Fixed windows of N tokens with overlap.")
    registry.add("sentences", SentenceChunker, options=SentencesOptions,
                 description="Whole sentences packed up to a size in characters.")
    registry.add("markdown", MarkdownChunker, options=MarkdownOptions,
                 description="Markdown sections at headings, paragraphs packed up to a size.")
    registry.add("semantic", SemanticChunker, options=SemanticOptions,
                 description="Chunks ending where sentence embeddings shift topic.")
