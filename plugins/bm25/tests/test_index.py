"""The index: upsert and delete by id, persistence, metadata, filters, concurrency, errors."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import attrs
import pytest
import tantivy
from aieng_bm25 import (
    MEMORY,
    BM25Index,
    BM25Options,
    BM25Retriever,
    IndexLockedError,
)
from aieng_hookspecs.types import Document, Query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core.testing import strategies as aist

DOCS = [
    Document("a", "Laminar flow over a flat plate at high speed.", title="Flat plate",
             metadata={"topic": "flow", "year": 1958, "tags": ["plate", "laminar"]}),
    Document("b", "Heat transfer in turbulent boundary layers.", title="Heat transfer",
             metadata={"topic": "heat", "year": 1960.0, "reviewed": True}),
    Document("c", "Buckling of thin cylindrical shells under pressure.", title="Shells",
             metadata={"topic": "structures", "year": 1962, "reviewed": None,
                       "source": {"journal": "JAS", "volume": 29}}),
]


def ids(hits: list[object]) -> list[str]:
    """The document ids of hits, in order."""
    return [h.document.id for h in hits]  # type: ignore[attr-defined]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder for an index, not yet created."""
    return tmp_path / "idx"


@pytest.fixture
def index(folder: Path) -> BM25Index:
    """An index on disk holding DOCS."""
    built = BM25Index(BM25Options(path=str(folder)))
    assert built.add(DOCS) == 3
    return built


# -- upsert and delete -------------------------------------------------------------------


def test_upsert_replaces_by_id(index: BM25Index) -> None:
    """Indexing an existing id replaces the document: the old text is gone, the count stays."""
    index.add([Document("a", "Supersonic inlet design.", title="Inlets")])
    assert len(index) == 3
    assert index.search("laminar plate", 5) == []
    assert ids(index.search("supersonic inlet", 5)) == ["a"]
    assert index.get("a") == Document("a", "Supersonic inlet design.", title="Inlets")


def test_last_duplicate_in_a_batch_wins(index: BM25Index) -> None:
    """Within one batch, the last document with an id is the one kept."""
    written = index.add([Document("d", "first version"), Document("d", "second version")])
    assert written == 1 and len(index) == 4
    assert index.get("d") == Document("d", "second version")


def test_delete_removes_and_counts(index: BM25Index) -> None:
    """delete removes the documents with those ids, ignores unknown ids, and counts."""
    assert index.delete(["a", "nope", "a"]) == 1
    assert index.delete([]) == 0 and index.delete(["a"]) == 0
    assert len(index) == 2 and index.get("a") is None
    assert index.search("laminar flow plate", 5) == []


def test_long_and_odd_ids(index: BM25Index) -> None:
    """Ids of 100 kB, with spaces, colons or non-ASCII are upserted and deleted exactly."""
    odd = ["x" * 100_000, "a b:c", "東京/1", "a*", "\u0000id"]
    index.add([Document(i, "odd identifier") for i in odd])
    index.add([Document(i, "replaced identifier") for i in odd])
    assert len(index) == 3 + len(odd)
    assert sorted(ids(index.search("identifier", 10))) == sorted(odd)
    assert index.search("odd", 10) == []
    assert index.delete(odd) == len(odd) and len(index) == 3


# -- persistence -------------------------------------------------------------------------


def test_reopen_gives_the_same_results(index: BM25Index, folder: Path) -> None:
    """Closing and reopening an index at the same path gives the same hits and scores;
    upserts and deletes made before closing persist."""
    index.add([Document("b", "Heat transfer in laminar boundary layers, revised.")])
    index.delete(["c"])
    before = [index.search(q, 5) for q in ("laminar", "heat", "shells", "plate flow")]
    index.close()
    reopened = BM25Index(BM25Options(path=str(folder)))
    assert [reopened.search(q, 5) for q in ("laminar", "heat", "shells", "plate flow")] == before
    assert len(reopened) == 2 and reopened.get("c") is None
    assert reopened.get("b") == Document("b", "Heat transfer in laminar boundary layers, "
                                              "revised.")


