"""``vectors``: a damaged journal is detected, never cut short silently."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs.types import Document
from aieng_vectors import VectorIndex, VectorsOptions

BATCHES = [[Document("one", "first batch")], [Document("two", "second batch")],
           [Document("three", "third batch")]]


def index_with(embedder: Any, path: Path) -> VectorIndex:
    return VectorIndex(VectorsOptions(path=str(path)), embedder=embedder.aieng_embed)


async def crashed_copy(embedder: Any, tmp_path: Path) -> Path:
    """A folder as a crash leaves it: a manifest, and a journal of one line per batch."""
    live = index_with(embedder, tmp_path / "live")
    for batch in BATCHES:
        await live.aieng_index(batch)
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "live", crashed)
    await live.aclose()
    assert len((crashed / "journal.jsonl").read_bytes().splitlines()) == len(BATCHES)
    return crashed


@pytest.mark.anyio
@pytest.mark.parametrize("damage", [
    b'{"gen": 0, "op": "upsert", "documents": [{"id": "tw\x00\x00\x00\x00\x00\x00\n',
    b'{"gen": 0, "op": "upsert"}\n',
    b'["not", "an", "operation"]\n',
])
async def test_a_damaged_journal_line_before_written_ones_is_an_error(
        hashing_embedder: Any, tmp_path: Path, damage: bytes) -> None:
    """A damaged journal line followed by whole ones is no torn append (a crash tears only
    the last line): opening the folder fails, naming the journal and the line, and leaves
    the journal as it is, instead of cutting it there, which lost the later writes for
    good (they returned, so they were promised durable)."""
    crashed = await crashed_copy(hashing_embedder, tmp_path)
    journal = crashed / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = damage
    journal.write_bytes(b"".join(lines))
    before = journal.read_bytes()

    reopened = index_with(hashing_embedder, crashed)
    with pytest.raises(ValueError, match=r"journal\.jsonl line 2 is damaged") as caught:
        await reopened.get("one")
    assert str(crashed) in str(caught.value)
    assert journal.read_bytes() == before
    await reopened.aclose()


@pytest.mark.anyio
async def test_damaged_last_lines_are_a_torn_append(hashing_embedder: Any,
                                                    tmp_path: Path) -> None:
    """Damaged lines at the end and nothing whole after them are an append a crash tore:
    they are cut off, and every write before them loads."""
    crashed = await crashed_copy(hashing_embedder, tmp_path)
    journal = crashed / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"gen": 0, "op"\n' + b"\x00" * 100)
    reopened = index_with(hashing_embedder, crashed)
    assert len(reopened) == len(BATCHES)
    assert await reopened.get("three") == BATCHES[2][0]
    await reopened.aclose()
