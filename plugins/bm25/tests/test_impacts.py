"""``scorer = "impacts"``: exact BM25 from precomputed term weights, kept consistent with
the committed tantivy index through adds, upserts, deletes, reopening and other writers."""

from __future__ import annotations

import itertools
import math
import tempfile
import threading
from collections import Counter
from pathlib import Path

import aieng_bm25._impacts as impacts_module
import pytest
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_bm25._impacts import K1, B
from aieng_hookspecs.types import Document, Hit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Words the analyzer keeps as they are (no stopwords, their own stems), so generated texts
# have predictable terms; "flows" stems to "flow" (a duplicate term after analysis).
WORDS = ["wing", "flow", "flows", "shock", "plate", "heat", "shell", "drag", "lift", "mach",
         "boundari", "laminar"]
IDS = [f"d{i}" for i in range(8)]


def reference(index: BM25Index, docs: dict[str, Document], text: str, title_boost: float
              ) -> dict[str, float]:
    """Brute-force BM25 of every live document for ``text`` (positive scores only):
    per field, exact lengths, Lucene idf, k1 = 1.2, b = 0.75; text + title_boost * title,
    each query term weighted by its count in the query."""
    n = len(docs)
    fields = {doc_id: (Counter(index.terms(doc.text)), Counter(index.terms(doc.title)))
              for doc_id, doc in docs.items()}
    scores: dict[str, float] = {}
    for term, count in Counter(index.terms(text)).items():
        for f, weight in ((0, 1.0), (1, title_boost)):
            if weight == 0:
                continue
            df = sum(1 for c in fields.values() if c[f][term])
            if df == 0:
                continue
            avgdl = sum(sum(c[f].values()) for c in fields.values()) / n
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for doc_id, c in fields.items():
                tf = c[f][term]
                if tf:
                    dl = sum(c[f].values())
                    w = idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
                    scores[doc_id] = scores.get(doc_id, 0.0) + count * weight * w
    return scores


def check(hits: list[Hit], expected: dict[str, float], k: int) -> None:
    """``hits`` are the best ``k`` of ``expected`` (scores to 1e-6), ties by id."""
    best = sorted(expected.values(), reverse=True)[:k]
    assert len(hits) == len(best)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    for hit, score in zip(hits, best, strict=True):
        assert hit.score == pytest.approx(score, abs=1e-6)
        assert expected[hit.document.id] == pytest.approx(hit.score, abs=1e-6)
    for first, second in itertools.pairwise(hits):
        assert (first.score > second.score
                or (first.score == second.score and first.document.id < second.document.id))
    if hits:
        found = {h.document.id for h in hits}
        assert all(doc_id in found for doc_id, score in expected.items()
                   if score > hits[-1].score + 1e-6)


texts = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
documents = st.builds(Document, st.sampled_from(IDS), texts, texts)
operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(documents, min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=3)),
), min_size=1, max_size=6)
queries = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
                   min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, queries=queries, k=st.integers(1, 10),
       title_boost=st.sampled_from([0.0, 1.0, 2.5]), on_disk=st.booleans(),
       path=st.sampled_from(["numpy", "exact", "fast"]))
def test_impacts_equal_brute_force_bm25_after_any_writes(
        ops: list[tuple[str, list[object]]], queries: list[str], k: int, title_boost: float,
        on_disk: bool, path: str) -> None:
    """After every add (upsert) or delete, each query's hits are the reference's top k,
    by the numpy path, the float64 kernel and the float32 kernel (forced on however
    few the documents) alike."""
    impacts_module.USE_NUMBA = path != "numpy"
    impacts_module.FAST_DOCS_PER_HIT = 0 if path == "fast" else 256
    try:
        _check_writes(ops, queries, k, title_boost, on_disk)
    finally:
        impacts_module.USE_NUMBA = True
        impacts_module.FAST_DOCS_PER_HIT = 256


