"""Filtered search through the metadata index: the same rows and hits as checking every
row's metadata with ``filters_match`` (the path it replaced, kept here as the reference),
and no row checked in Python for values the index covers.

Growth is shown by counts (rows scored, ``json_equal`` calls), never by timings.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import EQUALS_NOTHING as NEVER
from aieng_hookspecs.types import NO_KEY as ODD
from aieng_hookspecs.types import Document, _text, filters_match, json_equal
from aieng_hookspecs.types import json_key as value_key
from aieng_vectors import VectorsOptions
from aieng_vectors._filters import MAX_FIELDS
from aieng_vectors._store import VectorStore, _unit_query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class Colour(enum.Enum):
    """An enum: no JSON value, so the index leaves it to ``json_equal``."""

    RED = 1


class Weird(str):
    """A string subclass: ``json_equal`` compares it as a string."""


# No numpy number: ``Decimal(1) == np.int64(1)`` raises, and so does ``json_equal`` of
# ``np.float64(1)`` and a list (numpy compares it item by item): in the reference too.
_ODDS = [Decimal(1), Decimal("1.5"), Colour.RED, Weird("x"), b"x", {1: "x"}]
_scalars = st.one_of(
    st.sampled_from(["x", "y", "", "é", "\ud800", "1"]),
    st.sampled_from([0, 1, 2, -1, 2**64]),
    st.sampled_from([0.0, -0.0, 1.0, 1.5, 2.0**64, float("inf"), float("nan")]),
    st.booleans(), st.none(), st.sampled_from(_ODDS))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.lists(inner, max_size=3).map(tuple),
                            st.dictionaries(st.sampled_from(["p", "q"]), inner, max_size=2)),
    max_leaves=5)
_FIELDS = ["a", "b", "c"]
_metadata = st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=3)
_filters = st.dictionaries(st.sampled_from([*_FIELDS, "z"]), _values, min_size=1, max_size=2)


def reference_rows(store: VectorStore, filters: dict[str, Any]) -> Any:
    """The rows passing ``filters`` as the store found them before the index: every row's
    metadata checked with ``filters_match``."""
    return np.fromiter((row for row in range(len(store))
                        if filters_match(store._docs[row].metadata, filters)), np.int64)


def reference_search(store: VectorStore, raw: Any, k: int,
                     filters: dict[str, Any]) -> list[tuple[str, float]]:
    """The exact filtered search before the index: the reference rows, ranked."""
    allowed = reference_rows(store, filters)
    if allowed.size == 0 or k < 1:
        return []
    return [(doc.id, score) for doc, score in store._rank(_unit_query(raw), allowed, k)]


@settings(max_examples=300, deadline=None)
@given(left=_values, right=_values)
def test_value_keys_agree_with_json_equal(left: Any, right: Any) -> None:
    """Two values get equal keys exactly when ``json_equal`` finds them equal; a value
    holding NaN equals no value with a key; an odd one has no key."""
    a, b = value_key(left), value_key(right)
    if a is ODD or b is ODD:
        return
    if a is NEVER or b is NEVER:
        assert not json_equal(left, right)
        return
    assert (a == b) == json_equal(left, right)
    if a == b:
        assert hash(a) == hash(b)


_ops = st.lists(st.one_of(
    st.tuples(st.just("upsert"), st.lists(st.tuples(st.integers(0, 11), _metadata),
                                          min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 11), min_size=1, max_size=4)),
    st.tuples(st.just("search"), _filters)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=_ops, seed=st.integers(0, 2**16), k=st.integers(1, 14), tied=st.booleans())
def test_filtered_search_matches_the_reference(ops: list[Any], seed: int, k: int,
                                               tied: bool) -> None:
    """Through adds, replacements and deletes (rows moved into holes), with the index built
    at the first filtered search and kept in step after it: the rows passing each filter
    and the hits (ties by id included: ``tied`` gives every document one of two vectors)
    are exactly the reference's."""
    rng = np.random.default_rng(seed)
    store = VectorStore(VectorsOptions())
    dim = 3
    query = rng.standard_normal((1, dim))

    def check(filters: dict[str, Any]) -> None:
        index = store._filter_index
        if index is not None:
            assert index.rows(filters, store._docs).tolist() == \
                reference_rows(store, filters).tolist()
        got = [(doc.id, score) for doc, score in store.search(query, k, filters)]
        assert got == reference_search(store, query, k, filters)
        assert store._filter_index is not None or not len(store)

    for op, arg in ops:
        if op == "upsert":
            docs = [Document(f"d{i}", "", metadata=meta) for i, meta in arg]
            raw = (np.asarray([[1, 0, 0] if i % 2 else [0, 1, 0] for i, _ in arg], float)
                   if tied else rng.standard_normal((len(arg), dim)))
            store.upsert(docs, raw)
        elif op == "delete":
            store.delete([f"d{i}" for i in arg])
        else:
            check(arg)
    for field in [*_FIELDS, "z"]:
        for value in ["x", 1, None, True, ["x"]]:
            check({field: value})


