"""The index folder shared with other processes, and crashes: a writer killed mid-batch,
two processes making one new index, and queries and ids at their extremes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import aieng_bm25._index as index_module
import aieng_bm25._locks as locks_module
import pytest
import tantivy
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document

BATCH = 50

# A writer that commits batches of BATCH documents until it is killed.
WRITER = f"""
import sys
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document
index = BM25Index(BM25Options(path=sys.argv[1]))
batch = 0
while True:
    index.add([Document(f"w{{batch}}-{{i}}", "written " * 300 + f"batch{{batch}}")
               for i in range({BATCH})])
    batch += 1
    print(batch, flush=True)
"""


def ids(hits: list[object]) -> list[str]:
    """The document ids of hits, in order."""
    return [h.document.id for h in hits]  # type: ignore[attr-defined]


@pytest.mark.parametrize("scorer", ["tantivy", "impacts"])
def test_a_writer_killed_mid_batch_leaves_a_usable_index(tmp_path: Path, scorer: str) -> None:
    """A process killed (SIGKILL) while it indexes leaves every committed batch whole and
    none in part; the folder then opens, takes upserts and deletes, and reopens (tantivy's
    writer lock dies with the process; its stray segment files are its own)."""
    folder = tmp_path / "idx"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        committed = [int(writer.stdout.readline()) for _ in range(3)][-1]
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()  # else a ResourceWarning (an unclosed pipe)
    index = BM25Index(BM25Options(path=str(folder), scorer=scorer))
    count = len(index)
    assert count % BATCH == 0 and count >= committed * BATCH
    assert index.add([Document("w0-0", "replaced"), Document("new", "fresh words")]) == 2
    assert index.delete(["w0-1", "never"]) == 1
    index.close()
    reopened = BM25Index(BM25Options(path=str(folder), scorer=scorer))
    assert len(reopened) == count
    assert ids(reopened.search("fresh replaced", 5)) in (["new", "w0-0"], ["w0-0", "new"])
    assert reopened.get("w0-1") is None and len(reopened.search("batch0", 100)) == BATCH - 2


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_new_index_made_by_two_processes_at_once_has_one_analyzer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes opening a new folder at the same moment with different analyzers made
    two schemas' meta.json in turn, and their commits mixed segments of both (tantivy then
    panicked reading documents). Making an index takes the folder's lock (flock on the
    folder): the second waits, then opens the first one's index with its analyzer.

    The other process is played here by this thread holding the lock while it makes an
    ``aieng_en_v1`` index in the folder."""
    import fcntl

    folder = tmp_path / "idx"
    folder.mkdir()
    late = BM25Index(BM25Options(path=str(folder), analyzer="aieng_v2", lock_timeout=60))
    waiting = threading.Event()  # set when late.open found the lock held, and waits
    original = locks_module.stop_if_cancelled

    def noted() -> None:
        waiting.set()
        original()

    monkeypatch.setattr(locks_module, "stop_if_cancelled", noted)
    handle = os.open(folder, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX)
    failed: list[BaseException] = []

    def open_late() -> None:
        try:
            late.open()
        except BaseException as exc:  # noqa: BLE001 - told to the test below
            failed.append(exc)

    opened = threading.Thread(target=open_late)
    try:
        opened.start()
        assert waiting.wait(60)  # synchronised on the wait itself, not on a sleep
        first = tantivy.Index(index_module._schema("aieng_en_v1"), path=str(folder),
                              reuse=True)
        writer = first.writer(heap_size=15 * 1024 * 1024, num_threads=1)
        writer.commit()
        writer.wait_merging_threads()
    finally:
        os.close(handle)
        opened.join(60)
    assert failed == [] and not opened.is_alive()
    assert late.analyzer == "aieng_en_v1"
    late.add([Document("a", "Pythonは人気", title="t")])
    again = BM25Index(BM25Options(path=str(folder)))
    assert again.analyzer == "aieng_en_v1" and again.get("a") is not None
    assert ids(again.search("pythonは人気", 5)) == ["a"]


@pytest.mark.parametrize("scorer", ["tantivy", "impacts"])
def test_queries_of_stop_words_punctuation_or_10000_terms(scorer: str) -> None:
    """A query of stop words or punctuation alone matches nothing (no error); one of
    10,000 distinct terms (a pasted document) or one term 10,000 times is answered, with
    each term counted."""
    index = BM25Index(BM25Options(path=":memory:", scorer=scorer))
    index.add([Document(f"d{n}", f"w{n} w{n + 1} common") for n in range(200)])
    for text in ("the and of a is not", ".,;:!?-()[]{}\"'/\\ …", "THE. And? or! ", ""):
        assert index.search(text, 5) == []
    many = " ".join(f"w{n}" for n in range(10_000))
    hits = index.search(many, 5)
    assert len(hits) == 5 and all(hit.score > 0 for hit in hits)
    repeated = index.search("w7 " * 10_000 + "w150", 2)
    assert ids(repeated)[0] in ("d6", "d7") and ids(repeated)[1] in ("d6", "d7")


ODD_IDS = ["a/b", "/abs/path.txt#3", "..", "../x", "a\\b", "東京/1#2", "👩\u200d💻",
           "e\u0301", "\u00e9", " lead", "tab\tid", "line\nbreak", "\ufeffbom", "%2F", "*"]


def test_ids_with_slashes_and_unicode_round_trip(tmp_path: Path) -> None:
    """Ids with slashes, dots, backslashes, ZWJ emoji, composed and decomposed accents
    (distinct ids), whitespace or a BOM are stored, upserted, found, deleted and reopened
    exactly as given."""
    folder = tmp_path / "idx"
    index = BM25Index(BM25Options(path=str(folder)))
    assert index.add([Document(i, f"odd {n}") for n, i in enumerate(ODD_IDS)]) == len(ODD_IDS)
    assert index.add([Document("e\u0301", "upserted")]) == 1
    assert len(index) == len(ODD_IDS)
    assert sorted(ids(index.search("odd", 50))) == sorted(set(ODD_IDS) - {"e\u0301"})
    assert ids(index.search("upserted", 5)) == ["e\u0301"]
    composed = ODD_IDS.index("\u00e9")
    assert index.get("\u00e9") == Document("\u00e9", f"odd {composed}")
    index.close()
    reopened = BM25Index(BM25Options(path=str(folder)))
    assert all(reopened.get(i) is not None and reopened.get(i).id == i  # type: ignore[union-attr]
               for i in ODD_IDS)
    assert reopened.delete(ODD_IDS[::2]) == len(ODD_IDS[::2])
    assert sorted(ids(reopened.search("odd upserted", 50))) == sorted(ODD_IDS[1::2])
