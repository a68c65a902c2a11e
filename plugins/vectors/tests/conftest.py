"""Test doubles of the vectors tests: deterministic embedders, no model, no network."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl

# The tests' folder helpers sit beside this file; test modules import them as
# ``_vectors_folders``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """A bag-of-words embedder: each lower-cased word adds ±1 to one hashed dimension.

    Texts sharing words are near, equal texts are equal vectors, and a text without a
    word is the zero vector. It records every batch it was asked to embed.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def vector(self, text: str) -> list[float]:
        """The embedding of one text."""
        values = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            code = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(),
                                  "little")
            values[code % self.dim] += 1.0 if (code >> 40) & 1 else -1.0
        return values

    @hookimpl
    def aieng_embed(self, texts: Sequence[str], model: str | None) -> list[list[float]]:
        self.calls.append(list(texts))
        return [self.vector(text) for text in texts]


class TableEmbedder:
    """An embedder that looks each text up in a table of given vectors."""

    def __init__(self, table: Mapping[str, Sequence[float]]) -> None:
        self.table = table

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str],
                          model: str | None) -> list[Sequence[float]]:
        return [self.table[text] for text in texts]


class HashEmbedPlugin:
    """A plugin offering the ``hash-embed`` component (a :class:`HashingEmbedder`)."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("hash-embed", HashingEmbedder)


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    """A fresh hashing embedder of 64 dimensions."""
    return HashingEmbedder()


@pytest.fixture
def table_embedder() -> Callable[[Mapping[str, Sequence[float]]], TableEmbedder]:
    """Build a table embedder from ``{text: vector}``."""
    return TableEmbedder


@pytest.fixture
def hash_embed_plugin() -> HashEmbedPlugin:
    """A plugin to register, offering the ``hash-embed`` component."""
    return HashEmbedPlugin()