def test_two_indexes_share_a_folder(index: BM25Index, folder: Path) -> None:
    """A second index on the same folder sees the first one's commits and can write
    between them (the writer lock is held only during a write)."""
    other = BM25Index(BM25Options(path=str(folder)))
    assert len(other) == 3
    other.add([Document("d", "Panel flutter at supersonic speed.")])
    index.add([Document("e", "Flutter of panels.")])
    for each in (index, other):
        each._open().reload()  # tantivy also reloads on its own, shortly after a commit
        assert sorted(ids(each.search("flutter panel", 5))) == ["d", "e"]


def test_delete_refuses_a_lone_string(folder: Path) -> None:
    """``delete("ab")`` is a mistake for ``delete(["ab"])``: it fails, as the pipeline's
    ``delete`` does, rather than deleting the documents ``a`` and ``b`` (one per
    character), and nothing is deleted; the component's ``delete`` refuses it too."""
    retriever = BM25Retriever(BM25Options(path=str(folder)))
    index = retriever.index
    index.add([*DOCS, Document("ab", "Another document.")])
    for ids in ("ab", b"ab"):
        with pytest.raises(TypeError, match=r"\[id\]"):
            index.delete(ids)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"\[id\]"):
            retriever.delete(ids)  # type: ignore[arg-type]
    assert len(index) == 4 and index.get("a") is not None and index.get("b") is not None
    assert index.delete(["ab"]) == 1 and index.get("ab") is None and len(index) == 3


def test_delete_sees_another_writers_latest_commit(index: BM25Index, folder: Path) -> None:
    """A delete removes a document another index on the folder committed a moment ago,
    before this one's searcher reloaded on its own, and counts it."""
    other = BM25Index(BM25Options(path=str(folder)))
    assert len(other) == 3
    index.add([Document("d", "Panel flutter at supersonic speed.")])
    assert other.delete(["d", "a", "never"]) == 2
    assert other.delete(["d"]) == 0
    for each in (index, other):
        each._open().reload()
        assert len(each) == 2 and each.get("d") is None and each.get("a") is None


def test_locked_index_fails_clearly(index: BM25Index, folder: Path) -> None:
    """A write while another writer holds the folder waits ``lock_timeout``, then fails
    naming the path, the limit and its value; nothing is written."""
    index = BM25Index(BM25Options(path=str(folder), lock_timeout=0.2))
    holder = tantivy.Index.open(str(folder)).writer(heap_size=15 * 1024 * 1024, num_threads=1)
    try:
        with pytest.raises(IndexLockedError, match="another writer") as caught:
            index.add([Document("d", "never written")])
    finally:
        holder.wait_merging_threads()
    assert "0.2 s (lock_timeout" in str(caught.value) and str(folder) in str(caught.value)
    assert index.get("d") is None
    index.add([Document("d", "written now")])
    assert index.get("d") is not None


def test_memory_index_survives_close() -> None:
    """An in-memory index keeps its documents when closed (it lives as long as the object)."""
    memory = BM25Index(BM25Options(path=MEMORY))
    memory.add(DOCS)
    memory.close()
    assert len(memory) == 3 and memory.folder is None


# -- bad folders and documents -----------------------------------------------------------


def test_refuses_a_file_or_a_folder_of_other_files(tmp_path: Path) -> None:
    """The path must be an index folder or a new/empty one: never a file, never a folder
    of the user's own files; nested missing folders are created."""
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        BM25Index(BM25Options(path=str(tmp_path / "file.txt"))).open()
    with pytest.raises(ValueError, match="not a tantivy index"):
        BM25Index(BM25Options(path=str(tmp_path))).open()
    nested = tmp_path / "a" / "b" / "c"
    BM25Index(BM25Options(path=str(nested))).open()
    assert (nested / "meta.json").exists()


@pytest.mark.parametrize("placeholders", [(".gitkeep",), (".keep", ".gitignore"),
                                          (".DS_Store", "Thumbs.db", "desktop.ini")])
