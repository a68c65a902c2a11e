"""The document table (``document_cache``): hits read from RAM are the stored documents,
never a stale version, under add, upsert, delete, close, reopen and another writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_bm25._rows import DocumentTable, builder
from aieng_hookspecs.types import Document, Hit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DOCS = [
    Document("a", "Laminar flow over a flat plate.", title="Plate",
             metadata={"topic": "flow", "tags": ("plate", "laminar")}),
    Document("b", "Heat transfer in turbulent boundary layers.", metadata={"year": 1960}),
    Document("c", "Buckling of thin cylindrical shells, laminar too."),
]
QUERIES = ["laminar", "heat flow", "shells plate", "turbulent boundary"]


def answers(index: BM25Index) -> list[list[Hit]]:
    """Every query's hits, k = 10."""
    return [index.search(q, 10) for q in QUERIES]


def test_options_check_document_cache() -> None:
    """``document_cache`` is a count: 0 or more, an int."""
    with pytest.raises(ValueError, match="document_cache must be 0"):
        BM25Options(path=MEMORY, document_cache=-1)
    with pytest.raises(TypeError, match="document_cache must be an integer"):
        BM25Options(path=MEMORY, document_cache=True)


def test_cached_and_uncached_hits_are_equal(tmp_path: Path) -> None:
    """With the table or without it, every search returns equal hits (documents as
    indexed: tuples as lists), through upserts and deletes."""
    cached = BM25Index(BM25Options(path=str(tmp_path / "on")))
    plain = BM25Index(BM25Options(path=str(tmp_path / "off"), document_cache=0))
    for index in (cached, plain):
        index.add(DOCS)
    assert len(cached._table) == 3 and len(plain._table) == 0
    assert answers(cached) == answers(plain)
    assert cached.search("plate", 1)[0].document.metadata["tags"] == ["plate", "laminar"]
    for index in (cached, plain):
        index.add([Document("a", "Supersonic laminar flutter.", metadata={"v": 2})])
        index.delete(["b"])
    assert answers(cached) == answers(plain)
    assert cached.get("a") == plain.get("a") == Document("a", "Supersonic laminar flutter.",
                                                         metadata={"v": 2})


def test_upsert_and_delete_are_never_stale() -> None:
    """After an upsert a hit carries the new text; after a delete the id is gone; the
    table holds one row per live document."""
    index = BM25Index(BM25Options(path=MEMORY))
    index.add(DOCS)
    index.add([Document("a", "Laminar wings, revised.", title="Wings")])
    hit = index.search("laminar", 10)
    assert {h.document.id: h.document.text for h in hit}["a"] == "Laminar wings, revised."
    assert len(index._table) == 3
    index.delete(["a", "zz"])
    assert "a" not in [h.document.id for h in index.search("laminar wings", 10)]
    assert len(index._table) == 2


def test_another_writer_is_read_from_the_store(tmp_path: Path) -> None:
    """A second index object on the folder (another process, say) replaces a document:
    the first one's next search returns the new version, though it cached the old."""
    path = str(tmp_path / "idx")
    mine = BM25Index(BM25Options(path=path))
    mine.add(DOCS)
    assert mine.search("heat", 1)[0].document.text.startswith("Heat transfer")
    other = BM25Index(BM25Options(path=path))
    other.add([Document("b", "Heat shields for reentry.", metadata={"year": 1970})])
    mine._open().reload()  # tantivy also reloads on its own, shortly after a commit
    found = mine.search("heat", 1)[0].document
    assert found == Document("b", "Heat shields for reentry.", metadata={"year": 1970})


def test_close_empties_the_table_and_reopen_refills_it(tmp_path: Path) -> None:
    """Closing a folder index drops the table; the next searches read the store and
    cache what they return, with the same hits as before."""
    index = BM25Index(BM25Options(path=str(tmp_path / "idx")))
    index.add(DOCS)
    before = answers(index)
    index.close()
    assert len(index._table) == 0
    assert answers(index) == before
    assert len(index._table) == 3


def test_the_table_stays_within_its_limit() -> None:
    """``document_cache = 2`` holds at most two documents; hits past it come whole from
    the store."""
    index = BM25Index(BM25Options(path=MEMORY, document_cache=2))
    docs = [Document(f"d{i}", f"shared word number {i}", metadata={"i": i}) for i in range(6)]
    index.add(docs)
    hits = index.search("shared word", 10)
    assert len(index._table) == 2
    assert sorted((h.document.id, h.document.metadata["i"]) for h in hits) == [
        (f"d{i}", i) for i in range(6)]


def test_the_table_holds_copies_not_the_callers_documents() -> None:
    """The table keeps the document as stored (metadata through JSON, a dict of its own):
    changing the caller's metadata after indexing changes no hit."""
    index = BM25Index(BM25Options(path=MEMORY))
    mine = Document("h", "Heat shields.", metadata={"tags": ("a", "b"), "year": 1960})
    index.add([mine])
    mine.metadata["year"] = 0
    found = index.search("heat", 1)[0].document
    assert found.metadata == {"tags": ["a", "b"], "year": 1960}
    assert found.metadata is not mine.metadata


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["add", "delete"]), st.sampled_from("abcd"),
                          st.sampled_from(["alpha beta", "beta gamma", "gamma alpha"])),
                max_size=8))
def test_any_write_sequence_matches_the_uncached_index(
        ops: list[tuple[str, str, str]]) -> None:
    """Any sequence of upserts and deletes: cached and uncached indexes answer alike."""
    cached = BM25Index(BM25Options(path=MEMORY, document_cache=2))
    plain = BM25Index(BM25Options(path=MEMORY, document_cache=0))
    for op, doc_id, text in ops:
        for index in (cached, plain):
            if op == "add":
                index.add([Document(doc_id, text, metadata={"t": text})])
            else:
                index.delete([doc_id])
    for query in ("alpha", "beta", "gamma", "alpha gamma"):
        got, want = cached.search(query, 10), plain.search(query, 10)
        # Ties come in id order, but a merge re-estimates tantivy's average length, and
        # background merges may differ in the two indexes: compare by score, then id.
        assert sorted(((-h.score, h.document.id), h.document) for h in got) == sorted(
            ((-h.score, h.document.id), h.document) for h in want)
    assert len(cached._table) <= 2


def test_table_rows_and_builder() -> None:
    """Rows are 64-bit and distinct; a full table refuses rows; forget drops a document's
    row; builder makes the same value as the checked constructor."""
    table = DocumentTable(1)
    rows = {table.new_row() for _ in range(1000)}
    assert len(rows) == 1000 and all(0 <= row < 2**64 for row in rows)
    table.put(1, Document("a", "text"))
    table.put(2, Document("b", "text"))
    assert table.get(1) == Document("a", "text") and table.get(2) is None
    table.forget(["a"])
    assert len(table) == 0
    bigger = DocumentTable(5)
    bigger.put(1, Document("a", "old"))
    bigger.put(2, Document("a", "new"))  # another version of "a": the old row goes
    assert bigger.get(1) is None and bigger.get(2) == Document("a", "new")
    make = builder(Document)
    assert make("x", "text", "t", {"k": 1}) == Document("x", "text", title="t",
                                                        metadata={"k": 1})
    with pytest.raises(TypeError, match="4 fields"):
        builder(BM25Options)
