"""Retrieval metrics and BEIR loading used by `aieng bench retrieval`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.evaluation import load_beir, mrr_at_k, ndcg_at_k, recall_at_k, score_runs

CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"


def test_ndcg_by_hand() -> None:
    """nDCG@3 of a known ranking equals the value computed by hand (linear gains)."""
    qrels = {"a": 3, "b": 2, "c": 1}
    dcg = 2 / math.log2(2) + 0 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(["b", "x", "a"], qrels, 3) == pytest.approx(dcg / idcg)


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 4), min_size=1),
       st.lists(st.sampled_from("abcdefghxyz"), unique=True))
def test_metrics_lie_in_the_unit_interval_and_ideal_is_one(qrels: dict[str, int],
                                                           ranked: list[str]) -> None:
    """Every metric is in [0, 1]; the ideal ranking scores nDCG 1, recall 1, MRR 1."""
    for metric in (ndcg_at_k, recall_at_k, mrr_at_k):
        assert 0.0 <= metric(ranked, qrels) <= 1.0
    ideal = sorted(qrels, key=lambda d: -qrels[d])
    assert ndcg_at_k(ideal, qrels, len(ideal)) == pytest.approx(1.0)
    assert recall_at_k(ideal, qrels, len(ideal)) == 1.0 and mrr_at_k(ideal, qrels) == 1.0


def test_missing_queries_count_as_zero() -> None:
    """A judged query with no run scores 0, so skipping queries cannot raise the mean."""
    scores = score_runs({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert scores.queries == 2 and scores.ndcg_at_10 == pytest.approx(0.5)


def test_cranfield_loads() -> None:
    """The shared Cranfield collection loads: 1,400 documents, 225 queries, 1,612 judgements."""
    collection = load_beir(CRANFIELD)
    assert len(collection.documents) == 1400 and len(collection.queries) == 225
    assert sum(len(v) for v in collection.qrels.values()) == 1612


def test_malformed_collection_errors_name_the_file(tmp_path: Path) -> None:
    """A missing file or a bad row fails naming the file (and line)."""
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        load_beir(tmp_path)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\nnot json\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\t1\t1\n")
    with pytest.raises(ValueError, match="corpus.jsonl:2"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\t1\thigh\n")
    with pytest.raises(ValueError, match="test.tsv:2: expected .* integer score"):
        load_beir(tmp_path)


def test_byte_order_marks_are_not_part_of_the_first_row(tmp_path: Path) -> None:
    """Files saved with a UTF-8 byte-order mark (Windows editors) load like files without
    one: the mark is neither a JSON error nor glued to the first query id."""
    (tmp_path / "qrels").mkdir()
    bom = "\ufeff"
    (tmp_path / "corpus.jsonl").write_text(bom + '{"_id": "d1", "text": "x"}\n',
                                           encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text(bom + '{"_id": "q1", "text": "y"}\n',
                                            encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text(bom + "q1\td1\t1\n", encoding="utf-8")
    collection = load_beir(tmp_path)
    assert [d.id for d in collection.documents] == ["d1"]
    assert [q.id for q in collection.queries] == ["q1"]
    assert collection.qrels == {"q1": {"d1": 1}}


def test_blank_lines_in_qrels_are_skipped_like_in_the_jsonl_files(tmp_path: Path) -> None:
    """Blank (or whitespace-only) lines in qrels/test.tsv are skipped, as they are in
    corpus.jsonl and queries.jsonl, instead of failing as a row with no columns; the header
    is recognised after a leading blank line, and Windows line endings load too."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n\n', encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n', encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_bytes(
        b"\r\nquery-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n \r\n\r\nq1\td2\t2\r\n\r\n")
    assert load_beir(tmp_path).qrels == {"q1": {"d1": 1, "d2": 2}}