def test_a_folder_of_placeholder_files_opens(tmp_path: Path,
                                             placeholders: tuple[str, ...]) -> None:
    """A folder holding only placeholder files (a .gitkeep that keeps it in git, the files
    macOS and Windows drop into folders) is an empty folder: the index is made there, the
    placeholders kept, and it reopens; one more file of the user's is still refused."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in placeholders:
        (folder / name).write_bytes(b"placeholder")
    index = BM25Index(BM25Options(path=str(folder)))
    assert index.add(DOCS) == 3
    index.close()
    reopened = BM25Index(BM25Options(path=str(folder)))
    assert ids(reopened.search("laminar plate", 1)) == ["a"]
    reopened.close()
    assert all((folder / name).read_bytes() == b"placeholder" for name in placeholders)
    other = tmp_path / "other"
    other.mkdir()
    for name in (*placeholders, "notes.txt"):
        (other / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="not a tantivy index"):
        BM25Index(BM25Options(path=str(other))).open()


def test_a_folder_tantivy_is_creating_an_index_in_opens(tmp_path: Path) -> None:
    """A folder holding only what tantivy writes before an index's meta.json (its file
    list, a temporary file of an atomic write: another process creating the index at this
    very moment, or one killed while it did) is no folder of other files: it opens."""
    folder = tmp_path / "idx"
    BM25Index(BM25Options(path=str(folder))).open()
    (folder / "meta.json").unlink()
    (folder / ".tmpQ7eMXZ").write_bytes(b"{")
    assert (folder / ".managed.json").exists()
    index = BM25Index(BM25Options(path=str(folder)))
    assert index.add(DOCS) == 3 and ids(index.search("laminar plate", 1)) == ["a"]
    index.close()
    assert len(BM25Index(BM25Options(path=str(folder)))) == 3


def test_refuses_an_index_of_another_schema(tmp_path: Path) -> None:
    """A tantivy index with another schema (another analyzer version, another tool) fails
    to open with a message saying what to do."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("body", stored=True)
    tantivy.Index(builder.build(), path=str(tmp_path))
    with pytest.raises(ValueError, match="another schema.*new folder"):
        BM25Index(BM25Options(path=str(tmp_path))).open()


@pytest.mark.parametrize(("bad", "message"), [
    (Document("s", "lone \ud800 surrogate"), "'s': text is not valid Unicode"),
    (Document("t", "ok", title="\udfff"), "'t': title is not valid Unicode"),
    (Document("n", "ok", metadata={"x": float("nan")}), "'n': metadata is not JSON"),
    (Document("o", "ok", metadata={"x": object()}), "'o': metadata is not JSON"),
])
def test_bad_documents_fail_the_batch(index: BM25Index, bad: Document, message: str) -> None:
    """A document that cannot be stored fails the whole batch with its id named, and
    nothing of the batch is written."""
    with pytest.raises(ValueError, match=message):
        index.add([Document("fine", "a fine document"), bad])
    assert len(index) == 3 and index.get("fine") is None


class _FailingWriter:
    """A tantivy writer whose second ``add_document`` raises, as a write interrupted in
    the middle of a batch (KeyboardInterrupt, a disk error) does."""

    def __init__(self, writer: tantivy.IndexWriter) -> None:
        self.writer, self.added = writer, 0

    def add_document(self, row: tantivy.Document) -> None:
        self.added += 1
        if self.added == 2:
            raise KeyboardInterrupt
        self.writer.add_document(row)

    def __getattr__(self, name: str) -> object:
        return getattr(self.writer, name)


