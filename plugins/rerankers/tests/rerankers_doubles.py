"""Test doubles of the rerankers tests: a hashing embedder, a scripted ranker, a tiny
cross-encoder built from a config. No shipped model and no network.

The module has a name of its own (not ``doubles``): every plugin's tests share one
``sys.path``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Document, Hit, Request

_WORD = re.compile(r"\w+")
_PASSAGE_LINE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)

#: Words of the tiny cross-encoder's vocabulary (any other word is [UNK]).
VOCABULARY = ["the", "a", "of", "to", "and", "in", "is", "how", "what", "do", "i", "cook", "pasta", "boil", "water", "salt", "minutes", "tomato", "sauce", "rank", "fusion", "reciprocal", "retrieval", "search", "bm25", "dense", "vector", "index", "query", "document", "passage", "model", "weights", "quantization", "int8", "gpu", "train", "loss", "paris", "france", "capital", "city", "river", "seine", "tower", "bread", "flour", "yeast", "oven", "bake"]


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


class HashEmbedPlugin:
    """A plugin offering the ``hash-embed`` component (a :class:`HashingEmbedder`)."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("hash-embed", HashingEmbedder)


def passages_in(request: Request) -> int:
    """How many numbered passages a listwise request shows."""
    return len(_PASSAGE_LINE.findall(request.messages[-1].content))


def reverse_ranking(request: Request) -> str:
    """A scripted ranker's reply: the passages in reverse order, ``[n] > ... > [1]``."""
    return " > ".join(f"[{n}]" for n in range(passages_in(request), 0, -1))


def hits_of(*texts: str, source: str = "memory") -> list[Hit]:
    """Hits ``d0, d1, ...`` over ``texts``, ranked 1..n with falling scores."""
    return [Hit(Document(f"d{i}", text), score=float(len(texts) - i), rank=i + 1,
                source=source) for i, text in enumerate(texts)]


def build_cross_encoder(folder: Path, *, labels: int = 1, seed: int = 0) -> Path:
    """Save a 2-layer BERT sequence classifier (hidden size 32, random weights, ``labels``
    outputs) with a WordPiece tokenizer over :data:`VOCABULARY` into ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                *dict.fromkeys(VOCABULARY)]) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=5 + len(set(VOCABULARY)), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=labels)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder
