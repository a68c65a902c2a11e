"""The ``impacts`` scorer: BM25 term weights precomputed per document, summed per query.

Pure numpy (numba when importable), no tantivy. What bm25s calls "eager" scoring: for
every index term, a postings array of (document position, BM25 weight of the term in that
document), the weight being the exact BM25 of the text field plus ``title_boost`` times
that of the title field, with

* ``k1 = 1.2``, ``b = 0.75`` (tantivy's values),
* Lucene's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``, per field, ``N`` the live
  documents and ``df`` the live documents whose field has the term,
* exact document lengths (the analyzer's token count; tantivy keeps them quantized to
  one byte), ``avgdl`` per field over the live documents.

A query adds, for each distinct term, its count in the query times the term's weights into
a score per document, and takes the best ``k``: score descending, then document id
ascending (Python string order). The arrays are rebuilt from the committed index contents
(see :class:`Impacts`); the analysis of every document version is kept by its row number,
so a rebuild re-analyses only documents this process has not seen (written by another
process, or everything after opening an existing folder).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from aieng_hookspecs.types import Document

__all__ = ["K1", "B", "Impacts"]

#: BM25's parameters: tantivy's, which it does not let a caller change.
K1, B = 1.2, 0.75

# A document version's analysis, per field (text, title): the ids of its distinct terms
# (in the Impacts' vocabulary), their counts, and the field's length in tokens.
_Field = tuple[np.ndarray, np.ndarray, int]
_Analysis = tuple[_Field, _Field]


class _Built:
    """One immutable build: documents by position, and per term id its postings slice."""

    __slots__ = ("docs", "indptr", "postings", "weights")

    def __init__(self, docs: list[Document], indptr: np.ndarray, postings: np.ndarray,
                 weights: np.ndarray) -> None:
        self.docs, self.indptr, self.postings, self.weights = docs, indptr, postings, weights


def _field_weights(fields: list[_Field], n_terms: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(term ids, document positions, BM25 weights) of one field over all documents."""
    n = len(fields)
    sizes = np.fromiter((len(f[0]) for f in fields), dtype=np.int64, count=n)
    if n == 0 or int(sizes.sum()) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    lengths = np.fromiter((f[2] for f in fields), dtype=np.float64, count=n)
    ids = np.concatenate([f[0] for f in fields]).astype(np.int64)
    tfs = np.concatenate([f[1] for f in fields]).astype(np.float64)
    docs = np.repeat(np.arange(n, dtype=np.int64), sizes)
    avgdl = lengths.sum() / n
    df = np.bincount(ids, minlength=n_terms).astype(np.float64)
    idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
    norm = K1 * (1.0 - B + B * lengths[docs] / avgdl)
    return ids, docs, idf[ids] * (tfs * (K1 + 1.0)) / (tfs + norm)


