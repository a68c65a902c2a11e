"""Every reranker passes the kit's reranker conformance suite.

The suite calls ``aieng_rerank`` on a pipeline holding the component alone, without
opening it, so no pipeline context is there to embed or generate through: the embedding
rerankers get the hashing embedder double, the listwise one a scripted backend reversing
each window, and the cross-encoder a tiny random BERT built from a config. The paths
through ``context.embed`` and ``context.generate`` are tested in test_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aieng_rerankers import (
    CrossEncoderOptions,
    CrossEncoderReranker,
    EmbeddingReranker,
    ListwiseOptions,
    ListwiseReranker,
    MMROptions,
    MMRReranker,
)
from rerankers_doubles import reverse_ranking

from aieng_core.testing import ScriptedBackend
from aieng_core.testing.conformance import RerankerSuite


class TestMMRCosine(RerankerSuite):
    """``mmr`` with cosine relevance."""

    @pytest.fixture
    def component(self, hashing_embedder: Any) -> MMRReranker:
        """MMR at λ = 0.5 over the hashing embedder."""
        return MMRReranker(MMROptions(), embedder=hashing_embedder.aieng_embed)


class TestMMRScoreRelevance(RerankerSuite):
    """``mmr`` with the incoming score as relevance and its own ``k``."""

    max_kept = 4

    @pytest.fixture
    def component(self, hashing_embedder: Any) -> MMRReranker:
        """MMR at λ = 0.7 on normalized incoming scores, keeping at most 4."""
        return MMRReranker(MMROptions(lambda_=0.7, relevance="score", k=4),
                           embedder=hashing_embedder.aieng_embed)


class TestEmbedding(RerankerSuite):
    """``embedding`` over the hashing embedder: a hit scores alike alone or among others,
    and equal texts keep their incoming order."""

    pointwise_tolerance = 0.0
    stable_ties = True

    @pytest.fixture
    def component(self, hashing_embedder: Any) -> EmbeddingReranker:
        """The embedding reranker with an injected embedder."""
        return EmbeddingReranker(embedder=hashing_embedder.aieng_embed)


class TestCrossEncoder(RerankerSuite):
    """``cross-encoder`` over a tiny random BERT (2 layers, hidden size 32); a pair's score
    alone and in a padded batch agree to float32 rounding (the README's 1e-4). The tiny
    model's logits are themselves about 1e-4, so this bound alone would not catch padding
    read by the model: ``test_host``'s double-precision check does."""

    pointwise_tolerance = 1e-4
    stable_ties = True

    @pytest.fixture
    def component(self, tiny_cross_encoder: Path) -> CrossEncoderReranker:
        """The cross-encoder, loaded here so that the suite's loop watch does not time
        the import of torch."""
        reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                            batch_size=4))
        reranker.load()
        return reranker


class TestListwise(RerankerSuite):
    """``llm-listwise`` with windows of 4 overlapping by 2, over a scripted backend."""

    @pytest.fixture
    def component(self) -> ListwiseReranker:
        """A listwise reranker whose backend reverses every window it is shown."""
        backend = ScriptedBackend(reverse_ranking)
        return ListwiseReranker(ListwiseOptions(window=4, overlap=2),
                                generate=backend.aieng_generate)
