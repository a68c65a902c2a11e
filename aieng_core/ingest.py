"""Reading documents from files: markdown, text and BEIR ``corpus.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from aieng_hookspecs.types import Document

__all__ = ["iter_documents", "read_documents"]

SUFFIXES = (".md", ".txt", ".jsonl")


def iter_documents(*paths: str | Path) -> Iterator[Document]:
    """Documents from each path in turn (see :func:`read_documents`), lazily per file."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix in SUFFIXES:
                    yield from read_documents(file)
        else:
            yield from read_documents(path)


def read_documents(path: Path) -> list[Document]:
    """Documents from a BEIR ``corpus.jsonl``, a markdown / text file, or a folder of them.

    Markdown is cut at headings, one document per section, titled by the heading.

    :raises FileNotFoundError: when ``path`` does not exist.
    :raises ValueError: for a malformed ``.jsonl`` line (with its line number) or a file
        that is not UTF-8.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        found: list[Document] = []
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.suffix in (".md", ".txt", ".jsonl"):
                found.extend(read_documents(file))
        return found
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if path.suffix == ".jsonl":
        return _jsonl(path, text)
    if path.suffix == ".md":
        return _markdown(path, text)
    return [Document(id=str(path), text=text, title=path.stem)]


def _jsonl(path: Path, text: str) -> list[Document]:
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            docs.append(Document(id=str(row["_id"]), text=str(row.get("text", "")),
                                 title=str(row.get("title", ""))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a BEIR corpus row ({exc})") from None
    return docs


def _markdown(path: Path, text: str) -> list[Document]:
    docs: list[Document] = []
    title, index = path.stem, 0
    body: list[str] = []

    def flush() -> None:
        nonlocal index
        content = "\n".join(body).strip()
        if content:
            docs.append(Document(id=f"{path}#{index}", text=content, title=title,
                                 metadata={"path": str(path)}))
            index += 1

    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            flush()
            title, body = line.lstrip("#").strip() or path.stem, []
        else:
            body.append(line)
    flush()
    return docs