def _build(entries: list[tuple[Document, _Analysis]], n_terms: int,
           title_boost: float) -> _Built:
    """The postings of ``entries`` (one per live document, any order)."""
    entries = sorted(entries, key=lambda entry: entry[0].id)
    docs = [doc for doc, _ in entries]
    n = max(len(docs), 1)
    ids, where, weights = _field_weights([a[0] for _, a in entries], n_terms)
    if title_boost > 0:
        t_ids, t_where, t_weights = _field_weights([a[1] for _, a in entries], n_terms)
        ids = np.concatenate([ids, t_ids])
        where = np.concatenate([where, t_where])
        weights = np.concatenate([weights, title_boost * t_weights])
    # One posting per (term, document): text + title_boost * title, sorted by term then
    # document, so each term's postings are a slice of distinct document positions.
    key = ids * n + where
    order = np.argsort(key, kind="stable")
    key, weights = key[order], weights[order]
    if len(key):
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        weights, key = np.add.reduceat(weights, starts), key[starts]
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(key // n, minlength=n_terms), out=indptr[1:])
    return _Built(docs, indptr, (key % n).astype(np.int32), weights.astype(np.float64))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the best ``k`` positive scores: score descending, position ascending."""
    n = len(scores)
    if k < n:
        part = np.argpartition(scores, n - k)[n - k:]
        kth = scores[part].min()
        candidates = np.flatnonzero(scores >= kth) if kth > 0 else np.flatnonzero(scores > 0)
    else:
        candidates = np.flatnonzero(scores > 0)
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    return candidates[order]


#: Whether searches may use the numba kernel (when numba imports); tests turn it off to
#: check the numpy path.
USE_NUMBA = True
_kernel: Any = None  # the compiled kernel, False when numba is missing


def _numba_kernel() -> Any:
    """The numba kernel of :meth:`Impacts.search` (compiled on first use, ~1 s), or
    ``None`` when numba is not installed (the numpy path is used then)."""
    global _kernel
    if _kernel is None:
        try:
            import numba
        except ImportError:
            _kernel = False
        else:
            _kernel = numba.njit(nogil=True, cache=False)(_score_top)
    return _kernel or None


def _score_top(tids: np.ndarray, counts: np.ndarray, indptr: np.ndarray,
               postings: np.ndarray, weights: np.ndarray, n: int, k: int
               ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - run compiled
    """Sum the query terms' weights (times their counts) per document, then keep the best
    ``k`` positive scores in a heap, scanning documents in position order, and sort them:
    (positions, scores), score descending, then position ascending. The heap's root is the worst kept (lowest
    score, then largest position); a later document replaces it only with a strictly
    higher score, so equal scores keep the smaller positions."""
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
    heap_s = np.empty(k, dtype=np.float64)
    heap_d = np.empty(k, dtype=np.int64)
    h = 0
    for d in range(n):
        sc = scores[d]
        if sc <= 0.0:
            continue
        if h < k:
            i = h
            h += 1
            while i > 0:  # sift up
                parent = (i - 1) // 2
                ps, pd = heap_s[parent], heap_d[parent]
                if sc < ps or (sc == ps and d > pd):
                    heap_s[i], heap_d[i] = ps, pd
                    i = parent
                else:
                    break
            heap_s[i], heap_d[i] = sc, d
        elif sc > heap_s[0]:
            i = 0
            while True:  # sift down from the root
                left = 2 * i + 1
                if left >= h:
                    break
                child, right = left, left + 1
                if right < h and (heap_s[right] < heap_s[left] or (
                        heap_s[right] == heap_s[left] and heap_d[right] > heap_d[left])):
                    child = right
                cs, cd = heap_s[child], heap_d[child]
                if cs < sc or (cs == sc and cd > d):
                    heap_s[i], heap_d[i] = cs, cd
                    i = child
                else:
                    break
            heap_s[i], heap_d[i] = sc, d
    # Heap sort: move the root (the worst left) to the end, h - 1 times: best first.
    for end in range(h - 1, 0, -1):
        sc, d = heap_s[end], heap_d[end]
        heap_s[end], heap_d[end] = heap_s[0], heap_d[0]
        i = 0
        while True:  # sift the old last element down from the root, within [0, end)
            left = 2 * i + 1
            if left >= end:
                break
            child, right = left, left + 1
            if right < end and (heap_s[right] < heap_s[left] or (
                    heap_s[right] == heap_s[left] and heap_d[right] > heap_d[left])):
                child = right
            cs, cd = heap_s[child], heap_d[child]
            if cs < sc or (cs == sc and cd > d):
                heap_s[i], heap_d[i] = cs, cd
                i = child
            else:
                break
        heap_s[i], heap_d[i] = sc, d
    return heap_d[:h], heap_s[:h]


class Impacts:
    """The impacts of the live documents, rebuilt when the committed index changes.

    Thread-safe: a rebuild runs once (others wait for it); searches read an immutable
    build.

    :param title_boost: weight of the title field's BM25 against the text field's.
    :param terms: the index analyzer (text to its index terms).
    """

    def __init__(self, title_boost: float, terms: Callable[[str], list[str]]) -> None:
        self.title_boost = title_boost
        self._terms = terms
        # Term ids. It only grows (a term whose documents are all gone keeps its id, with
        # no postings) until close() clears it: about the distinct terms ever indexed.
        self._vocab: dict[str, int] = {}
        self._seen: dict[int, _Analysis] = {}  # row number -> its version's analysis
        self._seen_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._built: _Built | None = None
        self._stamp: Hashable = None

    def _field(self, text: str) -> _Field:
        counts = Counter(self._terms(text))
        vocab = self._vocab
        with self._seen_lock:
            ids = np.fromiter((vocab.setdefault(term, len(vocab)) for term in counts),
                              dtype=np.int32, count=len(counts))
        return ids, np.fromiter(counts.values(), dtype=np.int32, count=len(counts)), \
            sum(counts.values())

    def _analyse(self, doc: Document) -> _Analysis:
        return self._field(doc.text), self._field(doc.title)

    def note(self, row: int, doc: Document) -> None:
        """Analyse a document version about to be written as ``row`` (saves reading and
        analysing it again at the next rebuild)."""
        analysis = self._analyse(doc)
        with self._seen_lock:
            self._seen[row] = analysis

    def clear(self) -> None:
        """Drop everything (the index closed)."""
        with self._build_lock, self._seen_lock:
            self._seen.clear()
            self._built, self._stamp = None, None

    def current(self, stamp: Hashable,
                live: Callable[[], list[tuple[int | None, Document]]], *,
                wait: bool = True) -> _Built:
        """The build for the commit named ``stamp``; rebuilt first when it is another.

        :param live: (row number or ``None``, document) of every live document of the
            committed index, read after ``stamp`` was taken (a commit in between changes
            the stamp again, so the next call rebuilds).
        :param wait: when another thread is rebuilding, wait for it (a writer); with
            ``False`` (a search) return the previous build meanwhile: that search runs
            concurrently with the write, so either state is a correct answer.
        """
        built = self._built
        if built is not None and self._stamp == stamp:
            return built
        if built is not None and not wait:
            if not self._build_lock.acquire(blocking=False):
                return built
        else:
            self._build_lock.acquire()
        try:
            return self._rebuild(stamp, live)
        finally:
            self._build_lock.release()

    def _rebuild(self, stamp: Hashable,
                 live: Callable[[], list[tuple[int | None, Document]]]) -> _Built:
        """Build for ``stamp`` unless done meanwhile; call with the build lock held."""
        if self._built is not None and self._stamp == stamp:
            return self._built
        with self._seen_lock:
            before = set(self._seen)
        entries: list[tuple[Document, _Analysis]] = []
        keep: dict[int, _Analysis] = {}
        seen = self._seen
        for row, doc in live():
            analysis = seen.get(row) if row is not None else None
            if analysis is None:
                analysis = self._analyse(doc)
            if row is not None:
                keep[row] = analysis
            entries.append((doc, analysis))
        with self._seen_lock:
            # Rows no longer live go; rows noted during this rebuild stay.
            for row in before.difference(keep):
                self._seen.pop(row, None)
            self._seen.update(keep)
            n_terms = len(self._vocab)
        built = _build(entries, n_terms, self.title_boost)
        self._built, self._stamp = built, stamp
        return built

    def search(self, built: _Built, terms: list[str], k: int) -> list[tuple[float, Document]]:
        """The best ``k`` (score, document) of ``built`` for the query ``terms``: score
        descending, then document id ascending."""
        n = len(built.docs)
        if n == 0 or k < 1:
            return []
        k = min(k, n)  # the kernel's heap has k slots
        vocab, indptr, postings, weights = (self._vocab, built.indptr, built.postings,
                                            built.weights)
        top_term = len(indptr) - 1
        kernel = _numba_kernel() if USE_NUMBA else None
        if kernel is not None:
            query = [(tid, count) for tid, count in
                     ((vocab.get(term), count) for term, count in Counter(terms).items())
                     if tid is not None and tid < top_term]
            if not query:
                return []
            tids = np.array([tid for tid, _ in query], dtype=np.int64)
            counts = np.array([count for _, count in query], dtype=np.float64)
            where, scored = kernel(tids, counts, indptr, postings, weights, n, k)
            docs = built.docs
            return [(score, docs[i]) for i, score in zip(where.tolist(), scored.tolist(),
                                                         strict=True)]
        scores = np.zeros(n, dtype=np.float64)
        touched = False
        for term, count in Counter(terms).items():
            tid = vocab.get(term)
            if tid is None or tid >= top_term:
                continue
            start, end = indptr[tid], indptr[tid + 1]
            if start == end:
                continue
            touched = True
            if count == 1:
                scores[postings[start:end]] += weights[start:end]
            else:
                scores[postings[start:end]] += count * weights[start:end]
        if not touched:
            return []
        docs = built.docs
        return [(float(scores[i]), docs[i]) for i in _top(scores, k).tolist()]
