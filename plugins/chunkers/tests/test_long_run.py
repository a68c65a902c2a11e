"""The long run: an indexing worker chunking documents for weeks keeps nothing per
document, whichever chunker cuts them.

Shown by the bytes the kit's ``measure_growth`` / ``ameasure_growth`` find retained, never
by timings."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aieng_chunkers import (
    MarkdownChunker,
    SemanticChunker,
    SemanticOptions,
    SentenceChunker,
    SentencesOptions,
    TokenChunker,
    TokensOptions,
)
from aieng_hookspecs.types import Document

from aieng_core.testing.steady import ameasure_growth, measure_growth


def document(i: int) -> Document:
    """A new document for each call: headings, paragraphs and sentences with its number."""
    body = "".join(f"## Part {n} of {i}\n\nThe river {i} runs north. It floods in spring. "
                   f"Boats carry grain {n} times a year.\n\n" for n in range(6))
    return Document(id=f"doc-{i}", text=f"# Document {i}\n\n{body}")


@pytest.mark.parametrize("chunker", [
    TokenChunker(TokensOptions(size=16, overlap=4)),
    SentenceChunker(SentencesOptions(size=120, overlap=1)),
    MarkdownChunker(),
], ids=["tokens", "sentences", "markdown"])
def test_chunking_new_documents_keeps_nothing(chunker: object) -> None:
    """Documents cut one after another: the chunks are the caller's, nothing stays."""

    def cut(i: int) -> None:
        assert chunker.aieng_chunk_document(document(i))  # type: ignore[attr-defined]

    growth = measure_growth(cut, warmup=60, calls=600)
    # A chunk kept is 200 B and more; the regex module's cache (bounded, refilled by other
    # tests) and the allocator's reserves some 20 kB in all.
    assert growth.per_call < 64, growth.report()


@pytest.mark.anyio
async def test_semantic_chunking_keeps_nothing() -> None:
    """The semantic chunker's vectors and similarities are the document's own: nothing
    stays, and no worker thread is left behind."""

    def embed(texts: Sequence[str], model: str | None) -> list[list[float]]:
        return [[float(len(text) % 7), float(text.count("river")), 1.0] for text in texts]

    chunker = SemanticChunker(SemanticOptions(size=200), embedder=embed)

    async def cut(i: int) -> None:
        assert await chunker.aieng_chunk_document(document(i))

    growth = await ameasure_growth(cut, warmup=60, calls=600)
    # A chunk or a vector kept is 200 B and more; numpy's and the regex engine's own
    # reserves are some 15 kB in all.
    assert growth.per_call < 64, growth.report()
    assert growth.held == (), growth.report()
