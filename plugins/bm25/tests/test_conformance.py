"""``bm25`` passes the kit's retriever conformance suite, on disk and in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from aieng_bm25 import MEMORY, BM25Options, BM25Retriever

from aieng_core.testing.conformance import RetrieverSuite


class TestBM25OnDisk(RetrieverSuite):
    """bm25 with an index folder passes every check the kit makes of a retriever."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> BM25Retriever:
        """An empty index in a fresh folder."""
        return BM25Retriever(BM25Options(path=str(tmp_path / "index")))


class TestBM25InMemory(RetrieverSuite):
    """bm25 with ``path = ":memory:"`` passes the same checks."""

    @pytest.fixture
    def component(self) -> BM25Retriever:
        """An empty index in RAM."""
        return BM25Retriever(BM25Options(path=MEMORY))

    @pytest.fixture
    def retrieve_k(self) -> int:
        """A larger k than the default, so more hits per query are checked."""
        return 8


class TestBM25ImpactsOnDisk(RetrieverSuite):
    """bm25 with ``scorer = "impacts"`` on disk passes the same checks."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> BM25Retriever:
        """An empty index in a fresh folder, searched by precomputed impacts."""
        return BM25Retriever(BM25Options(path=str(tmp_path / "index"), scorer="impacts"))


class TestBM25ImpactsInMemory(RetrieverSuite):
    """bm25 with ``scorer = "impacts"`` in memory passes the same checks."""

    @pytest.fixture
    def component(self) -> BM25Retriever:
        """An empty index in RAM, searched by precomputed impacts."""
        return BM25Retriever(BM25Options(path=MEMORY, scorer="impacts"))

    @pytest.fixture
    def retrieve_k(self) -> int:
        """A larger k than the default, so more hits per query are checked."""
        return 8
