"""Chunkers in pipelines built by name: chunks indexed, re-indexed and retrieved whole."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aieng_chunkers
import anyio
import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core.testing import isolated_kernel

_PIECES = ["word ", "Sentence one. ", "Next one! ", "# Heading\n", "\n\n", "é\u0301 ",
           "```\ncode\n```\n", "日本語。", "\r\n", "  ", "x" * 30, "\U0001f469\u200d\U0001f4bb "]
TEXTS = st.one_of(st.text(max_size=200),
                  st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
CHUNKERS: list[dict[str, Any]] = [
    {"use": "tokens", "size": 5, "overlap": 2},
    {"use": "sentences", "size": 40, "overlap": 1},
    {"use": "markdown", "size": 40},
]


class Store:
    """An index that keeps what it is given, by id."""

    def __init__(self) -> None:
        self.documents: dict[str, Document] = {}

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        self.documents.update((doc.id, doc) for doc in documents)
        return len(documents)

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        gone = [i for i in dict.fromkeys(ids) if self.documents.pop(i, None) is not None]
        return len(gone)


class StorePlugin:
    """Offers the ``store`` component; remembers the instance built."""

    def __init__(self) -> None:
        self.built: list[Store] = []

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        def make() -> Store:
            self.built.append(Store())
            return self.built[-1]

        registry.add("store", make)


async def _index_twice(cut: dict[str, Any], first: str,
                       second: str) -> tuple[dict[str, Document], dict[str, Document]]:
    plugin = StorePlugin()
    config = {"pipeline": {"name": "chunked"},
              "components": {"cut": dict(cut), "store": {"use": "store"}}}
    meta = {"lang": "x", "tags": ["a", "b"]}
    async with isolated_kernel() as kernel:
        kernel.registry.register(aieng_chunkers, name="chunkers")
        kernel.registry.register(plugin, name="store-plugin")
        async with kernel.pipeline(config) as pipeline:
            await pipeline.index([Document("doc", first, title="T", metadata=meta),
                                  Document("other", "kept. " * 3)])
            after_first = dict(plugin.built[0].documents)
            await pipeline.index([Document("doc", second, title="T", metadata=meta)])
    return after_first, plugin.built[0].documents


def _check(text: str, held: dict[str, Document]) -> None:
    """``held`` has exactly doc's chunks ``doc#0..n-1`` of ``text``, each its slice, with
    the document's title and metadata."""
    chunks = sorted((d for i, d in held.items() if i.split("#")[0] == "doc"),
                    key=lambda d: int(d.id.split("#")[1]))
    assert [d.id for d in chunks] == [f"doc#{i}" for i in range(len(chunks))]
    assert bool(chunks) == bool(text.strip())
    for doc in chunks:
        start, end = doc.metadata["start"], doc.metadata["end"]
        assert text[start:end] == doc.text
        assert doc.title == "T" and doc.metadata["document_id"] == "doc"
        assert doc.metadata["lang"] == "x" and doc.metadata["tags"] == ["a", "b"]
    if chunks:
        assert chunks[0].metadata["start"] == 0 and chunks[-1].metadata["end"] == len(text)
    assert "doc" not in held  # a chunked document is never indexed whole too


@pytest.mark.parametrize("cut", CHUNKERS, ids=[c["use"] for c in CHUNKERS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=TEXTS, second=TEXTS)
def test_reindexed_document_holds_exactly_its_new_chunks(cut: dict[str, Any], first: str,
                                                         second: str) -> None:
    """Through a pipeline, a document's chunks are ``doc#0..n-1``, each the slice of the
    text its offsets name, with the document's title and metadata; indexing it again with
    another text leaves exactly the new text's chunks (none of the old past its end), the
    same ids and texts as a first indexing would give, and other documents untouched."""
    once, twice = anyio.run(_index_twice, cut, first, second)
    _check(first, once)
    _check(second, twice)
    fresh, _ = anyio.run(_index_twice, cut, second, second)
    assert {i: d for i, d in twice.items()} == fresh
    assert {i for i in twice if i.startswith("other")} == {
        i for i in once if i.startswith("other")}
