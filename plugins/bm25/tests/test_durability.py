"""A damaged index folder, and a disk that fails a write: errors that name the folder and
say what to do, the last commit kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document

DOCS = [Document(f"d{i}", f"laminar flow over a plate, case {i}") for i in range(20)]

# Opens the index in argv[1], then indexes a batch larger than the process may write
# (RLIMIT_FSIZE: the write fails with EFBIG, as it would with ENOSPC on a full disk),
# then, the limit lifted, indexes one document. Prints the error, then the counts.
FULL_DISK = """
import resource, signal, sys
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document
index = BM25Index(BM25Options(path=sys.argv[1], scorer=sys.argv[2]))
index.open()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
try:
    index.add([Document(f"n{i}", " ".join(f"w{i}x{j}" for j in range(300)))
               for i in range(300)])
except OSError as exc:
    print("OSError", exc.errno, exc.filename)
    print(exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print(len(index), len(index.search("laminar", 100)), index.get("n0"))
print(index.add([Document("after", "written after the failure")]), len(index))
"""


def _made(folder: Path) -> None:
    index = BM25Index(BM25Options(path=str(folder)))
    index.add(DOCS)
    index.close()


@pytest.mark.parametrize("damage", ["garbage meta.json", "empty meta.json",
                                    "truncated segment", "missing meta.json"])
def test_a_damaged_index_fails_naming_its_folder(tmp_path: Path, damage: str) -> None:
    """An index folder with a damaged file fails to open with an error that names the
    folder (not only tantivy's relative file name) and says how to recover, chained to
    tantivy's error; nothing is written into the folder."""
    folder = tmp_path / "idx"
    _made(folder)
    if damage == "garbage meta.json":
        (folder / "meta.json").write_text("{garbage", encoding="utf-8")
    elif damage == "empty meta.json":
        (folder / "meta.json").write_bytes(b"")
    elif damage == "missing meta.json":
        # (was "a folder of other files, not a tantivy index; give an empty or new folder")
        (folder / "meta.json").unlink()
    else:
        term = next(folder.glob("*.term"))
        term.write_bytes(term.read_bytes()[: term.stat().st_size // 2])
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    index = BM25Index(BM25Options(path=str(folder)))
    with pytest.raises(ValueError, match="delete it and index") as caught:
        index.open()
    assert str(folder) in str(caught.value)
    if damage == "missing meta.json":
        assert "no meta.json" in str(caught.value)
    else:
        assert isinstance(caught.value.__cause__, ValueError)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


@pytest.mark.parametrize("scorer", ["tantivy", "impacts"])
def test_a_full_disk_fails_the_write_naming_the_folder(tmp_path: Path, scorer: str) -> None:
    """A write the disk refuses (EFBIG here; ENOSPC alike) raises an ``OSError`` with the
    errno and the index folder, saying the index keeps its last commit; it does: the
    documents before it are all searchable, none of the failed batch is, and the next
    write, once the disk has room, commits."""
    folder = tmp_path / "idx"
    _made(folder)
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(folder), scorer],
                          capture_output=True, text=True, timeout=120, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == f"OSError 27 {folder}", done.stdout
    assert str(folder) in lines[1] and "last commit" in lines[1]
    assert lines[2:] == ["20 20 None", "1 21"]
    reopened = BM25Index(BM25Options(path=str(folder), scorer=scorer))
    assert len(reopened) == 21 and reopened.get("n0") is None
    assert len(reopened.search("laminar", 100)) == 20
