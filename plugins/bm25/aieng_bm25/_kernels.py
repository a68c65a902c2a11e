"""The numba kernels of the ``impacts`` scorer, as plain Python functions.

:mod:`aieng_bm25._impacts` compiles them with numba on first use. This module needs only
numpy (numba, when installed, just marks the helpers callable from compiled code): run
uncompiled the kernels are correct but slow, which is how the tests check the very
source numba compiles.

Two kernels, one answer:

* :func:`score_exact`: float64 weights scattered into a float64 score per document, then
  the best ``k`` by a heap. The reference.
* :func:`score_fast`: the same result, bit for bit, faster. Float32 weights are summed into
  float32 scores (a dense float32 column per very common term: a vectorised add instead
  of a scatter); the best ``k`` float32 scores set a threshold below which, by a proven
  error bound, no document of the exact top ``k`` can score; every document at or above
  it is rescored exactly as :func:`score_exact` scores it (the same float64 operations in
  the same order), and the best ``k`` of those are the answer.

**The bound.** A query of ``m`` distinct terms with counts ``c_j`` gives a document the
exact score ``t = sum_j c_j w_j`` (float64, summed in term order). Its float32 score
``a`` rounds each weight (relative error at most ``u = 2**-24``), each product ``c_j w_j``
(``u`` again) and each of ``m - 1`` sums; all terms are positive, so
``|a - t| <= gamma(m + 1) t`` with ``gamma(j) = j u / (1 - j u)``, and the float64
reference is within ``gamma(m) 2**-29`` of the exact real sum. With
``rho = (m + 2) 2**-23`` (twice that, and more): ``(1 - rho) t <= a <= (1 + rho) t``.
Let ``A`` be the ``k``-th best float32 score and ``T`` the exact ``k``-th best. ``k``
documents have ``a >= A``, so ``t >= A / (1 + rho)``: ``T >= A / (1 + rho)``. A document of
the exact top ``k`` has ``t >= T``, so ``a >= (1 - rho) T >= A (1 - rho) / (1 + rho) >=
A (1 - 3 rho)``: keeping every document with ``a >= A (1 - 3 rho)`` keeps the exact top
``k`` (ties at ``T`` included). The caller guarantees the ranges that make every float32
value involved a normal number (weights in ``[2**-100, 2**64]``, counts at most
``2**20``, at most ``2**16`` terms), so relative errors are all there is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

__all__ = ["BLOCK", "SKIP", "score_exact", "score_fast", "skip_entries"]

F = TypeVar("F", bound=Callable[..., Any])


def _jitable(function: F) -> F:
    """Mark a helper callable from compiled kernels (numba's ``register_jitable``); as it
    is without numba."""
    try:
        from numba.extending import register_jitable
    except ImportError:
        return function
    jitted: F = register_jitable(function)
    return jitted


#: Documents per block of the candidate scan: a block whose scores are all below the
#: floor is skipped after one vectorised test.
BLOCK = 64
#: Postings per skip entry (see :func:`skip_entries`).
SKIP = 16


def score_exact(tids: np.ndarray, counts: np.ndarray, indptr: np.ndarray,
                postings: np.ndarray, weights: np.ndarray, n: int, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sum the query terms' weights (times their counts) per document, then keep the best
    ``k`` positive scores in a heap, scanning documents in position order, and sort them:
    (positions, scores), score descending, then position ascending. The heap's root is the
    worst kept (lowest score, then largest position); a later document replaces it only
    with a strictly higher score, so equal scores keep the smaller positions."""
    scores = np.zeros(n, dtype=np.float64)
    for j in range(len(tids)):
        c = counts[j]
        start, end = indptr[tids[j]], indptr[tids[j] + 1]
        if c == 1.0:  # most query terms: a plain sum, which the compiler keeps tight
            for p in range(start, end):
                scores[postings[p]] += weights[p]
        else:
            for p in range(start, end):
                scores[postings[p]] += c * weights[p]
    return _best(np.arange(n), scores, k)


@_jitable
def _best(where: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` positive ``scores`` with their ``where`` (ascending), sorted: score
    descending, then ``where`` ascending (see :func:`score_exact`)."""
    heap_s = np.empty(k, dtype=np.float64)
    heap_d = np.empty(k, dtype=np.int64)
    h = 0
    for i in range(len(scores)):
        sc = scores[i]
        if sc <= 0.0:
            continue
        d = where[i]
        if h < k:
            j = h
            h += 1
            while j > 0:  # sift up
                parent = (j - 1) // 2
                ps, pd = heap_s[parent], heap_d[parent]
                if sc < ps or (sc == ps and d > pd):
                    heap_s[j], heap_d[j] = ps, pd
                    j = parent
                else:
                    break
            heap_s[j], heap_d[j] = sc, d
        elif sc > heap_s[0]:
            _sift_down(heap_s, heap_d, h, sc, d)
    # Heap sort: move the root (the worst left) to the end, h - 1 times: best first.
    for end in range(h - 1, 0, -1):
        sc, d = heap_s[end], heap_d[end]
        heap_s[end], heap_d[end] = heap_s[0], heap_d[0]
        _sift_down(heap_s, heap_d, end, sc, d)
    return heap_d[:h], heap_s[:h]


@_jitable
def _sift_down(heap_s: np.ndarray, heap_d: np.ndarray, size: int, sc: float, d: int) -> None:
    """Put (sc, d) at the root of the heap's first ``size`` slots and sift it down."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child, right = left, left + 1
        if right < size and (heap_s[right] < heap_s[left] or (
                heap_s[right] == heap_s[left] and heap_d[right] > heap_d[left])):
            child = right
        cs, cd = heap_s[child], heap_d[child]
        if cs < sc or (cs == sc and cd > d):
            heap_s[i], heap_d[i] = cs, cd
            i = child
        else:
            break
    heap_s[i], heap_d[i] = sc, d


@_jitable
def _push(heap: np.ndarray, h: int, k: int, s: np.float32) -> int:
    """Offer ``s`` to the min-heap of the best ``k`` values in ``heap[:h]``; the new size."""
    if h < k:
        i = h
        while i > 0:  # sift up
            parent = (i - 1) // 2
            if heap[parent] > s:
                heap[i] = heap[parent]
                i = parent
            else:
                break
        heap[i] = s
        return h + 1
    if s > heap[0]:
        i = 0
        while True:  # sift down from the root
            child = 2 * i + 1
            if child >= k:
                break
            if child + 1 < k and heap[child + 1] < heap[child]:
                child += 1
            if heap[child] < s:
                heap[i] = heap[child]
                i = child
            else:
                break
        heap[i] = s
    return h


@_jitable
def _below(value: float | np.floating[Any], shrink: float) -> np.float32:
    """A float32 at most ``value * shrink`` (and within 2**-21 of it, relatively)."""
    return np.float32(value * shrink * (1.0 - 2.0 ** -21))


def score_fast(tids: np.ndarray, counts: np.ndarray, indptr: np.ndarray,
               postings: np.ndarray, weights: np.ndarray, weights32: np.ndarray,
               slots: np.ndarray, dense: np.ndarray, skptr: np.ndarray, skips: np.ndarray,
               n: int, k: int, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`score_exact` returns, by float32 scores and an exact rescoring of the
    documents that can be in the top ``k`` (see the module's docstring).

    :param weights32: ``weights`` in float32.
    :param slots: per term, its row in ``dense``, or -1 (the term is scattered).
    :param dense: per very common term, its float32 weight in every document (0 where
        absent).
    :param skptr: with ``skips``, the skip entries of :func:`skip_entries`.
    :param scores: float32 scratch space of ``n`` slots (overwritten; reused across
        searches of one thread, which spares an allocation and its page faults).
    """
    m = len(tids)
    # 1. float32 scores: the dense columns first (the first one is copied, sparing a
    # pass that zeroes the scores), then the scattered terms.
    filled = False
    for j in range(m):
        row = slots[tids[j]]
        if row < 0:
            continue
        col = dense[row]
        c = np.float32(counts[j])
        if filled:
            if c == 1.0:
                for i in range(n):
                    scores[i] += col[i]
            else:
                for i in range(n):
                    scores[i] += c * col[i]
        else:
            filled = True
            if c == 1.0:
                for i in range(n):
                    scores[i] = col[i]
            else:
                for i in range(n):
                    scores[i] = c * col[i]
    if not filled:
        for i in range(n):
            scores[i] = 0.0
    for j in range(m):
        t = tids[j]
        if slots[t] >= 0:
            continue
        c = np.float32(counts[j])
        start, end = indptr[t], indptr[t + 1]
        if c == 1.0:
            for p in range(start, end):
                scores[postings[p]] += weights32[p]
        else:
            for p in range(start, end):
                scores[postings[p]] += c * weights32[p]
    # 2. The candidates: every document whose float32 score reaches a floor, in position
    # order, into a buffer of 2k + 8. Whenever it is full, the floor rises to (a float32
    # below) the buffer's k-th best times (1 - 3 rho), and the buffer keeps only what
    # reaches it. The buffer's k-th best is at most the k-th best of all, A, so the floor
    # never passes A (1 - 3 rho), and every document at or above that is kept. A block
    # is scanned only when one of its scores reaches the floor (a vectorised test).
    shrink = 1.0 - 3.0 * (m + 2) * 2.0 ** -23
    low = np.float32(1e-38)  # below every positive score (see the ranges above)
    size = 2 * k + 8
    where = np.empty(size, dtype=np.int64)
    values = np.empty(size, dtype=np.float32)
    nc = 0
    full_blocks = n // BLOCK
    overflow = False
    for b in range(full_blocks + 1):
        b0 = b * BLOCK
        b1 = n
        if b < full_blocks:
            b1 = b0 + BLOCK
            above = np.int32(0)
            for i in range(b0, b0 + BLOCK):
                above |= np.int32(scores[i] >= low)
            if above == 0:
                continue
        for i in range(b0, b1):
            s = scores[i]
            if s >= low:
                if nc == size:
                    low = max(low, _below(_kth(values, k), shrink))
                    nc = _keep(where, values, nc, low)
                    overflow = nc == size  # ties at the floor fill it
                    if overflow:
                        break
                    if s < low:
                        continue
                where[nc] = i
                values[nc] = s
                nc += 1
        if overflow:
            break
    if overflow:  # rare: every document at or above the floor, however many
        where = np.empty(n, dtype=np.int64)
        values = np.empty(n, dtype=np.float32)
        nc = 0
        for i in range(n):
            if scores[i] >= low:
                where[nc] = i
                values[nc] = scores[i]
                nc += 1
    if nc == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    if nc > k:
        low = max(low, _below(_kth(values[:nc], k), shrink))
        nc = _keep(where, values, nc, low)
    # 3. The exact scores of the candidates, term by term in the query's order (so each
    # sum is the float64 one of score_exact): per term and candidate, the last skip entry
    # (every SKIP-th posting's document) at or before it, by a binary search from the
    # previous candidate's, then a vectorised count of the postings before it among the
    # next SKIP. The lookups of successive candidates are independent memory reads.
    exact = np.zeros(nc, dtype=np.float64)
    for j in range(m):
        t = tids[j]
        c = counts[j]
        first, stop, start, end = skptr[t], skptr[t + 1], indptr[t], indptr[t + 1]
        if first == stop:
            continue
        q0 = first
        for ci in range(nc):
            d = where[ci]
            q, length = q0, stop - q0
            while length > 1:
                half = length >> 1
                q = q + half if skips[q + half] <= d else q
                length -= half
            if skips[q] > d:
                continue  # before the term's first document
            q0 = q
            base = start + (q - first) * SKIP
            before = 0
            if base + SKIP <= end:
                for p in range(base, base + SKIP):
                    before += postings[p] < d
            else:
                for p in range(base, end):
                    before += postings[p] < d
            p = base + before
            if p < end and postings[p] == d:
                if c == 1.0:
                    exact[ci] += weights[p]
                else:
                    exact[ci] += c * weights[p]
    return _best(where[:nc], exact, k)


@_jitable
def _kth(values: np.ndarray, k: int) -> np.float32:
    """The ``k``-th largest of ``values`` (at least ``k`` of them), by a min-heap of the
    ``k`` largest."""
    heap = np.empty(k, dtype=np.float32)
    h = 0
    for i in range(len(values)):
        s = values[i]
        if h < k or s > heap[0]:
            h = _push(heap, h, k, s)
    kth: np.float32 = heap[0]
    return kth


@_jitable
def _keep(where: np.ndarray, values: np.ndarray, count: int, low: np.float32) -> int:
    """Keep, in order, the first ``count`` entries whose value reaches ``low``; how many."""
    kept = 0
    for i in range(count):
        if values[i] >= low:
            where[kept] = where[i]
            values[kept] = values[i]
            kept += 1
    return kept


def skip_entries(indptr: np.ndarray, postings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(skptr, skips): per term ``t``, ``skips[skptr[t]:skptr[t + 1]]`` are the documents
    of its postings number 0, SKIP, 2 SKIP, ... (what :func:`score_fast` searches first)."""
    df = np.diff(indptr)
    per_term = (df + SKIP - 1) // SKIP
    skptr = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum(per_term, out=skptr[1:])
    owner = np.repeat(np.arange(len(df)), per_term)
    rank = np.arange(int(skptr[-1])) - skptr[owner]
    return skptr, postings[indptr[owner] + rank * SKIP].astype(np.int32)
