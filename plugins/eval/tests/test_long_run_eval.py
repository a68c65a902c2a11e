"""Evaluation over months of runs: the file-hash cache (``file-hashes.json``) remembers
the files that are there, at most :data:`MAX_CACHE_ENTRIES` of them, not every file any
run ever hashed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aieng_eval import FileHasher, _lock


@pytest.fixture(autouse=True)
def _small_files_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 16 bytes or more are cached (1 MiB in use): small files stand for models."""
    monkeypatch.setattr(_lock, "CACHE_MIN_BYTES", 16)


def _checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    for name in ("model.bin", "optimizer.bin", "config.json"):
        (folder / name).write_text(f"{name} of step {step} " * 4, encoding="utf-8")
    return folder


def _entries(cache: Path) -> dict[str, str]:
    loaded = json.loads(cache.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_entries_of_deleted_files_leave_the_cache(tmp_path: Path) -> None:
    """200 runs, each evaluating a new checkpoint folder that is deleted afterwards (a
    training loop's): the cache keeps the files still there, not one entry per file
    ever hashed (600 before: the file grew with every run, and was read whole at each)."""
    cache = tmp_path / "file-hashes.json"
    kept = _checkpoint(tmp_path / "base", 0)
    for step in range(1, 201):
        folder = _checkpoint(tmp_path / f"ckpt-{step}", step)
        hasher = FileHasher(cache)
        hasher.path(kept)
        hasher.path(folder)
        hasher.save()
        shutil.rmtree(folder)
    entries = _entries(cache)
    # the base model's files, and the last checkpoint's (deleted after the last save)
    assert len(entries) == 6, len(entries)
    assert sum(str(kept) in key for key in entries) == 3
    again = FileHasher(cache)
    again.path(kept)
    assert again.reads == 0  # still answered from the cache


def test_the_cache_holds_at_most_its_bound_the_least_recently_used_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct files than MAX_CACHE_ENTRIES, all still there: the cache keeps the
    bound, dropping the least recently used; a file used again moves to the newest."""
    monkeypatch.setattr(_lock, "MAX_CACHE_ENTRIES", 50)
    cache = tmp_path / "file-hashes.json"
    files = []
    for n in range(120):
        file = tmp_path / "models" / f"m{n}.bin"
        file.parent.mkdir(exist_ok=True)
        file.write_text(f"weights {n} " * 4, encoding="utf-8")
        files.append(file)
    first = FileHasher(cache)
    for file in files:
        first.file(file)
        first.file(files[0])  # used by every run: the most recently used each time
    first.save()
    entries = _entries(cache)
    assert len(entries) == 50
    named = {key.split("|")[0] for key in entries}
    assert str(files[0].resolve()) in named and str(files[-1].resolve()) in named
    assert str(files[1].resolve()) not in named
    second = FileHasher(cache)
    second.file(files[0])
    second.file(files[-1])
    assert second.reads == 0