def test_null_fields_read_as_empty_and_bad_ids_name_the_line(tmp_path: Path) -> None:
    """A ``null`` title or text is empty, as the ingest reader of ``corpus.jsonl`` reads it
    (it became the text "None", which the benchmark then indexed and matched); an empty or
    non-scalar id fails naming the file and line, not with a bare 'id must not be empty'."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": null, "text": "alpha"}\n{"_id": 7, "text": null}\n',
        encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": null}\n', encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    collection = load_beir(tmp_path)
    assert [(d.id, d.title, d.text) for d in collection.documents] == [
        ("d1", "", "alpha"), ("7", "", "")]
    assert [(q.id, q.text) for q in collection.queries] == [("q1", "")]
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": ""}\n',
                                           encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: .*id"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n', encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text('{"_id": {"a": 1}, "text": "y"}\n',
                                            encoding="utf-8")
    with pytest.raises(ValueError, match=r"queries.jsonl:1: _id must be a string"):
        load_beir(tmp_path)


_DOC_IDS = st.sampled_from([f"d{i}" for i in range(12)])


@given(qrels=st.dictionaries(_DOC_IDS, st.integers(-1, 4), min_size=1),
       ranked=st.lists(_DOC_IDS, min_size=1, unique=True), k=st.integers(1, 15))
def test_metrics_agree_with_pytrec_eval(qrels: dict[str, int], ranked: list[str],
                                        k: int) -> None:
    """nDCG@k, Recall@k and MRR@k equal trec_eval's ``ndcg_cut``, ``recall`` and
    ``recip_rank`` (of the top k) for graded judgements, zero and negative grades included."""
    pytrec_eval = pytest.importorskip("pytrec_eval")

    def evaluate(measures: set[str], ids: list[str]) -> dict[str, float]:
        # Strictly decreasing scores: trec_eval ranks by score, so the order is ours.
        run = {"q": {doc: float(len(ids) - i) for i, doc in enumerate(ids)}}
        return pytrec_eval.RelevanceEvaluator({"q": qrels}, measures).evaluate(run)["q"]

    theirs = evaluate({f"ndcg_cut.{k}", f"recall.{k}"}, ranked)
    assert ndcg_at_k(ranked, qrels, k) == pytest.approx(theirs[f"ndcg_cut_{k}"], abs=1e-12)
    assert recall_at_k(ranked, qrels, k) == pytest.approx(theirs[f"recall_{k}"], abs=1e-12)
    top = evaluate({"recip_rank"}, ranked[:k])
    assert mrr_at_k(ranked, qrels, k) == pytest.approx(top["recip_rank"], abs=1e-12)


@given(st.dictionaries(st.sampled_from(["q1", "q2", "q3"]),
                       st.dictionaries(_DOC_IDS, st.integers(1, 3), min_size=1), min_size=1),
       st.data())
def test_score_runs_is_the_mean_pytrec_eval_reports(qrels: dict[str, dict[str, int]],
                                                    data: st.DataObject) -> None:
    """score_runs is the mean of trec_eval's per-query figures over the judged queries."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    runs = {q: data.draw(st.lists(_DOC_IDS, min_size=1, unique=True)) for q in qrels}
    scored = {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in runs.items()}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}
                                               ).evaluate(scored)
    scores = score_runs(runs, qrels)
    assert scores.queries == len(qrels)
    mean = math.fsum(r["ndcg_cut_10"] for r in per_query.values()) / len(qrels)
    assert scores.ndcg_at_10 == pytest.approx(mean, abs=1e-12)
    mean = math.fsum(r["recall_100"] for r in per_query.values()) / len(qrels)
    assert scores.recall_at_100 == pytest.approx(mean, abs=1e-12)


def _collection(root: Path, corpus: str, queries: str, qrels: str) -> Path:
    (root / "qrels").mkdir(exist_ok=True)
    (root / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (root / "queries.jsonl").write_text(queries, encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def test_a_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    """A document or query id given twice fails naming the file and both lines: indexed,
    the second document replaced the first (whose judgements then matched the wrong text),
    and the second query's ranking replaced the first's, so the scores were silently wrong."""
    doc = '{"_id": "d1", "text": "alpha"}\n'
    query = '{"_id": "q1", "text": "alpha"}\n'
    _collection(tmp_path, doc + '{"_id": "d2", "text": "b"}\n' + doc, query, "q1\td1\t1\n")
    with pytest.raises(ValueError, match=r"corpus\.jsonl:3: duplicate _id 'd1' \(line 1\)"):
        load_beir(tmp_path)
    _collection(tmp_path, doc, query + "\n" + query, "q1\td1\t1\n")
    with pytest.raises(ValueError, match=r"queries\.jsonl:3: duplicate _id 'q1' \(line 1\)"):
        load_beir(tmp_path)


def test_conflicting_judgements_name_both_lines(tmp_path: Path) -> None:
    """The same query-document pair judged twice with different grades is an error (the
    last one won, silently); the same grade twice is harmless and loads."""
    _collection(tmp_path, '{"_id": "d1", "text": "alpha"}\n', '{"_id": "q1", "text": "a"}\n',
                "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t1\n")
    assert load_beir(tmp_path).qrels == {"q1": {"d1": 1}}
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t2\nq1\td1\t0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.tsv:2: query 'q1', document 'd1' judged 0 "
                                         r"here and 2 on line 1"):
        load_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t2\nq1\td2\thigh\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.tsv:2: expected"):  # only line 1 is a header
        load_beir(tmp_path)


def test_judgements_naming_unknown_ids_are_logged(tmp_path: Path) -> None:
    """qrels naming queries or documents the collection lacks load (BEIR collections ship
    such rows) but are logged as a warning with counts and examples, not silently scored."""
    import structlog.testing

    _collection(tmp_path, '{"_id": "d1", "text": "alpha"}\n', '{"_id": "q1", "text": "a"}\n',
                "q1\td1\t1\nq1\tgone\t1\nq9\td1\t1\n")
    with structlog.testing.capture_logs() as logs:
        collection = load_beir(tmp_path)
    assert collection.qrels == {"q1": {"d1": 1, "gone": 1}, "q9": {"d1": 1}}
    [event] = [e for e in logs if e["event"] == "beir.unknown_ids"]
    assert event["log_level"] == "warning"
    assert event["queries"] == 1 and event["query_examples"] == ["q9"]
    assert event["documents"] == 1 and event["document_examples"] == ["gone"]
    _collection(tmp_path, '{"_id": "d1", "text": "alpha"}\n', '{"_id": "q1", "text": "a"}\n',
                "q1\td1\t1\n")
    with structlog.testing.capture_logs() as logs:
        load_beir(tmp_path)
    assert not [e for e in logs if e["event"] == "beir.unknown_ids"]
