"""Equal scores come in document id order on every search path, the top-k boundary included:
the hits do not depend on the order documents were indexed in (nor on their segments)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Texts with equal scores within a text and different ones across texts, for "wing" (the
# term paths) and "東京" (a CJK pair: a phrase clause tantivy answers under both scorers).
TEXTS = ["wing 東京", "wing flow 東京都", "wing wing shock 京東 東京", "flow 京都"]
# Metadata values: "lang" missing, null or "en" (the null filter), "g" 1 or 2.
LANGS: list[Any] = [..., None, "en"]

# path: (scorer, query text, filters)
PATHS: dict[str, tuple[str, str, Mapping[str, Any] | None]] = {
    "tantivy": ("tantivy", "wing", None),
    "tantivy-filter": ("tantivy", "wing", {"g": 1}),
    "tantivy-cjk": ("tantivy", "東京", None),
    "tantivy-null": ("tantivy", "wing", {"lang": None}),
    "impacts": ("impacts", "wing", None),
    "impacts-filter": ("impacts", "wing", {"g": 1}),
    "impacts-cjk": ("impacts", "東京", None),
    "impacts-null": ("impacts", "wing", {"lang": None}),
    "impacts-cjk-null": ("impacts", "東京", {"lang": None, "g": 2}),
}

Pair = tuple[str, float]


def document(doc_id: str, number: int) -> Document:
    """Document ``doc_id`` of text, "g" and "lang" chosen by ``number``."""
    metadata: dict[str, Any] = {"g": 1 + number // 4 % 2}
    lang = LANGS[number // 8 % 3]
    if lang is not ...:
        metadata["lang"] = lang
    return Document(doc_id, TEXTS[number % len(TEXTS)], metadata=metadata)


def build(folder: Path, docs: Sequence[Document], batch: int, scorer: str) -> BM25Index:
    """An index on disk in ``folder`` of ``docs``, added in this order, ``batch`` a commit
    (a segment each)."""
    index = BM25Index(BM25Options(path=str(folder), scorer=scorer))
    for start in range(0, len(docs), batch):
        index.add(docs[start:start + batch])
    return index


def pairs(index: BM25Index, text: str, k: int, filters: Mapping[str, Any] | None
          ) -> list[Pair]:
    """(id, score) of the hits, checking their ranks."""
    hits = index.search(text, k, filters)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    return [(h.document.id, h.score) for h in hits]


def matches(doc: Document, text: str, filters: Mapping[str, Any] | None) -> bool:
    """Whether ``doc`` is a hit of ``text`` under ``filters``, by definition."""
    # (the CJK query matches a document holding either of its characters)
    found = (any(char in doc.text for char in text) if text == "東京"
             else text in doc.text.split())
    return found and all(doc.metadata.get(key) == value
                         for key, value in (filters or {}).items())


def check_orders(tmp: Path, docs: list[Document], order: Sequence[int], batch: int,
                 path: str) -> None:
    """``docs`` indexed in ``order`` and in the reverse order (fresh folders) give the same
    hits at every k around the ties, scores descending then ids ascending."""
    scorer, text, filters = PATHS[path]
    first = build(tmp / "first", [docs[i] for i in order], batch, scorer)
    second = build(tmp / "second", [docs[i] for i in reversed(order)], max(1, batch - 1),
                   scorer)
    try:
        n = len(docs)
        every = pairs(first, text, n + 3, filters)
        # Every matching document, by definition, and nothing else.
        assert sorted(doc_id for doc_id, _ in every) == sorted(
            doc.id for doc in docs if matches(doc, text, filters))
        # Scores descending, equal scores in id order (Python string order).
        assert every == sorted(every, key=lambda pair: (-pair[1], pair[0]))
        top = every[0][1] if every else 0.0
        ties = sum(1 for _, score in every if score == top)
        for k in sorted({1, 2, ties - 1, ties, ties + 1, n - 1, n, n + 1} - {0, -1}):
            got = pairs(first, text, k, filters)
            assert got == every[:k], k
            assert pairs(second, text, k, filters) == got, k
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("path", list(PATHS))
def test_ties_in_id_order_whatever_the_indexing_order(tmp_path: Path, path: str) -> None:
    """Twenty-four documents, six per text (ties at each score), indexed in a shuffled
    order in three commits, and again in the reverse order: the same hits (ids, order,
    scores) at every k, ties in id order, on every search path."""
    docs = [document(f"d{i:02d}", i) for i in range(24)]
    order = [(i * 7) % 24 for i in range(24)][::-1]  # 7 is prime to 24: a permutation
    check_orders(tmp_path, docs, order, 8, path)


IDS = st.lists(st.text(alphabet="aAbB0_é東ü", min_size=1, max_size=3),
               min_size=1, max_size=14, unique=True)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), path=st.sampled_from(list(PATHS)))
def test_any_ties_and_orders(data: st.DataObject, path: str) -> None:
    """Any ids and texts, any indexing order and batch size: the hits are those of the
    reverse order, at k below, at and above the ties, ties in id order."""
    ids = data.draw(IDS, "ids")
    numbers = data.draw(st.lists(st.integers(0, 23), min_size=len(ids), max_size=len(ids)),
                        "numbers")
    order = data.draw(st.permutations(range(len(ids))), "order")
    batch = data.draw(st.integers(max(1, len(ids) // 4), len(ids)), "batch")  # <= 5 commits
    docs = [document(doc_id, number) for doc_id, number in zip(ids, numbers, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        check_orders(Path(tmp), docs, order, batch, path)


# -- the cost: one call without a tie at the boundary -----------------------------------


class CountingSearcher:
    """A tantivy searcher that records the ``limit`` of every ``search``."""

    def __init__(self, inner: Any, limits: list[int]) -> None:
        self._inner = inner
        self.limits = limits

    def search(self, query: Any, limit: int, count: bool = True) -> Any:
        self.limits.append(limit)
        return self._inner.search(query, limit=limit, count=count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def counting(index: BM25Index, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the searches ``index`` asks of tantivy: the list of their limits."""
    limits: list[int] = []
    real = index._open()

    class Counting:
        def searcher(self) -> CountingSearcher:
            return CountingSearcher(real.searcher(), limits)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(index, "_open", Counting)
    return limits


