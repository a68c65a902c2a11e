"""``memory``: an in-process BM25 index, for tests, examples and small corpora."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import attrs

from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query

from ..ingest import read_documents
from ._text import tokenize

__all__ = ["MemoryOptions", "MemoryRetriever"]


@attrs.frozen
class MemoryOptions:
    """Options of the ``memory`` retriever.

    :param documents: a folder of ``.md`` / ``.txt`` files (one document per markdown
        section) or a BEIR ``corpus.jsonl`` to index at start; empty: start empty.
    :param k1: BM25 term-frequency saturation.
    :param b: BM25 length normalization.
    """

    documents: str = ""
    # Finite: k1 = inf would make every score NaN (inf / inf), failing every query.
    k1: float = attrs.field(default=1.2, validator=[attrs.validators.ge(0.0),
                                                    attrs.validators.lt(math.inf)])
    b: float = attrs.field(default=0.75, validator=[attrs.validators.ge(0.0),
                                                    attrs.validators.le(1.0)])


class MemoryRetriever:
    """BM25 over an in-memory inverted index; documents with an existing id replace it."""

    def __init__(self, options: MemoryOptions) -> None:
        self.options = options
        self._docs: dict[str, Document] = {}
        self._tf: dict[str, Counter[str]] = {}
        self._postings: dict[str, set[str]] = {}
        self._lengths: dict[str, int] = {}
        self._total_len = 0
        if options.documents:
            self._add(read_documents(Path(options.documents)))

    def _add(self, documents: Sequence[Document]) -> int:
        for doc in documents:
            if doc.id in self._docs:
                self._remove(doc.id)
            counts = Counter(tokenize(f"{doc.title}\n{doc.text}"))
            self._docs[doc.id] = doc
            self._tf[doc.id] = counts
            self._lengths[doc.id] = sum(counts.values())
            self._total_len += self._lengths[doc.id]
            for term in counts:
                self._postings.setdefault(term, set()).add(doc.id)
        return len(documents)

    def _remove(self, doc_id: str) -> None:
        counts = self._tf.pop(doc_id)
        self._total_len -= self._lengths.pop(doc_id)
        del self._docs[doc_id]
        for term in counts:
            posting = self._postings[term]
            posting.discard(doc_id)
            if not posting:  # a term no document holds any more: its key goes too
                del self._postings[term]

    def __len__(self) -> int:
        return len(self._docs)

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        return self._add(documents)

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        present = [doc_id for doc_id in dict.fromkeys(ids) if doc_id in self._docs]
        for doc_id in present:
            self._remove(doc_id)
        return len(present)

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        terms = tokenize(query.text)
        n = len(self._docs)
        if not terms or not n or k <= 0:
            return []
        avg = self._total_len / n or 1.0
        k1, b = self.options.k1, self.options.b
        scores: dict[str, float] = {}
        # Each term once, in the query's order: a set's order follows the hash seed, and
        # a sum in another order differs in its last bits (near ties swapped by process).
        for term in dict.fromkeys(terms):
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for doc_id in posting:
                tf = self._tf[doc_id][term]
                length = self._lengths[doc_id]
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (k1 + 1) / (
                    tf + k1 * (1 - b + b * length / avg))
        filters = query.filters
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        hits: list[Hit] = []
        for doc_id, score in ranked:
            doc = self._docs[doc_id]
            if filters and not query.matches(doc.metadata):
                continue
            hits.append(Hit(document=doc, score=score, rank=len(hits) + 1, source="memory"))
            if len(hits) == k:
                break
        return hits
