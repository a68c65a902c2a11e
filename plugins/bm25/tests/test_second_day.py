"""An index folder on the second day: opened from a read-only place (a container's
read-only mount, a folder made ``chmod -R a-w``), moved to another path, or made by
another version of aieng-bm25."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document

from aieng_core.testing import read_only

DOCS = [Document(f"d{i}", f"laminar flow over a plate, case {i}", metadata={"n": i})
        for i in range(20)]


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.parametrize("scorer", ["tantivy", "impacts"])
def test_a_read_only_folder_serves_searches_and_refuses_writes(tmp_path: Path,
                                                                scorer: str) -> None:
    """tantivy creates its lock files even to read: a read-only folder failed to open at
    all, with a message calling it damaged and saying to delete it. It opens now, serves
    searches, ``get`` and filters, and a write fails with an ``OSError`` naming the folder
    and saying it was opened read-only; nothing in the folder changes."""
    folder = tmp_path / "idx"
    made = BM25Index(BM25Options(path=str(folder)))
    made.add(DOCS)
    made.close()
    before = _contents(folder)
    with read_only(folder) as view:
        index = BM25Index(BM25Options(path=str(view), scorer=scorer))
        index.open()
        assert len(index) == 20 and index.analyzer == "aieng_v2"
        assert len(index.search("laminar plate", 100)) == 20
        assert [hit.document.id for hit in index.search("laminar", 5, {"n": 3})] == ["d3"]
        assert index.get("d7") == DOCS[7]
        for write in (lambda: index.add([Document("new", "text")]),
                      lambda: index.delete(["d1"])):
            with pytest.raises(OSError, match="read-only") as caught:
                write()
            assert caught.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
            assert caught.value.filename == str(view)
        assert len(index) == 20 and index.get("d1") == DOCS[1]
        index.close()
        index.open()  # and again after close
        assert len(index.search("laminar", 3)) == 3
        index.close()
    assert _contents(folder) == before


def test_a_moved_folder_opens_and_takes_writes(tmp_path: Path) -> None:
    """Nothing in an index folder names its path: moved (to a path with spaces, non-ASCII
    characters), it opens, searches and takes writes."""
    folder = tmp_path / "idx"
    made = BM25Index(BM25Options(path=str(folder)))
    made.add(DOCS)
    made.close()
    moved = tmp_path / "moved here" / "índice 索引"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    index = BM25Index(BM25Options(path=str(moved)))
    assert len(index.search("laminar", 100)) == 20
    assert index.add([Document("d0", "replaced turbulence")]) == 1
    assert [hit.document.id for hit in index.search("turbulence", 3)] == ["d0"]
    index.close()


def test_an_index_of_a_newer_analyzer_asks_for_a_newer_plugin(tmp_path: Path) -> None:
    """An index made by a newer aieng-bm25, with an analyzer this version does not know
    (say ``aieng_v3``), is refused saying so and to upgrade, not as "not made by this
    version ... delete this one to rebuild it" (its documents would be lost for nothing);
    the folder is left as it is."""
    import tantivy
    from aieng_bm25 import _index

    folder = tmp_path / "idx"
    folder.mkdir()
    newer = tantivy.Index(_index._schema("aieng_v3"), path=str(folder), reuse=False)
    newer.register_tokenizer("aieng_v3", _index._analyzer())
    writer = newer.writer(heap_size=15_000_000, num_threads=1)
    writer.add_document(tantivy.Document(id="d0", key="k", text="laminar flow"))
    writer.commit()
    writer.wait_merging_threads()
    del newer, writer
    before = _contents(folder)
    index = BM25Index(BM25Options(path=str(folder)))
    with pytest.raises(ValueError, match=r"newer aieng-bm25.*aieng_v3.*upgrade") as caught:
        index.open()
    assert str(folder) in str(caught.value) and "delete" not in str(caught.value)
    assert _contents(folder) == before