def test_one_call_without_a_tie_at_the_boundary(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct scores (or a tie above the boundary only): one search of k + 1 hits."""
    index = build(tmp_path / "idx", [Document(f"d{i}", "wing " * (i + 1) + "flow " * 9)
                                     for i in range(10)], 4, "tantivy")
    limits = counting(index, monkeypatch)
    for k in (1, 3, 9):
        limits.clear()
        hits = index.search("wing", k)
        assert [h.document.id for h in hits] == [f"d{i}" for i in range(9, 9 - k, -1)]
        assert limits == [k + 1]
    limits.clear()
    assert len(index.search("wing", 10)) == 10 and limits == [10]  # the document count
    index.close()


def test_a_tie_at_the_boundary_widens_by_doubling(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine tied documents below one better one, indexed in reverse id order: k = 2 fetches
    3, 6, then 12 (10 match: all of them), and answers the best, then the smallest tied id."""
    docs = [Document("top", "wing wing")] + [Document(f"t{i}", "wing") for i in range(9)]
    docs += [Document(f"z{i}", "flow") for i in range(10)]
    index = build(tmp_path / "idx", docs[::-1], 5, "tantivy")
    limits = counting(index, monkeypatch)
    assert [h.document.id for h in index.search("wing", 2)] == ["top", "t0"]
    assert limits == [3, 6, 12]
    limits.clear()
    assert [h.document.id for h in index.search("wing", 2, {"lang": None})] == ["top", "t0"]
    assert limits == [8, 20]  # the null filter's path: 4 k, then 4 times that
    index.close()
