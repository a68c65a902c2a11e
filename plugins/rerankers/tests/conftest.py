"""Fixtures of the rerankers tests (the doubles live in ``rerankers_doubles``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from rerankers_doubles import (
    HashEmbedPlugin,
    HashingEmbedder,
    build_cross_encoder,
)


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    """A fresh hashing embedder of 64 dimensions."""
    return HashingEmbedder()


@pytest.fixture
def hash_embed_plugin() -> HashEmbedPlugin:
    """A plugin to register, offering the ``hash-embed`` component."""
    return HashEmbedPlugin()


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a tiny one-output cross-encoder, built once per session."""
    pytest.importorskip("transformers")
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="session")
def cross_encoder_builder(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Path]:
    """``build(labels=..., seed=...)``: a tiny cross-encoder folder of its own."""
    pytest.importorskip("transformers")

    def build(*, labels: int = 1, seed: int = 0) -> Path:
        return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder"), labels=labels,
                                   seed=seed)

    return build


@pytest.fixture
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog entry of the test, whatever its level.

    Another test (the CLI's) may have configured structlog to drop lower levels and left
    it so: the level filter is lifted for this test and the configuration restored after.
    """
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)
