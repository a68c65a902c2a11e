"""Ingest where a host program's files live: a file deleted while the folder is read, and a
folder typed with a trailing slash or as ``.``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aieng_hookspecs.types import Document

from aieng_core.ingest import BUILTIN_READERS, iter_documents, iter_files, read_text


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docs/`` with three text files, the working directory its parent."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_text(f"text of {name}\n", encoding="utf-8")
    return folder


def _deleting_b(path: Path) -> list[Document]:
    """The text reader, which deletes ``b.txt`` as it reads ``a.txt``: another process
    removing a file after the walk listed it, before it was read."""
    if path.name == "a.txt":
        (path.parent / "b.txt").unlink()
    return read_text(path)


READERS = {**BUILTIN_READERS, ".txt": _deleting_b}


def test_a_file_deleted_after_the_listing_is_a_read_error(docs: Path) -> None:
    """It goes to ``on_error`` (the CLI names it and exits 1) as a file deleted a moment
    later does; it was skipped with a warning calling it a FIFO, a device or a broken link,
    and the command succeeded."""
    failed: list[tuple[Path, OSError]] = []
    read = {str(file): [d.id for d in found] for file, found in iter_files(
        "docs", readers=READERS, on_error=lambda file, exc: failed.append((file, exc)))}
    assert read == {"docs/a.txt": ["docs/a.txt"], "docs/c.txt": ["docs/c.txt"]}
    assert [(str(file), type(exc)) for file, exc in failed] == [
        ("docs/b.txt", FileNotFoundError)]


def test_without_on_error_the_deleted_file_raises(docs: Path) -> None:
    """Without ``on_error`` the reading error propagates, as documented."""
    with pytest.raises(FileNotFoundError):
        list(iter_documents("docs", readers=READERS))


@pytest.mark.parametrize(("cwd", "typed"), [
    (".", "docs"), (".", "docs/"), (".", "./docs/"), ("docs", "."), ("docs", "./"),
    ("docs", "../docs/"),
], ids=["plain", "slash", "dot-slash", "dot", "dot-and-slash", "up-and-back"])
def test_a_folder_typed_any_way_names_its_documents_alike(
        docs: Path, monkeypatch: pytest.MonkeyPatch, cwd: str, typed: str) -> None:
    """A trailing slash, ``.`` or ``..`` segments name the same documents, relative to the
    working directory."""
    monkeypatch.chdir(docs.parent / cwd)
    prefix = "" if cwd == "docs" else "docs/"
    assert [d.id for d in iter_documents(typed)] == [
        f"{prefix}{name}" for name in ("a.txt", "b.txt", "c.txt")]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root lists any folder: a mode cannot refuse it")
def test_a_folder_that_cannot_be_listed_is_a_read_error(docs: Path) -> None:
    """A subfolder whose listing is refused (mode 000) was left out without a word, its
    files unindexed and the command successful; it goes to ``on_error`` (the CLI names it
    and exits 1), and without ``on_error`` the error propagates."""
    (docs / "private").mkdir()
    (docs / "private" / "d.txt").write_text("text of d.txt\n", encoding="utf-8")
    (docs / "private").chmod(0)
    try:
        failed: list[tuple[Path, OSError]] = []
        read = [str(file) for file, _ in iter_files(
            "docs", on_error=lambda file, exc: failed.append((file, exc)))]
        assert read == ["docs/a.txt", "docs/b.txt", "docs/c.txt"]
        assert [(str(file), type(exc)) for file, exc in failed] == [
            ("docs/private", PermissionError)]
        with pytest.raises(PermissionError):
            list(iter_documents("docs"))
    finally:
        (docs / "private").chmod(0o755)