def count_scored_rows(store: VectorStore) -> list[int]:
    """Wrap ``store``'s ranking: the list it returns gets the rows scored at each call."""
    scored: list[int] = []
    rank = store._rank

    def counted_rank(query: Any, rows: Any, k: int) -> Any:
        scored.append(len(store) if rows is None else int(rows.size))
        return rank(query, rows, k)

    store._rank = counted_rank  # type: ignore[method-assign]
    return scored


def test_a_selective_filter_checks_no_row_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter keeping 10 of 10,000 documents scores those 10 rows and compares no row's
    metadata in Python (the search used to call ``json_equal`` once a row, every query);
    twice the documents, still 10 rows scored and no comparison."""
    calls = 0
    real = _text.json_equal

    def counting(left: Any, right: Any) -> bool:
        nonlocal calls
        calls += 1
        return real(left, right)

    monkeypatch.setattr(_text, "json_equal", counting)
    for count in (10_000, 20_000):
        store = VectorStore(VectorsOptions())
        docs = [Document(f"d{i}", "", metadata={"tenant": f"t{i % (count // 10)}",
                                                "lang": ["en", "de"][i % 2]})
                for i in range(count)]
        store.upsert(docs, np.random.default_rng(0).standard_normal((count, 8)))
        scored = count_scored_rows(store)
        query = np.ones((1, 8))
        store.search(query, 5, {"tenant": "t7"})  # builds the index
        calls = 0
        hits = store.search(query, 5, {"tenant": "t7"})
        assert calls == 0
        assert scored == [10, 10]
        assert len(hits) == 5 and all(doc.metadata["tenant"] == "t7" for doc, _ in hits)
        assert store.search(query, 20, {"tenant": "t7", "lang": "en"}) == []  # t7: odd rows
        assert calls == 0 and scored == [10, 10]


def test_odd_values_and_filters_are_checked_with_json_equal() -> None:
    """Values the index has no key for (a Decimal, an enum, a numpy float) and filters of
    such values are compared with ``json_equal``, so they match what they matched."""
    store = VectorStore(VectorsOptions())
    metas = [{"n": 1}, {"n": Decimal(1)}, {"n": np.float64(1)}, {"n": True}, {"n": 1.0},
             {"n": Colour.RED}, {"n": float("nan")}, {}, {"n": None}]
    store.upsert([Document(f"d{i}", "", metadata=m) for i, m in enumerate(metas)],
                 np.eye(len(metas)))
    query = np.ones((1, len(metas)))
    for value in [1, Decimal(1), np.float64(1), True, Colour.RED, None, float("nan"), "1"]:
        got = [doc.id for doc, _ in store.search(query, 20, {"n": value})]
        assert got == [doc_id for doc_id, _ in reference_search(store, query, 20, {"n": value})]
    assert {doc.id for doc, _ in store.search(query, 20, {"n": 1})} == {"d0", "d1", "d2", "d4"}
    assert {doc.id for doc, _ in store.search(query, 20, {"n": None})} == {"d7", "d8"}


def test_deep_nesting_is_stored_and_filtered() -> None:
    """A value nested deeper than the index keys is left to ``json_equal``: writing it
    does not fail and a filter on it matches it."""
    deep: Any = "x"
    for _ in range(60):
        deep = [deep]
    store = VectorStore(VectorsOptions())
    store.upsert([Document("a", "", metadata={"d": deep}), Document("b", "")], np.eye(2))
    assert [doc.id for doc, _ in store.search(np.ones((1, 2)), 5, {"d": deep})] == ["a"]
    store.upsert([Document("c", "", metadata={"d": deep})], [[1.0, 0.5]])
    assert [doc.id for doc, _ in store.search(np.ones((1, 2)), 5, {"d": deep})] == ["c", "a"]


def test_fields_past_the_column_limit_are_still_filtered() -> None:
    """Past ``MAX_FIELDS`` fields a field gets no column: filters on it are checked in
    Python on the rows the other filters leave, with the same results."""
    count = MAX_FIELDS + 20
    store = VectorStore(VectorsOptions())
    docs = [Document(f"d{i}", "", metadata={f"f{i}": i % 3, "g": i % 2}) for i in range(count)]
    store.upsert(docs[:10], np.random.default_rng(1).standard_normal((10, 4)))
    store.search(np.ones((1, 4)), 1, {"g": 1})  # the index exists: later fields added live
    store.upsert(docs[10:], np.random.default_rng(2).standard_normal((count - 10, 4)))
    query = np.ones((1, 4))
    for filters in [{f"f{count - 1}": (count - 1) % 3}, {f"f{count - 2}": 0, "g": 0},
                    {"g": 1}, {f"f{count - 1}": None, "g": 1}, {"f3": 0}]:
        got = [(doc.id, score) for doc, score in store.search(query, count, filters)]
        assert got == reference_search(store, query, count, filters), filters


def test_value_tables_stay_within_the_rows() -> None:
    """A field whose value changes at every write (a timestamp) does not grow its value
    table without bound: it is re-coded when it holds over twice the rows (+1,024)."""
    store = VectorStore(VectorsOptions())
    store.upsert([Document(f"d{i}", "", metadata={"t": 0}) for i in range(10)], np.eye(10))
    store.search(np.ones((1, 10)), 1, {"t": 0})
    for stamp in range(1, 3001):
        store.upsert([Document(f"d{stamp % 10}", "", metadata={"t": stamp})],
                     np.eye(10)[stamp % 10: stamp % 10 + 1])
    index = store._filter_index
    assert index is not None
    assert len(index._codes["t"]) <= 2 * len(store) + 1024 + 1
    query = np.ones((1, 10))
    for stamp in (2995, 3000, 5, 0):
        got = [doc.id for doc, _ in store.search(query, 10, {"t": stamp})]
        assert got == [doc_id for doc_id, _ in reference_search(store, query, 10, {"t": stamp})]
    assert [doc.id for doc, _ in store.search(query, 10, {"t": 3000})] == ["d0"]


def test_the_index_is_built_again_on_open(tmp_path: Path) -> None:
    """A folder index builds its metadata index from what it holds when it opens (the
    snapshot, then the journal's writes): filtered hits are the same before and after."""
    options = VectorsOptions(path=str(tmp_path))
    store = VectorStore(options)
    store.open(tmp_path)
    rng = np.random.default_rng(3)
    store.upsert([Document(f"d{i}", "", metadata={"g": i % 4, "tags": ["x", i % 2]})
                  for i in range(40)], rng.standard_normal((40, 5)))
    query = rng.standard_normal((1, 5))
    store.search(query, 3, {"g": 1})
    store.flush()
    store.delete([f"d{i}" for i in range(0, 40, 3)])  # journalled after the snapshot
    store.upsert([Document("d1", "", metadata={"g": 2})], rng.standard_normal((1, 5)))
    cases = [{"g": 1}, {"g": 2}, {"tags": ["x", 1]}, {"tags": ("x", 0.0)}, {"g": None}]
    before = [[(d.id, s) for d, s in store.search(query, 50, f)] for f in cases]
    store._folder.unlock()  # type: ignore[union-attr]  # as a crash leaves it: a journal

    reopened = VectorStore(options)
    reopened.open(tmp_path)
    after = [[(d.id, s) for d, s in reopened.search(query, 50, f)] for f in cases]
    assert after == before
    assert after == [reference_search(reopened, query, 50, f) for f in cases]
    assert all(after[:3])
    reopened.close()
