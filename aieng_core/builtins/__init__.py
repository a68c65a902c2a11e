"""The kernel's built-in plugin: small, dependency-free components.

- ``memory``: an in-process BM25 retriever (and index);
- ``rrf``: reciprocal rank fusion with a configurable constant;
- ``prompt``: a context builder with numbered citations and fenced, untrusted passages;
- ``extractive``: an offline backend that quotes the best context sentences (no model).
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, ReaderRegistry, hookimpl

from ._extractive import ExtractiveBackend, ExtractiveOptions
from ..ingest import BUILTIN_READERS, read_documents
from ._memory import MemoryOptions, MemoryRetriever
from ._prompt import PromptBuilder, PromptOptions
from ._rrf import RRFFuser, RRFOptions

__all__ = [
    "ExtractiveBackend",
    "ExtractiveOptions",
    "MemoryOptions",
    "MemoryRetriever",
    "PromptBuilder",
    "PromptOptions",
    "RRFFuser",
    "RRFOptions",
    "aieng_register_components",
    "aieng_register_readers",
    "read_documents",
]


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the built-in components."""
    registry.add("memory", MemoryRetriever, options=MemoryOptions)
    registry.add("rrf", RRFFuser, options=RRFOptions)
    registry.add("prompt", PromptBuilder, options=PromptOptions)
    registry.add("extractive", ExtractiveBackend, options=ExtractiveOptions)


@hookimpl
def aieng_register_readers(registry: ReaderRegistry) -> None:
    """Read markdown (a document per section), text, and BEIR ``corpus.jsonl`` files."""
    for suffix, reader in BUILTIN_READERS.items():
        registry.add(suffix, reader)
