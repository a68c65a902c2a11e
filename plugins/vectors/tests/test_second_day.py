"""A ``vectors`` folder on the second day: written by a newer aieng-vectors, with a
manifest that is no manifest, opened from a read-only place (a container's read-only
mount, ``chmod -R a-w``), moved to another path."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from _vectors_folders import DOCS, contents, index_at, written
from aieng_hookspecs.types import Document, Query

from aieng_core.testing import read_only


@pytest.mark.anyio
async def test_a_manifest_of_a_newer_format_asks_for_a_newer_plugin(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """index.json with a format number above this version's says that a newer
    aieng-vectors wrote it and to upgrade (it said "unknown format 2 (expected 1)")."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    manifest = folder / "index.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 2}))
    before = contents(folder)
    index = index_at(hashing_embedder, folder)
    with pytest.raises(ValueError, match=r"format 2.*newer aieng-vectors.*upgrade") as caught:
        await index.get("one")
    assert str(folder) in str(caught.value)
    await index.aclose()
    assert contents(folder) == before


@pytest.mark.anyio
@pytest.mark.parametrize("damage", ["a list", "a folder", "format 0"])
async def test_a_manifest_that_is_none_is_an_error_naming_it(
        hashing_embedder: Any, tmp_path: Path, damage: str) -> None:
    """An index.json holding JSON that is no object (an AttributeError escaped), or a
    folder in its place (an IsADirectoryError), fails naming the manifest."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    manifest = folder / "index.json"
    if damage == "a list":
        manifest.write_text("[]")
    elif damage == "a folder":
        manifest.unlink()
        manifest.mkdir()
    else:
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 0}))
    index = index_at(hashing_embedder, folder)
    with pytest.raises(ValueError, match=r"bad index\.json") as caught:
        await index.get("one")
    assert str(folder) in str(caught.value)
    await index.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("closed", [True, False], ids=["snapshot", "journal"])
async def test_a_read_only_folder_serves_searches_and_refuses_writes(
        hashing_embedder: Any, tmp_path: Path, closed: bool) -> None:
    """A read-only folder failed to open at all (its LOCK file cannot be created). It
    opens now, serves searches and ``get`` (a journal left by a crash applied in memory),
    refuses writes with an ``OSError`` naming the folder and saying it was opened
    read-only, closes without writing a snapshot, and nothing in it changes."""
    folder = await written(hashing_embedder, tmp_path / "idx", closed=closed)
    before = contents(folder)
    with read_only(folder) as view:
        index = index_at(hashing_embedder, view)
        assert len(index) == 3 and await index.get("two") == DOCS[1]
        hits = await index.aieng_retrieve(Query("third batch"), 1)
        assert [hit.document.id for hit in hits] == ["three"]
        for write in (index.aieng_index([Document("new", "text")]),
                      index.aieng_delete(["one"])):
            with pytest.raises(OSError, match="read-only") as caught:
                await write
            assert caught.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
            assert caught.value.filename == str(view)
        assert len(index) == 3
        await index.aclose()
    assert contents(folder) == before


@pytest.mark.anyio
async def test_a_moved_folder_opens_and_takes_writes(hashing_embedder: Any,
                                                     tmp_path: Path) -> None:
    """The manifest and journal name no path: a folder moved (to a path with spaces and
    non-ASCII characters) opens and takes writes."""
    folder = await written(hashing_embedder, tmp_path / "idx", closed=False)
    moved = tmp_path / "moved here" / "índice 索引"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    index = index_at(hashing_embedder, moved)
    assert len(index) == 3
    await index.aieng_index([Document("four", "fourth batch")])
    assert await index.get("four") == Document("four", "fourth batch")
    await index.aclose()