def _check_writes(ops: list[tuple[str, list[object]]], queries: list[str], k: int,
                  title_boost: float, on_disk: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "idx") if on_disk else MEMORY
        index = BM25Index(BM25Options(path=path, scorer="impacts", title_boost=title_boost))
        model: dict[str, Document] = {}
        for op, args in ops:
            if op == "add":
                batch = [doc for doc in args if isinstance(doc, Document)]
                index.add(batch)
                model.update({doc.id: doc for doc in batch})
            else:
                index.delete([str(doc_id) for doc_id in args])
                for doc_id in args:
                    model.pop(str(doc_id), None)
            for text in queries:
                check(index.search(text, k), reference(index, model, text, title_boost), k)
        index.close()
        if on_disk:  # reopened: rebuilt from the folder alone
            again = BM25Index(BM25Options(path=path, scorer="impacts",
                                          title_boost=title_boost))
            for text in queries:
                check(again.search(text, k), reference(again, model, text, title_boost), k)
            again.close()


corpora = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join),
                   min_size=12, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus=corpora, queries=st.lists(st.lists(st.sampled_from(WORDS), min_size=1,
                                                 max_size=3).map(" ".join),
                                        min_size=5, max_size=10))
def test_impacts_top10_overlaps_tantivy(corpus: list[str], queries: list[str]) -> None:
    """On a small random corpus (one batch, no deletes), the impacts' top 10 overlaps the
    tantivy path's by at least 0.9 on average."""
    docs = [Document(f"d{i:03d}", text) for i, text in enumerate(corpus)]
    ours = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    theirs = BM25Index(BM25Options(path=MEMORY))
    ours.add(docs)
    theirs.add(docs)
    overlaps = []
    for text in queries:
        left = {h.document.id for h in ours.search(text, 10)}
        right = {h.document.id for h in theirs.search(text, 10)}
        assert len(left) == len(right)
        overlaps.append(len(left & right) / len(right) if right else 1.0)
    assert sum(overlaps) / len(overlaps) >= 0.9


@pytest.mark.parametrize("use_numba", [True, False])
def test_ties_are_ordered_by_id(monkeypatch: pytest.MonkeyPatch, use_numba: bool) -> None:
    """Documents of equal score come in id order, whatever the order they were added in."""
    monkeypatch.setattr(impacts_module, "USE_NUMBA", use_numba)
    index = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    index.add([Document(doc_id, "wing flow") for doc_id in ("c", "a", "d", "b")])
    index.add([Document("e", "shock")])
    hits = index.search("wing", 3)
    assert [h.document.id for h in hits] == ["a", "b", "c"]
    assert len({h.score for h in hits}) == 1


def test_filters_go_to_tantivy() -> None:
    """A search with filters is answered by the tantivy path, filters applied."""
    docs = [Document("a", "wing flow", metadata={"t": 1}),
            Document("b", "wing shock", metadata={"t": 2}),
            Document("c", "wing", metadata={"t": 1})]
    ours = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    plain = BM25Index(BM25Options(path=MEMORY))
    ours.add(docs)
    plain.add(docs)
    got = ours.search("wing", 10, {"t": 1})
    assert [h.document.id for h in got] == [h.document.id for h in plain.search("wing", 10,
                                                                               {"t": 1})]
    assert {h.document.id for h in got} == {"a", "c"}


def test_sees_another_writer_on_the_same_folder(tmp_path: Path) -> None:
    """A commit by another index object on the folder (another process, say) is seen by
    the next search: meta.json names the commit."""
    path = str(tmp_path / "idx")
    reader = BM25Index(BM25Options(path=path, scorer="impacts"))
    writer = BM25Index(BM25Options(path=path))
    writer.add([Document("a", "wing"), Document("b", "flow")])
    assert [h.document.id for h in reader.search("wing", 5)] == ["a"]
    writer.add([Document("a", "flow"), Document("c", "wing wing")])
    writer.delete(["b"])
    model = {"a": Document("a", "flow"), "c": Document("c", "wing wing")}
    for text in ("wing", "flow", "wing flow"):
        check(reader.search(text, 5), reference(reader, model, text, 1.0), 5)


