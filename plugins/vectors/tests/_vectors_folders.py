"""Vectors folders the second-day and worker tests start from (imported as
``_vectors_folders``: the tests' conftest puts this folder on ``sys.path``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aieng_hookspecs.types import Document
from aieng_vectors import VectorIndex, VectorsOptions

DOCS = [Document("one", "first batch"), Document("two", "second batch"),
        Document("three", "third batch")]


def index_at(embedder: Any, path: Path, **options: Any) -> VectorIndex:
    """A vectors index at ``path`` embedding with a test embedder."""
    return VectorIndex(VectorsOptions(path=str(path), **options), embedder=embedder.aieng_embed)


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


async def written(embedder: Any, folder: Path, *, closed: bool = True) -> Path:
    """``folder`` holding DOCS: a snapshot (closed), or a journal as a crash leaves it."""
    live = index_at(embedder, folder if closed else folder.with_name("live"))
    await live.aieng_index(DOCS[:2])
    await live.aieng_index(DOCS[2:])
    if not closed:
        shutil.copytree(folder.with_name("live"), folder)
    await live.aclose()
    return folder