@pytest.mark.parametrize("scorer", ["tantivy", "impacts"])
def test_a_write_interrupted_mid_batch_writes_nothing(folder: Path, scorer: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is one commit: interrupted after some of its documents, it is rolled back
    whole (README, "Writes"), the index answers as before, in this process and after a
    reopen, and the next write works (the writer's lock was released)."""
    index = BM25Index(BM25Options(path=str(folder), scorer=scorer))
    index.add(DOCS)
    real = BM25Index._writer
    monkeypatch.setattr(BM25Index, "_writer",
                        lambda self, tantivy_index: _FailingWriter(real(self, tantivy_index)))
    batch = [attrs.evolve(DOCS[0], text="replaced text"), Document("new", "new text")]
    with pytest.raises(KeyboardInterrupt):
        index.add(batch)
    monkeypatch.undo()
    for reader in (index, BM25Index(BM25Options(path=str(folder), scorer=scorer))):
        assert len(reader) == 3 and reader.get("new") is None
        assert reader.get("a") == DOCS[0] and ids(reader.search("text", 5)) == []
    assert index.add(batch) == 2 and ids(index.search("new text", 5))[0] == "new"


# -- documents round-trip; metadata filters ----------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(aist.documents(), min_size=1, max_size=5))
def test_documents_round_trip(docs: list[Document]) -> None:
    """Any document comes back from the index equal to what was indexed: id, text,
    title and JSON metadata (key order included)."""
    memory = BM25Index(BM25Options(path=MEMORY))
    memory.add(docs)
    latest = {d.id: d for d in docs}
    for doc_id, doc in latest.items():
        got = memory.get(doc_id)
        assert got == doc and got is not None
        assert list(got.metadata) == list(doc.metadata)


def test_hits_carry_the_whole_document(index: BM25Index) -> None:
    """A hit's document has the indexed id, text, title and metadata."""
    (hit,) = index.search("buckling shells", 1)
    assert hit.document == DOCS[2] and hit.document.metadata["source"] == {
        "journal": "JAS", "volume": 29}


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, ["a", "b", "c"]),
    ({"topic": "heat"}, ["b"]),
    ({"topic": "Heat"}, []),  # exact: case matters
    ({"year": 1960}, ["b"]),  # 1960.0 was indexed: JSON numbers compare by value
    ({"year": 1958.0}, ["a"]),
    ({"reviewed": True}, ["b"]),
    ({"reviewed": 1}, []),  # JSON true is not 1
    ({"reviewed": None}, ["a", "c"]),  # a missing key reads as null (as in vectors)
    ({"reviewed": None, "topic": "flow"}, ["a"]),
    ({"reviewed": None, "year": 1962}, ["c"]),
    ({"topic": None}, []),
    ({"tags": ["plate", "laminar"]}, ["a"]),
    ({"tags": ("plate", "laminar")}, ["a"]),  # a tuple is a JSON list
    ({"tags": "plate"}, []),  # equality, not membership
    ({"source": {"volume": 29, "journal": "JAS"}}, ["c"]),  # key order does not matter
    ({"topic": "heat", "year": 1960}, ["b"]),
    ({"topic": "heat", "year": 1958}, []),
    ({"missing": "x"}, []),
    ({"topic": float("nan")}, []),  # not JSON: equals nothing
    ({"topic": {1, 2}}, []),
])
def test_filters_are_metadata_equality(index: BM25Index, filters: dict[str, object],
                                       expected: list[str]) -> None:
    """Query.filters keep the hits whose top-level metadata equals every filter value
    (JSON equality), and leave the BM25 scores as they were."""
    query = "flow heat transfer buckling plate shells"
    unfiltered = {h.document.id: h.score for h in index.search(query, 10)}
    hits = index.search(query, 10, filters)
    assert sorted(ids(hits)) == expected
    assert all(h.score == pytest.approx(unfiltered[h.document.id]) for h in hits)


@pytest.mark.parametrize("k", [1, 3, 50])
def test_null_filter_finds_documents_ranked_low(folder: Path, k: int) -> None:
    """A null filter holds for documents without the key however far down the ranking
    they are (the search widens past 4 k hits), in the unfiltered order and scores."""
    index = BM25Index(BM25Options(path=str(folder)))
    index.add([Document(f"d{i:02d}", "wing " * (30 - i) + "lift", metadata=(
        {"draft": i % 2 == 0} if i < 25 else {})) for i in range(30)])
    unfiltered = index.search("wing", 30)
    expected = [h for h in unfiltered if "draft" not in h.document.metadata]
    hits = index.search("wing", k, {"draft": None})
    assert ids(hits) == ids(expected)[:k] and [h.rank for h in hits] == list(
        range(1, len(hits) + 1))
    assert [h.score for h in hits] == [h.score for h in expected[:k]]


# -- scoring -----------------------------------------------------------------------------