def test_empty_index_and_no_terms() -> None:
    """Nothing indexed, a query of stopwords only, or an unknown term: no hits."""
    index = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    assert index.search("wing", 10) == []
    index.add([Document("a", "wing")])
    assert index.search("the and of", 10) == []
    assert index.search("zeppelin", 10) == []
    assert index.search("wing", 0) == []
    index.delete(["a"])
    assert index.search("wing", 10) == []


@pytest.mark.parametrize("value", ["bm25", "", "Impacts"])
def test_unknown_scorer_is_refused(value: str) -> None:
    """A scorer other than tantivy or impacts fails, naming the valid ones."""
    with pytest.raises(ValueError, match="scorer must be one of 'tantivy', 'impacts'"):
        BM25Options(path=MEMORY, scorer=value)
    with pytest.raises(TypeError, match="scorer must be a string"):
        BM25Options(path=MEMORY, scorer=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_numba", [True, False])
def test_k_above_the_document_count(monkeypatch: pytest.MonkeyPatch, use_numba: bool) -> None:
    """A k far above the index's size returns every matching document, nothing more."""
    monkeypatch.setattr(impacts_module, "USE_NUMBA", use_numba)
    index = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    index.add([Document("a", "wing"), Document("b", "wing flow"), Document("c", "shock")])
    assert [h.document.id for h in index.search("wing", 10**12)] == ["a", "b"]


@pytest.mark.parametrize(("use_numba", "fast"), [(True, False), (True, True), (False, False)])
def test_many_ties_at_every_k(monkeypatch: pytest.MonkeyPatch, use_numba: bool,
                              fast: bool) -> None:
    """Thirty documents of three texts (ten-way ties at three scores), added in a shuffled
    order: at every k the hits are the reference's, score descending then id ascending."""
    monkeypatch.setattr(impacts_module, "USE_NUMBA", use_numba)
    monkeypatch.setattr(impacts_module, "FAST_DOCS_PER_HIT", 0 if fast else 256)
    texts = ["wing", "wing flow", "wing wing shock"]
    order = [(i * 7) % 30 for i in range(30)]  # 7 is prime to 30: a permutation
    docs = {f"d{i:02d}": Document(f"d{i:02d}", texts[i % 3]) for i in order}
    index = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    index.add(list(docs.values()))
    expected = reference(index, docs, "wing", 1.0)
    ranked = sorted(expected, key=lambda doc_id: (-expected[doc_id], doc_id))
    for k in range(1, 32):
        hits = index.search("wing", k)
        assert [h.document.id for h in hits] == ranked[:k]
        check(hits, expected, k)


def test_searches_during_writes_see_one_commit_or_the_other() -> None:
    """Searches running while another thread writes answer from the commit before or the
    one after, never a mix; once the write returns, every search sees it."""
    index = BM25Index(BM25Options(path=MEMORY, scorer="impacts"))
    old = {f"o{i}": Document(f"o{i}", "wing " * (i + 1)) for i in range(20)}
    index.add(list(old.values()))
    states = [dict(old)]
    for round_ in range(3):
        nxt = dict(states[-1])
        nxt.update({f"n{round_}{i}": Document(f"n{round_}{i}", "wing flow") for i in range(5)})
        states.append(nxt)
    answers = [[h.document.id for h in index.search("wing", 10)]]
    expected = [sorted(reference(index, state, "wing", 1.0).items(),
                       key=lambda item: (-item[1], item[0]))[:10] for state in states]
    allowed = [[doc_id for doc_id, _ in ranking] for ranking in expected]
    stop = threading.Event()
    seen: list[list[str]] = []

    def searcher() -> None:
        while not stop.is_set():
            seen.append([h.document.id for h in index.search("wing", 10)])

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for state in states[1:]:
            index.add([doc for doc_id, doc in state.items() if doc_id not in old])
            answers.append([h.document.id for h in index.search("wing", 10)])
    finally:
        stop.set()
        thread.join()
    assert answers == allowed
    assert seen and all(ids in allowed for ids in seen)
