"""The HNSW path agrees with the exact scan: recall@10 of at least 0.95 on random vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Document, Query
from aieng_vectors import VectorIndex, VectorsOptions

N, DIM, QUERIES, K = 4_000, 32, 50, 10


@pytest.mark.anyio
async def test_hnsw_recall_at_10_against_exact(table_embedder: Any) -> None:
    """On 4,000 random Gaussian vectors (a hard case: no cluster structure), the HNSW
    graph's top 10 holds at least 95% of the exact top 10, and shared hits carry the same
    (exactly rescored) cosine."""
    rng = np.random.default_rng(42)
    table = {f"v{i}": row for i, row in enumerate(rng.standard_normal((N, DIM)).tolist())}
    table.update({f"q{j}": row for j, row in
                  enumerate(rng.standard_normal((QUERIES, DIM)).tolist())})
    embedder = table_embedder(table)
    docs = [Document(f"v{i}", f"v{i}") for i in range(N)]
    exact = VectorIndex(VectorsOptions(batch_size=1024), embedder=embedder.aieng_embed)
    approx = VectorIndex(VectorsOptions(batch_size=1024, exact_below=1_000, threads=1),
                         embedder=embedder.aieng_embed)
    for index in (exact, approx):
        await index.aieng_index(docs)
    assert approx.uses_hnsw and not exact.uses_hnsw
    found = 0
    for j in range(QUERIES):
        want = await exact.aieng_retrieve(Query(f"q{j}"), K)
        got = await approx.aieng_retrieve(Query(f"q{j}"), K)
        assert len(got) == K
        truth = {hit.document.id: hit.score for hit in want}
        shared = [hit for hit in got if hit.document.id in truth]
        found += len(shared)
        for hit in shared:
            assert hit.score == pytest.approx(truth[hit.document.id], abs=1e-6)
    recall = found / (QUERIES * K)
    assert recall >= 0.95, f"recall@10 of HNSW against exact search: {recall:.3f}"