def test_title_boost(folder: Path) -> None:
    """A title match counts with title_boost; 0 searches the text only."""
    docs = [Document("t", "nothing here", title="Flutter"), Document("x", "flutter")]
    plain = BM25Index(BM25Options(path=MEMORY, title_boost=0.0))
    plain.add(docs)
    assert ids(plain.search("flutter", 5)) == ["x"]
    boosted = BM25Index(BM25Options(path=MEMORY, title_boost=5.0))
    boosted.add(docs)
    assert ids(boosted.search("flutter", 5)) == ["t", "x"]


def test_k_bounds(index: BM25Index) -> None:
    """k larger than the index returns every match; k below 1 returns nothing."""
    assert len(index.search("flow heat buckling", 1_000_000_000)) == 3
    assert index.search("flow", 0) == []


def test_repeated_query_words_weigh_more(index: BM25Index) -> None:
    """A word repeated in the query counts that many times (BM25's query-term frequency)."""
    once = index.search("heat shells", 3)
    twice = index.search("heat shells shells", 3)
    assert {h.document.id: h.score for h in twice}["c"] == pytest.approx(
        2 * {h.document.id: h.score for h in once}["c"], rel=1e-6)


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_searches_and_writes(index: BM25Index) -> None:
    """Searches from many threads while other threads upsert and delete never fail and
    always see a committed state (the document is there with one of its versions)."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                hits = index.search("laminar flow plate", 3)
                assert hits and hits[0].document.id == "a"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def write(n: int) -> None:
        try:
            for i in range(5):
                index.add([attrs.evolve(DOCS[0], text=f"Laminar flow over a flat plate {n}.{i}")])
                index.add([Document(f"tmp{n}", "temporary")])
                index.delete([f"tmp{n}"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=search) for _ in range(4)]
    writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors, errors
    assert len(index) == 3


@pytest.mark.anyio
async def test_concurrent_retrieves_through_the_component(folder: Path) -> None:
    """Many retrieves in flight at once, through the component's @blocking impls run in
    worker threads, give the same hits as one at a time."""
    import anyio

    component = BM25Retriever(BM25Options(path=str(folder)))
    await anyio.to_thread.run_sync(component.aieng_index, DOCS)
    queries = [Query(q) for q in ("flow", "heat", "shells", "plate", "pressure")] * 8
    sequential = [component.aieng_retrieve(q, 3) for q in queries]
    results: list[object] = [None] * len(queries)

    async def one(i: int) -> None:
        results[i] = await anyio.to_thread.run_sync(component.aieng_retrieve, queries[i], 3)

    async with anyio.create_task_group() as group:
        for i in range(len(queries)):
            group.start_soon(one, i)
    assert results == sequential
    assert component.delete(["a"]) == 1
    component.close()


# -- options, laziness -------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"path": ""}, ValueError), ({"path": "  "}, ValueError), ({"path": 3}, TypeError),
    ({"path": "x", "title_boost": -1.0}, ValueError),
    ({"path": "x", "title_boost": float("inf")}, ValueError),
    ({"path": "x", "title_boost": True}, TypeError),
    ({"path": "x", "writer_heap_mb": 10}, ValueError),
    ({"path": "x", "writer_heap_mb": 40, "writer_threads": 3}, ValueError),
    ({"path": "x", "writer_heap_mb": 64.0}, TypeError),
    ({"path": "x", "writer_threads": 0}, ValueError),
])
def test_options_validate(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Options reject a blank path, a bad boost, and a writer heap under tantivy's 15 MiB
    per thread."""
    with pytest.raises(error):
        BM25Options(**kwargs)  # type: ignore[arg-type]


def test_import_does_not_load_tantivy() -> None:
    """Importing the plugin (what ``aieng plugins`` does) imports no tantivy (nor numpy,
    which only the impacts scorer needs), and building a component does not either: the
    index opens on first use."""
    code = ("import sys, aieng_bm25\n"
            "aieng_bm25.BM25Retriever(aieng_bm25.BM25Options(path=':memory:'))\n"
            "assert 'tantivy' not in sys.modules, 'tantivy imported'\n"
            "assert 'numpy' not in sys.modules, 'numpy imported'\n")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True,
                   cwd=Path(__file__).parents[1])
