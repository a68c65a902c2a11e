"""Test doubles of the chunker tests: a deterministic embedder, no model, no network."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl

_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """A bag-of-words embedder: each lower-cased word adds ±1 to one hashed dimension, so
    sentences sharing words are alike. It records every batch it was asked to embed."""

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
def hash_embed_plugin() -> HashEmbedPlugin:
    """A plugin to register, offering the ``hash-embed`` component."""
    return HashEmbedPlugin()
