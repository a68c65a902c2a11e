"""``weaviate`` passes the kit's retriever conformance suite against a real server.

It runs only when ``AIENG_WEAVIATE_URL`` names a Weaviate server (``docker run -p
8080:8080 -p 50051:50051 cr.weaviate.io/semitechnologies/weaviate``); each test uses a
fresh collection, deleted afterwards. Without a server the suite is skipped with that
reason: Weaviate cannot run on the project's build machines (its embedded mode downloads a
server binary at run time).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aieng_weaviate import WeaviateOptions, WeaviateStore

from aieng_core.testing import HashEmbedder
from aieng_core.testing.conformance import RetrieverSuite

URL = os.environ.get("AIENG_WEAVIATE_URL", "")

pytestmark = pytest.mark.skipif(
    not URL, reason="needs a Weaviate server: set AIENG_WEAVIATE_URL (e.g. "
                    "http://localhost:8080); none can run on this machine")


def _store(mode: str) -> Iterator[WeaviateStore]:
    import weaviate

    from aieng_weaviate._requests import connection_params

    name = f"AiengTest{uuid.uuid4().hex}"
    options = WeaviateOptions(url=URL, collection=name, mode=mode)  # type: ignore[arg-type]
    client: Any = weaviate.connect_to_custom(**connection_params(options, os.environ))
    try:
        yield WeaviateStore(options, embedder=HashEmbedder(64).aieng_embed, client=client)
    finally:
        client.collections.delete(name)
        client.close()


class TestWeaviateHybrid(RetrieverSuite):
    """Hybrid search (BM25 + vectors, relative-score fusion)."""

    @pytest.fixture
    def component(self) -> Iterator[WeaviateStore]:
        yield from _store("hybrid")


class TestWeaviateBM25(RetrieverSuite):
    """BM25 alone."""

    @pytest.fixture
    def component(self) -> Iterator[WeaviateStore]:
        yield from _store("bm25")


class TestWeaviateVector(RetrieverSuite):
    """near_vector alone."""

    @pytest.fixture
    def component(self) -> Iterator[WeaviateStore]:
        yield from _store("vector")
