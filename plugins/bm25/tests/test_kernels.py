"""The impacts scorer's fast kernel (float32 scores, exact rescoring of the candidates)
returns exactly what the float64 reference kernel returns: the same documents in the
same order with the same scores, bit for bit, near-ties included."""

from __future__ import annotations

from typing import Any

import aieng_bm25._impacts as impacts_module
import numpy as np
import pytest
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_bm25._impacts import DENSE_FRACTION, _Built, _compiled
from aieng_bm25._kernels import SKIP, score_exact, score_fast, skip_entries
from aieng_hookspecs.types import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Weights: a few bases, each nudged by nothing, by one float64 ulp, or by amounts below
# float32's resolution (2**-24), so that many documents tie in float32 but not in float64,
# and some tie exactly.
BASES = [0.25, 0.7, 1.3, 2.0, 3.75]
NUDGES = [0.0, 2.0 ** -52, 2.0 ** -40, 2.0 ** -30, 2.0 ** -26, 2.0 ** -23, 2.0 ** -20]


def _build(n: int, lists: list[list[tuple[int, float]]]) -> _Built:
    """A build of ``n`` documents from per-term postings (document, weight)."""
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    postings: list[int] = []
    weights: list[float] = []
    for term, entries in enumerate(lists):
        by_doc = dict(entries)  # one posting per document
        for doc in sorted(by_doc):
            postings.append(doc)
            weights.append(by_doc[doc])
        indptr[term + 1] = len(postings)
    docs = [Document(f"d{i:04d}", "x") for i in range(n)]
    return _Built(docs, indptr, np.array(postings, dtype=np.int32),
                  np.array(weights, dtype=np.float64))


def _both(kernels: tuple[Any, Any], built: _Built, tids: list[int], counts: list[int],
          k: int) -> tuple[tuple[list[int], list[float]], tuple[list[int], list[float]]]:
    exact, fast = kernels
    query = np.array(tids, dtype=np.int64), np.array(counts, dtype=np.float64)
    n = len(built.docs)
    assert built.weights32 is not None
    got = fast(*query, built.indptr, built.postings, built.weights, built.weights32,
               built.slots, built.dense, built.skptr, built.skips, n, k,
               np.full(n, np.nan, dtype=np.float32))  # scratch: overwritten
    want = exact(*query, built.indptr, built.postings, built.weights, n, k)
    return ((got[0].tolist(), got[1].tolist()), (want[0].tolist(), want[1].tolist()))


@st.composite
def cases(draw: st.DrawFn) -> tuple[_Built, list[int], list[int], int]:
    """A build with near-tied weights, a query (distinct terms, counts) and a k."""
    n = draw(st.integers(1, 260))
    n_terms = draw(st.integers(1, 6))
    weight = st.builds(lambda base, nudge, sign: base * (1.0 + sign * nudge),
                       st.sampled_from(BASES), st.sampled_from(NUDGES),
                       st.sampled_from([1.0, -1.0]))
    lists = []
    for _ in range(n_terms):
        # Dense (most documents) or sparse terms alike.
        share = draw(st.sampled_from([0.02, 0.1, 0.3, 0.8, 1.0]))
        docs = draw(st.lists(st.integers(0, n - 1), max_size=max(1, int(share * n))))
        lists.append([(doc, draw(weight)) for doc in docs])
    tids = draw(st.lists(st.integers(0, n_terms - 1), min_size=1, max_size=n_terms,
                         unique=True))
    counts = draw(st.lists(st.sampled_from([1, 1, 1, 2, 3]), min_size=len(tids),
                           max_size=len(tids)))
    k = draw(st.integers(1, n))
    return _build(n, lists), tids, counts, k


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_fast_kernel_equals_exact_kernel(case: tuple[_Built, list[int], list[int], int]
                                         ) -> None:
    """Compiled: float32 scoring, then exact rescoring, gives the float64 kernel's top k
    exactly (documents, order and scores), whatever the near-ties."""
    kernels = _compiled()
    assert kernels is not None, "numba is a test dependency of aieng-bm25"
    built, tids, counts, k = case
    got, want = _both(kernels, built, tids, counts, k)
    assert got == want


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_fast_kernel_as_python_equals_exact(case: tuple[_Built, list[int], list[int], int]
                                            ) -> None:
    """The same, running the kernels' Python source uncompiled (what numba compiles)."""
    built, tids, counts, k = case
    got, want = _both((score_exact, score_fast), built, tids, counts, k)
    assert got == want


@pytest.mark.parametrize("k", [1, 2, 5, 40, 199, 200])
def test_ties_filling_the_candidate_buffer(k: int) -> None:
    """200 documents of one equal weight (more ties than the candidate buffer holds) and a
    few just above it in float64 only: the exact top k, ties in position order."""
    entries = [(doc, 1.5) for doc in range(200)]
    entries[150] = (150, 1.5 * (1 + 2.0 ** -40))
    entries[7] = (7, 1.5 * (1 + 2.0 ** -45))
    built = _build(200, [entries, [(3, 0.5)]])
    kernels = _compiled()
    assert kernels is not None
    got, want = _both(kernels, built, [0], [1], k)
    assert got == want
    assert got[0][:3] == [150, 7, 0][:k]


def test_dense_columns_and_skip_entries() -> None:
    """Terms in at least 1 / DENSE_FRACTION of the documents get a dense float32 column;
    the skip entries are every SKIP-th posting's document."""
    n = 4 * DENSE_FRACTION * SKIP
    common = [(doc, 1.0 + doc / n) for doc in range(0, n, 2)]
    rare = [(doc, 2.0) for doc in range(0, n, 2 * DENSE_FRACTION)]
    built = _build(n, [rare, common])
    assert built.slots.tolist() == [-1, 0]
    assert built.dense.shape == (1, n)
    assert built.dense[0, 2] == np.float32(1.0 + 2 / n) and built.dense[0, 3] == 0.0
    skptr, skips = skip_entries(built.indptr, built.postings)
    assert skptr.tolist() == [0, -(-len(rare) // SKIP), -(-len(rare) // SKIP)
                              + -(-len(common) // SKIP)]
    assert skips[skptr[1]:].tolist() == [doc for doc, _ in common[::SKIP]]


def test_weights_outside_float32_range_use_the_exact_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A title_boost so small that title-only weights would underflow float32: the build
    has no float32 weights, and searches are exact (float64 throughout)."""
    index = BM25Index(BM25Options(path=MEMORY, scorer="impacts", title_boost=1e-300))
    index.add([Document("a", "wing", title="flow"), Document("b", "flow", title="wing"),
               Document("c", "shock", title="wing wing")])
    assert index._impacts is not None
    built = index._impacts.current(index._stamp, index._live)
    assert built.weights32 is None
    hits = index.search("wing", 3)
    assert [h.document.id for h in hits] == ["a", "c", "b"]
    assert hits[1].score > hits[2].score > 0
    monkeypatch.setattr(impacts_module, "USE_NUMBA", False)
    assert [(h.document.id, h.score) for h in index.search("wing", 3)] == [
        (h.document.id, h.score) for h in hits]
