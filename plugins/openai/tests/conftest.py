"""Shared fixtures: one real OpenAI-compatible server on loopback for the session.

The server is :class:`_openai_double.OpenAIServerDouble` (a test double of an
OpenAI-compatible server) answering through the kit's ``ScriptedBackend`` and
``HashEmbedder``, served by uvicorn in a background thread on 127.0.0.1. Each test gets
it with no script and no recorded calls.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The server double sits beside this file; test modules import it as ``_server``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _openai_double import (
    API_KEY,
    CHAT_MODEL,
    EMBED_MODEL,
    OTHER_MODEL,
    LoopbackServer,
    OpenAIServerDouble,
    Scored,
    echo,
)
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core.testing import HashEmbedder, ScriptedBackend


@pytest.fixture(scope="session")
def server_double() -> OpenAIServerDouble:
    """The session's server double (its policy: :func:`echo`, its words scored when
    log-probabilities are asked for)."""
    return OpenAIServerDouble(Scored(ScriptedBackend(echo)), HashEmbedder(dimensions=32),
                              models=[CHAT_MODEL, EMBED_MODEL, OTHER_MODEL], api_key=API_KEY)


@pytest.fixture(scope="session")
def loopback(server_double: OpenAIServerDouble) -> Iterator[LoopbackServer]:
    """The double served on 127.0.0.1, stopped at the end of the session."""
    with LoopbackServer(server_double.app) as server:
        yield server


@pytest.fixture
def double(server_double: OpenAIServerDouble, loopback: LoopbackServer) -> OpenAIServerDouble:
    """The running double, with no script and no recorded calls."""
    server_double.reset()
    return server_double


@pytest.fixture
def make_backend(loopback: LoopbackServer) -> Any:
    """Build an ``openai`` component for the loopback server (fast backoff by default)."""

    def make(**options: Any) -> OpenAIBackend:
        values: dict[str, Any] = {"base_url": loopback.base_url, "model": CHAT_MODEL,
                                  "embedding_model": EMBED_MODEL, "api_key": API_KEY,
                                  "backoff_base": 0.01, "read_timeout": 10.0}
        values.update(options)
        return OpenAIBackend(OpenAIOptions(**values))

    return make
