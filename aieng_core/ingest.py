"""Reading documents from files: markdown, text and BEIR ``corpus.jsonl``."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import structlog
from aieng_hookspecs.types import Document

__all__ = ["BUILTIN_READERS", "MAX_TEXT_BYTES", "iter_beir_corpus", "iter_documents",
           "iter_files", "read_documents", "stream_files"]

Reader = Callable[[Path], Iterable[Document]]

log = structlog.get_logger(__name__)


#: The largest markdown or text file read (bytes): one read whole is one or a few documents,
#: and a bigger one (a log, a dump, a sparse file) would take several times its size in
#: memory; such a file is refused unread.
MAX_TEXT_BYTES = 256 * 2**20


class NotText(ValueError):
    """A file's bytes are not UTF-8 text (a binary file under a text suffix), or more of
    them than :data:`MAX_TEXT_BYTES`."""


def _decode(path: Path, *, limit: int | None = None) -> str:
    r"""The file's text: UTF-8, a leading byte order mark dropped, line ends made ``\n``.

    :param limit: the most bytes read: a bigger file is refused (:class:`NotText`) unread.
    """
    if limit is not None and (size := path.stat().st_size) > limit:
        raise NotText(f"{path} is too large to read as one text ({size:,} bytes; the most "
                      f"is {limit:,}): split it")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotText(f"{path} is not UTF-8 text (byte {exc.start})") from None


def _lines(text: str) -> list[str]:
    r"""The lines of decoded text. Only ``\n`` ends one (``_decode`` made ``\r\n`` and ``\r``
    that): ``str.splitlines`` would also cut at U+2028, U+0085 and the like, which are
    text inside a JSON string or a markdown paragraph."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_markdown(path: Path) -> list[Document]:
    """One document per markdown section, titled by its heading (at most
    :data:`MAX_TEXT_BYTES` read)."""
    return _markdown(path, _decode(path, limit=MAX_TEXT_BYTES))


def read_text(path: Path) -> list[Document]:
    """The whole file as one document, titled by the file's stem (at most
    :data:`MAX_TEXT_BYTES` read)."""
    return [Document(id=str(path), text=_decode(path, limit=MAX_TEXT_BYTES),
                     title=path.stem)]


def read_beir_corpus(path: Path) -> list[Document]:
    """A BEIR ``corpus.jsonl``'s documents, all of them (see :func:`iter_beir_corpus`)."""
    return list(iter_beir_corpus(path))


def iter_beir_corpus(path: Path) -> Iterator[Document]:
    r"""A BEIR ``corpus.jsonl`` read line by line: one ``{"_id", "title", "text"}`` per line,
    each document yielded once its line is read, so that a corpus larger than memory
    streams (only the ids seen are kept, to refuse a repeated one). UTF-8, a leading byte
    order mark dropped; ``\r\n`` and ``\r`` end a line as ``\n`` does. Not bound by
    :data:`MAX_TEXT_BYTES`.

    :raises NotText: for bytes that are not UTF-8 before the first document.
    :raises ValueError: naming file and line, when that line is reached: a row that is not
        a corpus row (JSON nested too deeply included), an ``_id`` given twice (naming
        both lines), bytes that are not UTF-8 after the first document.
    """
    lines: dict[str, int] = {}  # id -> the line that gave it
    number = offset = 0
    with path.open("rb") as handle:
        for raw in handle:  # b"\n" ends it: never a byte inside a UTF-8 sequence
            try:
                text = raw.decode("utf-8-sig" if offset == 0 else "utf-8")
            except UnicodeDecodeError as exc:
                where = f"{path}:{number + 1}: not UTF-8 text (byte {offset + exc.start})"
                raise (ValueError(where) if lines else NotText(where)) from None
            offset += len(raw)
            for line in _lines(text.replace("\r\n", "\n").replace("\r", "\n")):
                number += 1
                if line.strip():
                    yield _corpus_row(path, number, line, lines)


