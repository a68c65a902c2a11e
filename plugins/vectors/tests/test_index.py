"""``vectors``: embedding through the pipeline, persistence, upsert / delete, filters."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest
from aieng_hookspecs.types import Document, Hit, Query
from aieng_vectors import VectorIndex, VectorsOptions

from aieng_core import HookError, Kernel

DOCS = [
    Document("rrf", "Reciprocal rank fusion merges ranked lists.", metadata={"lang": "en"}),
    Document("bm25", "BM25 scores term frequency and inverse document frequency.",
             metadata={"lang": "en", "draft": True}),
    Document("hnsw", "HNSW is a layered graph for nearest neighbour search.",
             metadata={"lang": "en", "draft": 1}),
    Document("lora", "LoRA learns low-rank updates to weight matrices.",
             title="Finetuning", metadata={"lang": "de"}),
    Document("quant", "Quantization stores int8 weights to speed up inference."),
]


def ids(hits: list[Hit]) -> list[str]:
    return [hit.document.id for hit in hits]


def index_with(embedder: Any, **options: Any) -> VectorIndex:
    return VectorIndex(VectorsOptions(**options), embedder=embedder.aieng_embed)


@pytest.mark.anyio
async def test_embeds_through_the_pipeline_in_batches(
    aieng_kernel: Kernel, hashing_embedder: Any
) -> None:
    """Without an injected embedder, documents and queries are embedded through
    ``context.embed`` (the pipeline's ``aieng_embed``), in batches of ``batch_size``."""
    index = VectorIndex(VectorsOptions(batch_size=2))
    pipeline = aieng_kernel.compose({"dense": index, "embedder": hashing_embedder},
                                    stages=["retrieve"], stage={"retrieve": {"k": 2}})
    assert await pipeline.index(DOCS) == len(DOCS)
    assert [len(batch) for batch in hashing_embedder.calls] == [2, 2, 1]
    assert hashing_embedder.calls[1][1] == "Finetuning\n\nLoRA learns low-rank updates to " \
        "weight matrices."  # the title is embedded with the text
    result = await pipeline.run("layered graph for nearest neighbour search")
    assert ids(list(result.retrieved))[0] == "hnsw"
    assert all(hit.source == "vectors" for hit in result.retrieved)
    assert len(result.retrieved) == 2
    assert hashing_embedder.calls[-1] == ["layered graph for nearest neighbour search"]


@pytest.mark.anyio
async def test_without_any_embedder_says_what_to_install(aieng_kernel: Kernel) -> None:
    """A pipeline with no embedding component, on a kernel without the default embedder,
    fails to index with an error naming the fix."""
    pipeline = aieng_kernel.compose({"dense": VectorIndex()}, stages=["retrieve"])
    with pytest.raises(HookError, match="aieng-transformers"):
        await pipeline.index(DOCS)


@pytest.mark.anyio
async def test_empty_query_and_empty_index_embed_nothing(hashing_embedder: Any) -> None:
    """An empty index or a blank query returns no hits without calling the embedder."""
    index = index_with(hashing_embedder)
    assert await index.aieng_retrieve(Query("anything"), 3) == []
    await index.aieng_index(DOCS)
    calls = len(hashing_embedder.calls)
    assert await index.aieng_retrieve(Query("  \n"), 3) == []
    assert len(hashing_embedder.calls) == calls
    assert await index.aieng_retrieve(Query("anything"), 0) == []  # not a numpy error


@pytest.mark.anyio
@pytest.mark.parametrize(("exact_below", "engine"),
                         [(0, "usearch"), (0, "hnswlib"), (50_000, "usearch")],
                         ids=["hnsw", "hnswlib", "exact"])
async def test_upsert_replaces_and_delete_removes(hashing_embedder: Any,
                                                  exact_below: int, engine: str) -> None:
    """Indexing an existing id replaces it; deleting removes it, the rest stay findable."""
    index = index_with(hashing_embedder, exact_below=exact_below, engine=engine)
    await index.aieng_index(DOCS)
    new = attrs.evolve(DOCS[0], text="Quokka marmalade zeppelin.")
    assert await index.upsert([new, attrs.evolve(new, text="Quokka marmalade zeppelin!")]) == 1
    assert len(index) == len(DOCS)
    hits = await index.aieng_retrieve(Query("quokka marmalade zeppelin"), 1)
    assert hits[0].document.text == "Quokka marmalade zeppelin!"  # the batch's last wins
    assert await index.delete(["bm25", "rrf", "nope", "rrf"]) == 2
    assert len(index) == len(DOCS) - 2 and "bm25" not in index
    assert await index.delete(["bm25"]) == 0
    assert await index.get("rrf") is None
    for doc in DOCS[2:]:  # rows moved by the deletes still map to their documents
        hits = await index.aieng_retrieve(Query(doc.text), 3)
        assert ids(hits)[0] == doc.id
        assert hits[0].document == doc
    assert set(ids(await index.aieng_retrieve(Query("weights"), 10))) == {"hnsw", "lora",
                                                                          "quant"}


@pytest.mark.anyio
@pytest.mark.parametrize(("exact_below", "engine"),
                         [(0, "usearch"), (0, "hnswlib"), (50_000, "usearch")],
                         ids=["hnsw", "hnswlib", "exact"])
async def test_metadata_filters(hashing_embedder: Any, exact_below: int,
                                engine: str) -> None:
    """Filters keep documents whose metadata equals every filter value; booleans are not
    numbers, and a missing key reads as null."""
    index = index_with(hashing_embedder, exact_below=exact_below, engine=engine)
    await index.aieng_index(DOCS)

    async def find(**filters: Any) -> set[str]:
        return set(ids(await index.aieng_retrieve(Query("weights graph fusion", filters=filters),
                                                  10)))

    assert await find(lang="en") == {"rrf", "bm25", "hnsw"}
    assert await find(lang="de") == {"lora"}
    assert await find(lang="en", draft=True) == {"bm25"}
    assert await find(draft=1) == {"hnsw"}
    assert await find(draft=1.0) == {"hnsw"}
    assert await find(lang=None) == {"quant"}
    assert await find(lang="fr") == set()


@pytest.mark.anyio
async def test_filters_on_the_hnsw_path_match_an_exact_scan(table_embedder: Any) -> None:
    """With HNSW and a filter that keeps a minority of documents, the search widens its
    candidate list until it has k hits, agreeing with an exact filtered scan."""
    import numpy as np

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((400, 16))
    table = {f"d{i}": vectors[i].tolist() for i in range(400)}
    table["query"] = rng.standard_normal(16).tolist()
    docs = [Document(f"d{i}", f"d{i}", metadata={"shard": i % 10}) for i in range(400)]
    embedder = table_embedder(table)
    approx = index_with(embedder, exact_below=20)
    exact = index_with(embedder)
    for index in (approx, exact):
        await index.aieng_index(docs)
    assert approx.uses_hnsw and not exact.uses_hnsw
    query = Query("query", filters={"shard": 3})
    got = await approx.aieng_retrieve(query, 10)
    want = await exact.aieng_retrieve(query, 10)
    assert len(got) == 10 and all(hit.document.metadata["shard"] == 3 for hit in got)
    assert len(set(ids(got)) & set(ids(want))) >= 9


@pytest.mark.anyio
async def test_switches_to_hnsw_at_the_threshold(hashing_embedder: Any) -> None:
    """Below ``exact_below`` vectors search is exact; from it on, HNSW; well below it
    again (half), exact once more."""
    index = index_with(hashing_embedder, exact_below=4)
    await index.aieng_index(DOCS[:3])
    assert not index.uses_hnsw
    await index.aieng_index(DOCS[3:])
    assert index.uses_hnsw
    assert ids(await index.aieng_retrieve(Query(DOCS[4].text), 1)) == ["quant"]
    await index.delete([d.id for d in DOCS[:4]])
    assert not index.uses_hnsw
    assert ids(await index.aieng_retrieve(Query(DOCS[4].text), 1)) == ["quant"]


@pytest.mark.anyio
@pytest.mark.parametrize(("exact_below", "engine"),
                         [(0, "usearch"), (0, "hnswlib"), (50_000, "usearch")],
                         ids=["hnsw", "hnswlib", "exact"])
async def test_persists_across_close_and_reopen(
    aieng_kernel: Kernel, hashing_embedder: Any, tmp_path: Path, exact_below: int,
    engine: str) -> None:
    """A folder index written by one pipeline, closed, is found whole by a new component
    on the same path: ids, texts, metadata, deletes and replacements included."""
    path = tmp_path / "idx"
    options = VectorsOptions(path=str(path), exact_below=exact_below, engine=engine)
    first = aieng_kernel.compose({"dense": VectorIndex(options), "emb": hashing_embedder},
                                 stages=["retrieve"])
    await first.index(DOCS)
    dense = first.components["dense"]
    assert isinstance(dense, VectorIndex)
    await dense.delete(["rrf"])
    await dense.upsert([attrs.evolve(DOCS[1], text="BM25 was replaced by a quokka.")])
    await first.aclose()
    assert (path / "index.json").exists() and (path / "journal.jsonl").stat().st_size == 0

    reopened = VectorIndex(options, embedder=hashing_embedder.aieng_embed)
    second = aieng_kernel.compose({"dense": reopened}, stages=["retrieve"])
    await second.open()
    assert len(reopened) == len(DOCS) - 1 and "rrf" not in reopened
    assert reopened.uses_hnsw == (exact_below == 0)
    hits = await reopened.aieng_retrieve(Query("replaced by a quokka"), 1)
    assert hits[0].document == attrs.evolve(DOCS[1], text="BM25 was replaced by a quokka.")
    assert (await reopened.aieng_retrieve(Query(DOCS[3].text), 1))[0].document == DOCS[3]
    await reopened.aieng_index([Document("new", "A fresh document after reopening.")])
    await second.aclose()
    third = VectorIndex(options, embedder=hashing_embedder.aieng_embed)
    assert await third.get("new") == Document("new", "A fresh document after reopening.")
    await third.aclose()


@pytest.mark.anyio
async def test_a_crash_loses_no_returned_write(hashing_embedder: Any, tmp_path: Path) -> None:
    """Every write that returned is in the journal: a copy of the folder taken while the
    index is open (as a crash leaves it), with a torn last line, loads every document."""
    live = index_with(hashing_embedder, path=str(tmp_path / "live"))
    await live.aieng_index(DOCS[:3])
    await live.flush()  # a snapshot, then journalled writes on top of it
    await live.aieng_index(DOCS[3:])
    await live.delete(["bm25"])
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "live", crashed)
    torn = b'{"gen": 1, "op": "upsert", "documents": [{"id": "half'
    journal = crashed / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + torn)
    await live.aclose()

    recovered = index_with(hashing_embedder, path=str(crashed))
    assert await recovered.get("quant") == DOCS[4]
    assert len(recovered) == len(DOCS) - 1 and "bm25" not in recovered
    await recovered.aieng_index([Document("after", "Written after the recovery.")])
    await recovered.aclose()
    again = index_with(hashing_embedder, path=str(crashed))
    assert await again.get("after") is not None and len(again) == len(DOCS)
    await again.aclose()


