"""``vectors`` passes the kit's retriever conformance suite: exact in memory, HNSW on disk.

The suite composes a pipeline of the component alone, so no embedding component is there
for ``context.embed`` to reach (and the kit's kernel loads no installed plugin, so the
default ``minilm`` embedder is absent too): the component is built with an injected
deterministic embedder. The path through ``context.embed`` is tested in test_index.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aieng_vectors import VectorIndex, VectorsOptions

from aieng_core.testing.conformance import RetrieverSuite


class TestVectorsExactInMemory(RetrieverSuite):
    """An in-memory index below its HNSW threshold (exact cosine scan)."""

    @pytest.fixture
    def component(self, hashing_embedder: Any) -> VectorIndex:
        """An empty in-memory index embedding with a hashing embedder."""
        return VectorIndex(VectorsOptions(), embedder=hashing_embedder.aieng_embed)


class TestVectorsHnswOnDisk(RetrieverSuite):
    """An index in a folder that always searches through its HNSW graph."""

    @pytest.fixture
    def component(self, tmp_path: Path, hashing_embedder: Any) -> VectorIndex:
        """An empty on-disk index with ``exact_below = 0`` (HNSW from the first vector)."""
        return VectorIndex(VectorsOptions(path=str(tmp_path / "index"), exact_below=0),
                           embedder=hashing_embedder.aieng_embed)

    @pytest.fixture
    def retrieve_k(self) -> int:
        """A larger k than the default, so more hits per query are checked."""
        return 6