def _corpus_row(path: Path, number: int, line: str, lines: dict[str, int]) -> Document:
    """The document of a corpus line (``lines``: id -> the line that gave it)."""
    try:
        row = json.loads(line)
        doc = Document(id=_scalar(row["_id"], "_id", null=False),
                       text=_scalar(row.get("text"), "text"),
                       title=_scalar(row.get("title"), "title"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}:{number}: not a BEIR corpus row ({exc})") from None
    except RecursionError:  # json's: ``[[[...]]]`` nested thousands deep
        raise ValueError(f"{path}:{number}: not a BEIR corpus row (JSON nested too deeply "
                         "to read)") from None
    first = lines.setdefault(doc.id, number)
    if first != number:  # indexed, the second would replace the first without a word
        raise ValueError(f"{path}:{number}: duplicate _id {doc.id!r} (line {first})")
    return doc


#: The formats the kernel reads itself; plugins add more with ``aieng_register_readers``.
BUILTIN_READERS: dict[str, Reader] = {
    ".md": read_markdown,
    ".txt": read_text,
    ".jsonl": iter_beir_corpus,
}


def iter_documents(*paths: str | Path,
                   readers: Mapping[str, Reader] | None = None) -> Iterator[Document]:
    """Documents from files and folders, lazily: each as it is read (a markdown or text
    file is read whole, a BEIR ``corpus.jsonl`` line by line).

    A folder is walked in sorted order and files with no reader are skipped; a file given
    by name must have a reader. The walk leaves out hidden files and folders (names
    starting with ``.``: ``.git``, ``.venv``) and stays in the folder: it does not enter
    linked folders, and skips (with a warning) a link to a file outside the folder,
    anything but a regular file (a FIFO, a device), a file whose name is not valid UTF-8
    (its documents' ids could not be stored) and a file whose content is not UTF-8 text
    (a binary file under a text suffix; a corpus whose bytes stop being UTF-8 after its
    first document is an error naming the line) or a markdown or text file larger than
    :data:`MAX_TEXT_BYTES` (left unread). A file named by its path is read whatever its
    name, and its content must be text.

    Documents are named by their file's path (a markdown file's sections ``<path>#0``,
    ``<path>#1``, ...), the same however it was typed: relative to the working directory
    when the file is inside it, absolute otherwise, with links and ``..`` in the folders
    resolved (a linked file keeps its own name). Indexing the same files again, typed
    another way, replaces their documents.

    :param readers: suffix -> reader (the kernel's registry's readers; built-ins by default).
    :raises FileNotFoundError: for a path that does not exist.
    :raises ValueError: for a file with no reader for its suffix (listing the readable
        ones), a name that is not valid UTF-8 (both before anything is read), or bad
        content (from the reader, naming file and line: raised when the documents reach
        it, those before it yielded).
    """
    for _, documents in stream_files(*paths, readers=readers):
        yield from documents


def iter_files(*paths: str | Path,
               readers: Mapping[str, Reader] | None = None,
               on_error: Callable[[Path, OSError], None] | None = None
               ) -> Iterator[tuple[Path, list[Document]]]:
    """Each file read, with all its documents, lazily per file (see :func:`stream_files`,
    which yields a file's documents as they are read: a BEIR corpus's, line by line).

    :param on_error: called with a file and the :class:`OSError` its reading raised (a
        permission refused, a file deleted after its folder was listed, an I/O error): the
        file is skipped and the others are read. By default the error propagates.
    """
    failed: list[Path] = []

    def failing(file: Path, exc: OSError) -> None:
        failed.append(file)
        if on_error is not None:
            on_error(file, exc)

    for file, documents in stream_files(*paths, readers=readers,
                                        on_error=None if on_error is None else failing):
        found = list(documents)
        if not failed or failed[-1] != file:
            yield file, found


def stream_files(*paths: str | Path,
                 readers: Mapping[str, Reader] | None = None,
                 on_error: Callable[[Path, OSError], None] | None = None
                 ) -> Iterator[tuple[Path, Iterator[Document]]]:
    """Each file with its documents as they are read (see :func:`iter_documents`): a BEIR
    corpus's line by line, so that memory holds the documents the caller keeps (and the
    ids seen, to refuse one read from two files). Read a file's documents before asking
    for the next file.

    The paths named are checked first (each exists; a file has a name in UTF-8 and a
    reader), before anything is read. A file reached twice by one path (named, and in a
    named folder) is read once. A file is yielded once its first document (or its end) is
    read: a file skipped, or whose reading failed at once, is not yielded.

    :param on_error: called with a file and the :class:`OSError` its reading raised (a
        permission refused, a file deleted after its folder was listed, an I/O error): the
        file's documents end there (those yielded before it stand) and the other files are
        read; likewise with a folder of a walk that could not be listed, before its
        walk's files are read. By default the error propagates.
    :raises ValueError: also for a document id read from two files (indexed, the second
        document would replace the first without a word), and for bad content (from the
        reader, naming file and line) when the documents reach it: those before it were
        yielded.
    """
    table = BUILTIN_READERS if readers is None else readers
    named = list(map(Path, paths))
    for path in named:  # a mistyped command line indexes nothing
        if not path.is_dir():
            _reader(path, table)
    done: set[Path] = set()
    owners: dict[str, Path] = {}  # document id -> the file it was read from
    # One file named: no id can come from two files, so none is kept here (a BEIR corpus's
    # reader keeps its own, to refuse one repeated within it): kept twice, the ids of a
    # streamed corpus took a quarter more memory.
    alone = len(named) == 1 and not named[0].is_dir()

    def checked(file: Path, documents: Iterable[Document]) -> Iterator[Document]:
        if alone:
            yield from documents
            return
        for document in documents:
            other = owners.setdefault(document.id, file)
            if other != file:
                raise ValueError(f"{file}: document id {document.id!r} was also read from "
                                 f"{other} (a BEIR collection's folder holds queries.jsonl "
                                 "too: name its corpus.jsonl)")
            yield document

    def rest(file: Path, documents: Iterator[Document]) -> Iterator[Document]:
        try:
            yield from documents
        except OSError as exc:
            if on_error is None:
                raise
            on_error(file, exc)

    def opened(file: Path, reader: Reader, *, walked: bool
               ) -> tuple[Path, Iterator[Document]] | None:
        # The file with its documents; None when it was skipped (not text, in a walk) or
        # its OSError went to on_error.
        try:
            documents = checked(file, reader(file))
            first = next(documents, None)
        except NotText as exc:
            if not walked:
                raise
            log.warning("ingest.skipped", path=str(file), reason=str(exc))
            return None
        except OSError as exc:
            if on_error is None:
                raise
            on_error(file, exc)
            return None
        if first is None:
            return file, iter(())
        return file, rest(file, itertools.chain([first], documents))

    for path in named:
        if path.is_dir():
            root = path.resolve()
            unlisted: list[OSError] = []
            listed = _walk(_named(path, folder=True), unlisted)
            for exc in unlisted:  # a folder that could not be listed (permission refused)
                if on_error is None:
                    raise exc
                on_error(Path(exc.filename or path), exc)
            for file in listed:
                if (file.suffix.lower() in table and _readable(file, root)
                        and _first(file, done)):
                    found = opened(file, table[file.suffix.lower()], walked=True)
                    if found is not None:
                        yield found
        elif _first(file := _named(path, folder=False), done):
            found = opened(file, _reader(path, table), walked=False)
            if found is not None:
                yield found


def _named(path: Path, *, folder: bool) -> Path:
    """The path that names the documents read from ``path``, the same however it was
    typed: a folder resolved (links and ``..``), a file's folder resolved and its name
    kept (a link is a file of its own), made relative to the working directory when
    inside it and left absolute otherwise."""
    real = path.resolve() if folder else path.parent.resolve() / path.name
    try:
        here = Path.cwd().resolve()
    except OSError:  # the working directory was deleted
        return real
    return real.relative_to(here) if real.is_relative_to(here) else real


def _walk(folder: Path, unlisted: list[OSError]) -> list[Path]:
    """The entries under ``folder``, sorted, hidden ones (and what hidden folders hold)
    left out unread; linked folders are listed, not entered. The error of each folder that
    could not be listed (``folder`` itself included) goes to ``unlisted``: ``os.walk``
    left such a folder out without a word, and its files unread."""
    found: list[Path] = []
    for top, folders, files in os.walk(folder, onerror=unlisted.append):
        folders[:] = [name for name in folders if not name.startswith(".")]
        base = Path(top)
        found += [base / name for name in (*folders, *files) if not name.startswith(".")]
    return sorted(found)


def _first(file: Path, done: set[Path]) -> bool:
    """Whether ``file`` is met for the first time (``done`` remembers it). Its path, not
    its target: a link is read as a file of its own, its documents named by its path."""
    if file in done:
        return False
    done.add(file)
    return True


def _readable(file: Path, root: Path) -> bool:
    """Whether a folder walk reads ``file``: a regular file inside ``root`` (a link's
    target included), named in UTF-8, or one deleted since the walk listed it (its reading
    fails)."""
    if not _utf8(file):
        log.warning("ingest.skipped", path=repr(str(file)), reason="name is not valid UTF-8")
        return False
    if not os.path.lexists(file):
        # Deleted since the folder was listed (while the files before it were read):
        # reading it raises the FileNotFoundError that ``on_error`` reports, as for a file
        # deleted a moment later, rather than a warning calling it a FIFO.
        return True
    if not file.is_file():  # a FIFO's read would wait for ever
        if not file.is_dir():
            log.warning("ingest.skipped", path=str(file),
                        reason="not a regular file (a FIFO, a device, a broken link)")
        return False
    if not file.resolve().is_relative_to(root):
        log.warning("ingest.skipped", path=str(file), target=str(file.resolve()),
                    reason="a link to a file outside the folder")
        return False
    return True


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_documents(path: Path, *,
                   readers: Mapping[str, Reader] | None = None) -> list[Document]:
    """Documents from one file or a folder of them (see :func:`iter_documents`)."""
    table = BUILTIN_READERS if readers is None else readers
    if path.is_dir():
        return list(iter_documents(path, readers=table))
    return list(_reader(path, table)(_named(path, folder=False)))


def _reader(path: Path, table: Mapping[str, Reader]) -> Reader:
    """The reader of a file named by its path.

    :raises FileNotFoundError: for a path that does not exist.
    :raises ValueError: for a name that is not valid UTF-8, or a suffix with no reader.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not _utf8(path):
        raise ValueError(f"{str(path)!r}: the file's name is not valid UTF-8 (its documents' "
                         "ids could not be stored): rename it")
    reader = table.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: no reader for {path.suffix or 'files without a suffix'!r}; "
                         f"readable: {', '.join(sorted(table))}")
    return reader


def _scalar(value: object, name: str, *, null: bool = True) -> str:
    """A corpus field as text: a string or a number; ``null`` (or absent) is empty."""
    if value is None and null:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "null" if value is None else type(value).__name__
        raise TypeError(f"{name} must be a string or a number, got {kind}")
    return str(value)


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

    fence = ""  # the opening fence of the code block we are in ("```", "~~~~"), or ""
    for line in _lines(text):
        if fence:
            if _closes(line, fence):
                fence = ""
            body.append(line)
            continue
        opened = _FENCE.match(line)
        if opened and not (opened[1][0] == "`" and "`" in opened[2]):
            fence = opened[1]
            body.append(line)
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            content = _unclosed((heading[1] or "").rstrip(" \t")).strip()
            title, body = content or path.stem, []
        else:
            body.append(line)
    flush()
    return docs


# CommonMark: an ATX heading is 1-6 '#' after at most 3 spaces, then a space, a tab or the
# end of the line (``#tag`` and ``#######`` are text); an optional closing run of '#' goes
# (:func:`_unclosed`). No lazy group before ``[ \t]*$``: on a heading holding a long run of
# spaces that does not end it, that backtracked for a time growing with the run's square.
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]+(.*))?$")
# A fence is 3 or more '`' or '~' after at most 3 spaces; a backtick fence's info string
# holds no backtick (else the line is inline code, not a fence).
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)$")


def _unclosed(content: str) -> str:
    """A heading's text without its closing run of '#' (one preceded by a space or a tab,
    or the whole text), in one pass: a regular expression searched for ``[ \\t]+#+$``
    tried it from every space of a long run."""
    bare = content.rstrip("#")
    if bare == content or (bare and bare[-1] not in " \t"):
        return content
    return bare.rstrip(" \t")


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence``: the same character, at least as
    many of them, nothing after but spaces."""
    found = re.fullmatch(r" {0,3}(`{3,}|~{3,})[ \t]*", line)
    return found is not None and found[1][0] == fence[0] and len(found[1]) >= len(fence)
