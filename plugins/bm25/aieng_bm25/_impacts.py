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
ascending (Python string order); with numba and at least ``FAST_DOCS_PER_HIT`` documents
per hit, in float32 first, the candidates then rescored exactly (:mod:`._kernels`): the
same answer, bit for bit. The arrays are rebuilt from the committed index contents
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
#: A term in at least ``1 / DENSE_FRACTION`` of the documents gets a dense float32 column
#: (4 bytes per document), so that a query adds it with a vectorised loop.
DENSE_FRACTION = 4
#: The fast kernel runs when there are at least this many documents per hit asked for;
#: below, scoring every document in float64 is as fast or faster (measured: Cranfield's
#: 1,400 documents at k = 10, a 20,000-document corpus at k = 100).
FAST_DOCS_PER_HIT = 256
# The float32 kernel's ranges (see _kernels): weights, query term counts, query terms.
_LOWEST, _HIGHEST, _MOST_COUNT, _MOST_TERMS = 2.0 ** -100, 2.0 ** 64, 2 ** 20, 2 ** 16

# A document version's analysis, per field (text, title): the ids of its distinct terms
# (in the Impacts' vocabulary), their counts, and the field's length in tokens.
_Field = tuple[np.ndarray, np.ndarray, int]
_Analysis = tuple[_Field, _Field]


class _Built:
    """One immutable build: documents by position, per term id its postings slice, and
    what the fast kernel reads besides: the weights in float32, a dense float32 column
    per term in at least 1 / DENSE_FRACTION of the documents, the skip entries."""

    __slots__ = ("dense", "docs", "indptr", "postings", "skips", "skptr", "slots",
                 "weights", "weights32")

    def __init__(self, docs: list[Document], indptr: np.ndarray, postings: np.ndarray,
                 weights: np.ndarray) -> None:
        self.docs, self.indptr, self.postings, self.weights = docs, indptr, postings, weights
        n, n_terms = len(docs), len(indptr) - 1
        self.weights32: np.ndarray | None = None
        self.slots = np.full(n_terms, -1, dtype=np.int32)
        self.dense = np.zeros((0, n), dtype=np.float32)
        self.skptr = np.zeros(n_terms + 1, dtype=np.int64)
        self.skips = np.zeros(0, dtype=np.int32)
        if len(weights) and (weights.min() < _LOWEST or weights.max() > _HIGHEST):
            return  # outside float32's safe range (a title_boost near 0): exact only
        from ._kernels import skip_entries

        self.weights32 = weights.astype(np.float32)
        self.skptr, self.skips = skip_entries(indptr, postings)
        # Terms in at least a quarter of the documents also get a dense float32 column.
        common = np.flatnonzero(np.diff(indptr) * DENSE_FRACTION >= max(n, 1))
        if len(common):
            self.slots[common] = np.arange(len(common), dtype=np.int32)
            self.dense = np.zeros((len(common), n), dtype=np.float32)
            for row, term in enumerate(common.tolist()):
                start, end = indptr[term], indptr[term + 1]
                self.dense[row, postings[start:end]] = self.weights32[start:end]


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


#: Whether searches may use the numba kernels (when numba imports); tests turn it off to
#: check the numpy path.
USE_NUMBA = True
_jitted: Any = None  # (exact, fast) compiled, False when numba is missing


def _compiled() -> Any:
    """The compiled kernels of :mod:`aieng_bm25._kernels`, ``(exact, fast)``, or ``None``
    when numba is not installed (the numpy path is used then).

    Compiled on first use; numba caches the machine code on disk (``__pycache__`` next to
    the module, else its user cache folder), so a later process loads it in well under a
    second. Where neither is writable it compiles in each process (~5 s).
    """
    global _jitted
    if _jitted is None:
        try:
            import numba
        except ImportError:
            _jitted = False
        else:
            from . import _kernels as source

            def jit(function: Any) -> Any:
                try:
                    return numba.njit(nogil=True, cache=True)(function)
                except RuntimeError:  # no cache folder it can write to
                    return numba.njit(nogil=True, cache=False)(function)

            _jitted = (jit(source.score_exact), jit(source.score_fast))
    return _jitted or None