@pytest.mark.anyio
async def test_one_component_per_folder(hashing_embedder: Any, tmp_path: Path) -> None:
    """A second component opening a folder that another holds open fails, naming why."""
    first = index_with(hashing_embedder, path=str(tmp_path))
    await first.aieng_index(DOCS)
    second = index_with(hashing_embedder, path=str(tmp_path))
    with pytest.raises(RuntimeError, match="open in another component"):
        await second.aieng_retrieve(Query("x"), 1)
    await first.aclose()
    third = index_with(hashing_embedder, path=str(tmp_path))
    assert len(await third.aieng_retrieve(Query("fusion"), 10)) == len(DOCS)
    await third.aclose()


@pytest.mark.anyio
async def test_close_during_a_load_releases_the_folder(hashing_embedder: Any,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``aclose`` while the folder is still loading (a big index, a close from another
    task) waits for the load and then releases the folder: it was held until the process
    exited, so no other component could open it."""
    import threading

    import anyio
    import anyio.lowlevel
    import anyio.to_thread
    from aieng_vectors._store import VectorStore

    path = str(tmp_path / "idx")
    seed = index_with(hashing_embedder, path=path)
    await seed.aieng_index(DOCS[:2])
    await seed.aclose()
    entered, release = threading.Event(), threading.Event()
    real_open = VectorStore.open

    def slow_open(store: VectorStore, folder: Path) -> None:
        entered.set()
        release.wait(10)
        real_open(store, folder)

    monkeypatch.setattr(VectorStore, "open", slow_open)
    index = index_with(hashing_embedder, path=path)
    failures: list[BaseException] = []

    async def load() -> None:
        try:
            await index.get("rrf")
        except RuntimeError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(load)
        await anyio.to_thread.run_sync(entered.wait, 10)
        group.start_soon(index.aclose)
        for _ in range(1000):  # until aclose has begun (it waits for the load next)
            if index._closed:
                break
            await anyio.lowlevel.checkpoint()
        assert index._closed
        release.set()
    monkeypatch.setattr(VectorStore, "open", real_open)
    reopened = index_with(hashing_embedder, path=path)
    assert len(await reopened.aieng_retrieve(Query("fusion"), 10)) == 2, failures
    await reopened.aclose()


@pytest.mark.anyio
async def test_delete_refuses_a_lone_string(hashing_embedder: Any) -> None:
    """``delete("42")`` is no list of ids: it deleted the documents "4" and "2"."""
    index = index_with(hashing_embedder)
    await index.aieng_index([Document(id=i, text=f"text {i}") for i in ("4", "2", "42")])
    with pytest.raises(TypeError, match=r"\['42'\]"):
        await index.delete("42")
    assert len(index) == 3
    assert await index.delete(["42"]) == 1 and len(index) == 2


@pytest.mark.anyio
async def test_refuses_another_model_or_dimension(hashing_embedder: Any,
                                                  tmp_path: Path) -> None:
    """A folder built with one embedding model is not searched with another's vectors, and
    vectors of another dimension are refused."""
    first = index_with(hashing_embedder, path=str(tmp_path), model="hash-64")
    await first.aieng_index(DOCS)
    await first.aclose()
    other = index_with(hashing_embedder, path=str(tmp_path), model="minilm")
    with pytest.raises(ValueError, match="built with embedding model 'hash-64'"):
        await other.aieng_retrieve(Query("x"), 1)

    index = index_with(hashing_embedder)
    await index.aieng_index(DOCS)
    index._embedder = type(hashing_embedder)(dim=8).aieng_embed
    with pytest.raises(ValueError, match="dimension 8"):
        await index.aieng_index([Document("short", "short vectors")])


@pytest.mark.anyio
async def test_bad_embedder_output_is_refused(table_embedder: Any) -> None:
    """Vectors with NaN, or too few of them, fail the call and store nothing."""
    index = index_with(table_embedder({"a": [1.0, float("nan")], "b": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="NaN"):
        await index.aieng_index([Document("a", "a")])
    assert len(index) == 0
    short = VectorIndex(embedder=lambda texts, model: [[1.0, 0.0]])
    with pytest.raises(ValueError, match="1 vectors for 2 texts"):
        await short.aieng_index([Document("a", "a"), Document("b", "b")])


@pytest.mark.anyio
async def test_a_nan_vector_names_its_document(table_embedder: Any) -> None:
    """In a batch, the document whose vector holds NaN or an infinity is named (an
    embedder that gives NaN for one odd text among thousands), and nothing is written."""
    table = {"ok": [1.0, 2.0], "bad": [float("inf"), 1.0], "also": [3.0, 1.0]}
    index = index_with(table_embedder(table))
    with pytest.raises(ValueError, match=r"NaN or infinite values for document 'bad' "
                                         r"\(text 2 of 3\); nothing was written"):
        await index.aieng_index([Document(t, t) for t in ("ok", "bad", "also")])
    assert len(index) == 0


@pytest.mark.anyio
async def test_ties_are_broken_by_id(table_embedder: Any) -> None:
    """Documents at the same distance come back in id order, whatever the insertion
    order, so equal inputs give equal outputs."""
    table = {"z": [1.0, 0.0], "a": [1.0, 0.0], "m": [1.0, 0.0], "q": [2.0, 0.0],
             "far": [0.0, 1.0]}
    index = index_with(table_embedder(table))
    await index.aieng_index([Document(t, t) for t in ("z", "far", "a", "m")])
    hits = await index.aieng_retrieve(Query("q"), 2)
    assert ids(hits) == ["a", "m"] and hits[0].score == pytest.approx(1.0)
    assert [hit.rank for hit in hits] == [1, 2]


@pytest.mark.anyio
async def test_the_graph_is_built_across_writes(table_embedder: Any) -> None:
    """Reaching ``exact_below`` starts the HNSW graph without building it whole in that
    call: each write inserts a slice of the waiting rows, queries stay exact (and right)
    until the graph is complete, and ``flush`` finishes it at once."""
    import numpy as np

    rng = np.random.default_rng(3)
    table = {f"d{i}": row for i, row in enumerate(rng.standard_normal((3_300, 8)).tolist())}
    embedder = table_embedder(table)
    docs = [Document(f"d{i}", f"d{i}") for i in range(3_300)]
    index = index_with(embedder, exact_below=3_000, batch_size=1_000)
    for start in range(0, 3_000, 100):
        await index.aieng_index(docs[start:start + 100])
    assert not index.uses_hnsw  # 3,000 rows waiting, 2,048 inserted by the crossing write
    assert ids(await index.aieng_retrieve(Query("d5"), 1)) == ["d5"]
    await index.aieng_index(docs[3_000:3_100])
    assert index.uses_hnsw  # the next write inserted the rest
    assert ids(await index.aieng_retrieve(Query("d3050"), 1)) == ["d3050"]

    fresh = index_with(embedder, exact_below=3_000, batch_size=1_000)
    for start in range(0, 3_000, 100):
        await fresh.aieng_index(docs[start:start + 100])
    assert not fresh.uses_hnsw
    await fresh.flush()
    assert fresh.uses_hnsw


@pytest.mark.anyio
async def test_a_lone_surrogate_is_stored_and_read_back(hashing_embedder: Any,
                                                        tmp_path: Path) -> None:
    """A document holding a lone surrogate (a ``str`` may, UTF-8 may not) is written to a
    folder as it is in memory, and read back equal from the journal and the snapshot."""
    doc = Document("odd\udc80id", "bytes \udcff decoded with surrogateescape",
                   title="t\ud800", metadata={"name\udc81": "v\udfff"})
    live = index_with(hashing_embedder, path=str(tmp_path / "live"))
    await live.aieng_index([doc, Document("plain", "nothing odd here")])
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "live", crashed)  # the journal only, as a crash leaves it
    await live.aclose()  # writes a snapshot

    for path in (tmp_path / "live", crashed):
        reopened = index_with(hashing_embedder, path=str(path))
        assert await reopened.get(doc.id) == doc and len(reopened) == 2
        await reopened.aclose()


@pytest.mark.anyio
async def test_a_write_finishing_after_close_fails_loudly(hashing_embedder: Any,
                                                          tmp_path: Path) -> None:
    """A write still embedding when the index closes (``Pipeline.aclose`` while an
    ``index`` is in flight) is refused with an error, never reported written while it only
    reached memory: a reopened index holds what the caller was told."""
    import anyio

    path = str(tmp_path / "idx")
    seed = index_with(hashing_embedder, path=path)
    await seed.aieng_index(DOCS[:2])
    await seed.aclose()
    entered, release = anyio.Event(), anyio.Event()

    async def slow_embed(texts: Any, model: str | None) -> Any:
        entered.set()
        await release.wait()
        return hashing_embedder.aieng_embed(texts, model)

    index = VectorIndex(VectorsOptions(path=path), embedder=slow_embed)
    assert await index.get("rrf") is not None  # opens the folder
    outcome: list[object] = []

    async def write() -> None:
        try:
            outcome.append(await index.aieng_index([DOCS[4]]))
        except RuntimeError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(write)
        await entered.wait()
        await index.aclose()
        release.set()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError), outcome
    assert "closed" in str(outcome[0])
    reopened = index_with(hashing_embedder, path=path)
    assert await reopened.get("quant") is None and len(reopened) == 2
    await reopened.aclose()


# A process whose journal append fails halfway (the disk fills: here a file-size limit,
# which makes the write fail with EFBIG past it), then writes again once there is room,
# then dies without closing.
_FULL_DISK = """
import os, resource, signal, sys
from pathlib import Path
from aieng_hookspecs.types import Document
from aieng_vectors import VectorsOptions
from aieng_vectors._store import VectorStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG
root = Path(sys.argv[1])
store = VectorStore(VectorsOptions())
store.open(root)
store.upsert([Document("one", "first")], [[1.0, 0.0]])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
size = (root / "journal.jsonl").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
try:
    store.upsert([Document("two", "x" * 5000)], [[0.0, 1.0]])
except OSError:
    print("refused", "two" in store)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print("written", store.upsert([Document("three", "third")], [[1.0, 1.0]]))
os._exit(0)
"""


@pytest.mark.anyio
async def test_a_failed_append_loses_no_later_write(hashing_embedder: Any,
                                                    tmp_path: Path) -> None:
    """A journal append that fails halfway (a full disk) leaves no torn line behind it:
    the writes that returned after it, once the disk had room again, survive a crash
    (a torn line in the middle would end the journal at the next open)."""
    import sys

    import anyio

    path = tmp_path / "idx"
    done = await anyio.run_process([sys.executable, "-c", _FULL_DISK, str(path)])
    assert done.stdout.split() == [b"refused", b"False", b"written", b"1"], done.stderr
    reopened = index_with(hashing_embedder, path=str(path))
    assert await reopened.get("three") == Document("three", "third")
    assert await reopened.get("one") is not None and len(reopened) == 2
    await reopened.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("engine", ["usearch", "hnswlib"])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
async def test_a_damaged_graph_file_is_rebuilt(hashing_embedder: Any, tmp_path: Path,
                                               engine: str, damage: str) -> None:
    """The HNSW graph is derived from the snapshot's vectors: a graph file cut short (as a
    power cut can leave a file not yet on disk) is rebuilt from them, as a stale one is,
    instead of making the whole index unopenable."""
    path = tmp_path / "idx"
    options = {"path": str(path), "exact_below": 0, "engine": engine}
    first = index_with(hashing_embedder, **options)
    await first.aieng_index(DOCS)
    await first.aclose()
    graph = next(path.glob("gen-*/hnsw.usearch"))
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")

    reopened = index_with(hashing_embedder, **options)
    hits = await reopened.aieng_retrieve(Query(DOCS[2].text), 1)
    assert ids(hits) == ["hnsw"] and reopened.uses_hnsw and len(reopened) == len(DOCS)
    await reopened.aieng_index([Document("new", "A document after the repair.")])
    await reopened.aclose()
    again = index_with(hashing_embedder, **options)
    assert ids(await again.aieng_retrieve(Query("after the repair"), 1)) == ["new"]
    await again.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("fails", ["before_the_switch", "after_the_switch"])
async def test_a_failed_compaction_fails_no_write(hashing_embedder: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  fails: str) -> None:
    """A snapshot the journal's size starts inside a write fails (a full disk): the write,
    already journalled and applied, still returns its count, and a crash loses none of
    it; a later write tries the snapshot again. A snapshot failing once its manifest was
    switched (its folder's fsync) leaves later writes in the new generation's journal."""
    import errno

    from aieng_vectors import _disk, _store

    monkeypatch.setattr(_store, "_COMPACT_BYTES", 0)  # every write compacts
    write_manifest = _disk.Folder.write_manifest

    def full_disk(self: _disk.Folder, manifest: _disk.Manifest) -> None:
        if fails == "after_the_switch":
            write_manifest(self, manifest)
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "live"
    live = index_with(hashing_embedder, path=str(path))
    await live.aieng_index(DOCS[:1])  # a manifest and a first snapshot
    monkeypatch.setattr(_disk.Folder, "write_manifest", full_disk)
    assert await live.aieng_index(DOCS[1:]) == len(DOCS) - 1
    assert await live.delete(["bm25"]) == 1
    shutil.copytree(path, tmp_path / "crashed")
    monkeypatch.setattr(_disk.Folder, "write_manifest", write_manifest)
    assert await live.aieng_index([Document("after", "Written once the disk had room.")]) == 1
    journal = (path / "journal.jsonl").read_bytes()
    if fails == "before_the_switch":
        assert journal == b""  # the retried snapshot holds every write
    else:  # the switched snapshot (generation 2) holds the batch: its lines were cut
        assert b'"gen":1,' not in journal and b'"after"' in journal
    await live.aclose()

    for folder, count in ((tmp_path / "crashed", len(DOCS) - 1), (path, len(DOCS))):
        reopened = index_with(hashing_embedder, path=str(folder))
        assert await reopened.get("quant") == DOCS[4]  # loads the folder
        assert len(reopened) == count and "bm25" not in reopened
        await reopened.aclose()


@pytest.mark.anyio
async def test_a_failed_compaction_is_not_retried_by_every_write(
        hashing_embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a snapshot started by a write fails (a full disk), the next writes do not each
    pay a whole snapshot attempt: the next try waits until the journal has grown by as
    much again as it took to start one. Once the disk has room, that try (or ``flush``)
    folds the journal, and every write survives a reopen."""
    import errno
    import itertools

    from aieng_vectors import _disk, _store

    monkeypatch.setattr(_store, "_COMPACT_BYTES", 4096)
    write_snapshot = _disk.Folder.write_snapshot
    attempts: list[int] = []
    full = True

    def failing(self: _disk.Folder, *args: Any) -> None:
        attempts.append(self.journal_bytes)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_snapshot(self, *args)

    monkeypatch.setattr(_disk.Folder, "write_snapshot", failing)
    path = tmp_path / "idx"
    live = index_with(hashing_embedder, path=str(path))
    docs = [Document(f"d{i}", f"document number {i} about topic {i % 7}") for i in range(60)]
    for doc in docs[:40]:  # one write per document: many writes past the threshold
        assert await live.aieng_index([doc]) == 1
    assert attempts, "the journal never reached the threshold"
    assert len(attempts) < 40 // 2
    # Each retry waited for another threshold's worth of journal.
    assert all(later - earlier > 4096 for earlier, later in itertools.pairwise(attempts))
    full = False
    for doc in docs[40:]:
        assert await live.aieng_index([doc]) == 1
    await live.flush()
    assert (path / "journal.jsonl").read_bytes() == b""
    await live.aclose()
    reopened = index_with(hashing_embedder, path=str(path))
    assert await reopened.get("d0") == docs[0]  # loads the folder
    assert len(reopened) == len(docs)
    await reopened.aclose()


@pytest.mark.anyio
async def test_a_folder_index_reads_metadata_as_it_will_after_reopening(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """A folder index stores metadata as JSON: its hits, ``get`` and filters see that JSON
    (an object's int key as a string, a tuple as a list) at once, not only once the folder
    is reopened, so a filter matches the same documents before and after a restart."""
    doc = Document("n", "nested metadata", metadata={"n": {1: "x"}, "t": (1, 2)})
    stored = Document("n", "nested metadata", metadata={"n": {"1": "x"}, "t": [1, 2]})
    path = str(tmp_path / "idx")
    live = index_with(hashing_embedder, path=path)
    await live.aieng_index([doc])
    query = Query("nested", filters={"n": {"1": "x"}})

    async def check(index: VectorIndex) -> None:
        got = await index.get("n")
        assert got == stored and got is not None and isinstance(got.metadata["t"], list)
        assert ids(await index.aieng_retrieve(query, 5)) == ["n"]
        assert (await index.aieng_retrieve(Query("nested"), 1))[0].document == stored

    await check(live)
    await live.aclose()
    reopened = index_with(hashing_embedder, path=path)
    await check(reopened)
    await reopened.aclose()


@pytest.mark.anyio
async def test_a_journal_without_a_manifest_is_dropped(hashing_embedder: Any,
                                                       tmp_path: Path) -> None:
    """A journal left in a folder whose ``index.json`` is gone (the index was cleared by
    hand) records nothing: opening the folder drops it, so its lines do not come back
    beside the new index's writes after a crash."""
    old = tmp_path / "old"
    first = index_with(hashing_embedder, path=str(old))
    await first.aieng_index([Document("stale", "an old document")])
    folder = tmp_path / "idx"
    folder.mkdir()
    shutil.copy(old / "journal.jsonl", folder / "journal.jsonl")  # no index.json
    await first.aclose()

    live = index_with(hashing_embedder, path=str(folder))
    await live.aieng_index([Document("fresh", "a new document")])
    assert len(live) == 1
    crashed = tmp_path / "crashed"
    shutil.copytree(folder, crashed)  # as a crash leaves it: the journal only
    await live.aclose()
    recovered = index_with(hashing_embedder, path=str(crashed))
    assert await recovered.get("fresh") is not None
    assert await recovered.get("stale") is None and len(recovered) == 1
    await recovered.aclose()
