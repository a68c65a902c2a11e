"""The long run: a bm25 index on disk written for weeks, the same documents replaced and
deleted again and again. tantivy merges the segments each write leaves and deletes the
files of merged ones, so the folder holds what the live documents need; each write's
reader is reloaded without keeping a descriptor. Measured in files, segments, bytes and
descriptors, never in time."""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aieng_bm25 import BM25Index, BM25Options
from aieng_hookspecs.types import Document

from aieng_core.testing import open_files

_SEGMENT = re.compile(r"([0-9a-f]{32})\.")
_RAM = Path("/dev/shm")


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A folder in RAM (tmpfs) where there is one: each tantivy commit fsyncs its files,
    ~10 ms each on a disk, and this test makes hundreds of them; a real index on a real
    file system all the same. Else one under ``tmp_path``."""
    if not (_RAM.is_dir() and os.access(_RAM, os.W_OK | os.X_OK)):
        yield tmp_path / "idx"
        return
    parent = Path(tempfile.mkdtemp(prefix="aieng-bm25-", dir=_RAM))
    try:
        yield parent / "idx"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def segments(folder: Path) -> int:
    return len({found.group(1) for path in folder.iterdir()
                if (found := _SEGMENT.match(path.name))})


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def test_rewrites_and_deletes_keep_the_folder_and_descriptors_flat(folder: Path) -> None:
    """1,000 documents, then 150 writes each replacing 10 of them at random, every third
    also deleting 5 of them and the next writing those back: at most a few segments
    (merged as they pile up, the merged ones' files deleted), a folder within twice its
    first size, no descriptor kept, and a restart answers as the process that wrote it."""
    index = BM25Index(BM25Options(path=str(folder)))
    index.add([Document(f"d{i}", f"first text {i} about topic {i % 7}") for i in range(1_000)])
    first = folder_bytes(folder)
    files = len(open_files())
    rng = random.Random(5)
    most = 0
    for step in range(150):
        ids = rng.sample(range(1_000), 10)
        index.add([Document(f"d{i}", f"step {step} text {i} about topic {i % 7}")
                   for i in ids])
        if step % 3 == 0:
            index.delete([f"d{i}" for i in ids[:5]])
        elif step % 3 == 1:
            index.add([Document(f"d{i}", f"back {i} about topic {i % 7}") for i in ids[:5]])
        assert index.search("topic 3", 5)
        most = max(most, segments(folder))
    assert most <= 12, most
    assert folder_bytes(folder) <= 2 * first, (first, folder_bytes(folder))
    assert len(open_files()) <= files, open_files()
    live = len(index)
    hits = index.search("topic 3 about", 10)
    index.close()
    again = BM25Index(BM25Options(path=str(folder)))
    assert len(again) == live
    assert again.search("topic 3 about", 10) == hits
    again.close()