class Impacts:
    """The impacts of the live documents, rebuilt when the committed index changes.

    Thread-safe: a rebuild runs once, and every search that needs it waits for it and
    shares it; searches read an immutable build.

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
        # id -> the row of its version noted last, so that noting a newer version (an
        # upsert) or deleting it drops the old analysis at once, not at the next rebuild:
        # between rebuilds, _seen holds about one analysis per id, however many writes.
        self._row_of: dict[str, int] = {}
        self._seen_lock = threading.Lock()
        self._build_lock = threading.Lock()
        # (the stamp of the commit it was built for, the build): one attribute, so a
        # reader never pairs a build with another build's stamp.
        self._state: tuple[Hashable, _Built] | None = None
        # Per thread, the fast kernel's float32 scores of one search, reused by the next.
        self._scratch = threading.local()

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
        analysing it again at the next rebuild); the analysis of its id's version noted
        before goes (a rebuild that still meets that version analyses it again)."""
        analysis = self._analyse(doc)
        with self._seen_lock:
            old = self._row_of.get(doc.id)
            if old is not None:
                self._seen.pop(old, None)
            self._seen[row] = analysis
            self._row_of[doc.id] = row

    def forget(self, doc_ids: list[str]) -> None:
        """Drop the analyses of the versions noted for ``doc_ids`` (just deleted)."""
        with self._seen_lock:
            for doc_id in doc_ids:
                old = self._row_of.pop(doc_id, None)
                if old is not None:
                    self._seen.pop(old, None)

    def clear(self) -> None:
        """Drop everything (the index closed)."""
        with self._build_lock, self._seen_lock:
            self._seen.clear()
            self._row_of.clear()
            self._state = None

    def current(self, stamp: Callable[[], Hashable],
                live: Callable[[], list[tuple[int | None, Document]]]) -> _Built:
        """The build for the last commit, rebuilt first when that commit is another.

        A rebuild runs in one thread at a time. A caller that finds one in progress waits
        for it, then uses it when it was built for the commit the caller saw (or a commit
        that is still the last); otherwise it rebuilds. So every call sees every commit
        made before it began, and one rebuild serves all the calls that waited for it.

        :param stamp: names the committed index (this object's commits, meta.json's
            state): equal stamps, the same commit.
        :param live: (row number or ``None``, document) of every live document of the
            committed index, read after the stamp was taken (a commit in between changes
            the stamp again, so the next call rebuilds).
        """
        seen = stamp()
        state = self._state
        if state is not None and state[0] == seen:
            return state[1]
        with self._build_lock:
            state = self._state
            if state is not None and state[0] == seen:  # built while this call waited
                return state[1]
            now = stamp()
            if state is not None and state[0] == now:  # built since, still the last
                return state[1]
            return self._rebuild(now, live)

    def _rebuild(self, stamp: Hashable,
                 live: Callable[[], list[tuple[int | None, Document]]]) -> _Built:
        """Build for ``stamp``; call with the build lock held."""
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
            self._row_of = {doc_id: row for doc_id, row in self._row_of.items()
                            if row in self._seen}  # ids whose rows went go too
            n_terms = len(self._vocab)
        built = _build(entries, n_terms, self.title_boost)
        self._state = stamp, built
        return built

    def search(self, built: _Built, terms: list[str], k: int
               ) -> tuple[list[int], list[float]]:
        """The best ``k`` documents of ``built`` for the query ``terms``: their positions
        in ``built.docs`` and their scores, score descending, then document id ascending.
        """
        n = len(built.docs)
        if n == 0 or k < 1:
            return [], []
        k = min(k, n)  # the kernels' heaps have k slots
        counts: dict[str, int] = {}
        for term in terms:
            counts[term] = counts.get(term, 0) + 1
        get, top_term = self._vocab.get, len(built.indptr) - 1
        tids: list[int] = []
        repeats: list[int] = []
        for term, count in counts.items():
            tid = get(term)
            if tid is not None and tid < top_term:
                tids.append(tid)
                repeats.append(count)
        if not tids:
            return [], []
        kernels = _compiled() if USE_NUMBA else None
        if kernels is None:
            return self._search_numpy(built, tids, repeats, k)
        exact, fast = kernels
        query = np.array(tids, dtype=np.int64), np.array(repeats, dtype=np.float64)
        if (n >= FAST_DOCS_PER_HIT * k and built.weights32 is not None
                and max(repeats) <= _MOST_COUNT and len(tids) <= _MOST_TERMS):
            scratch = getattr(self._scratch, "scores", None)
            if scratch is None or len(scratch) != n:
                scratch = self._scratch.scores = np.empty(n, dtype=np.float32)
            where, scored = fast(*query, built.indptr, built.postings, built.weights,
                                       built.weights32, built.slots, built.dense,
                                       built.skptr, built.skips, n, k, scratch)
        else:
            where, scored = exact(*query, built.indptr, built.postings, built.weights,
                                       n, k)
        return where.tolist(), scored.tolist()

    @staticmethod
    def _search_numpy(built: _Built, tids: list[int], counts: list[int], k: int
                      ) -> tuple[list[int], list[float]]:
        """:meth:`search` without numba: numpy scatter-adds in float64."""
        indptr, postings, weights = built.indptr, built.postings, built.weights
        scores = np.zeros(len(built.docs), dtype=np.float64)
        touched = False
        for tid, count in zip(tids, counts, strict=True):
            start, end = indptr[tid], indptr[tid + 1]
            if start == end:
                continue
            touched = True
            if count == 1:
                scores[postings[start:end]] += weights[start:end]
            else:
                scores[postings[start:end]] += count * weights[start:end]
        if not touched:
            return [], []
        where = _top(scores, k)
        return where.tolist(), scores[where].tolist()
