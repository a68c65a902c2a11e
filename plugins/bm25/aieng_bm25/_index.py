"""The tantivy index behind ``bm25``: schema, analyzer, writes and searches (blocking).

tantivy is imported when an index opens, never when this module is imported, so that
``aieng plugins`` stays fast (tests/test_index.py::test_import_does_not_load_tantivy).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aieng_hookspecs import UNWRITABLE, ForkGuard
from aieng_hookspecs.types import Document, Hit

from ._fields import check_text, dump_metadata, filter_token, id_key, load_metadata
from ._locks import INHERITED, POLL_S, IndexLockedError, creating, retry, stop_if_cancelled, writing
from ._options import ANALYZER, ANALYZERS, MEMORY, BM25Options
from ._rows import DocumentTable, builder

if TYPE_CHECKING:
    import tantivy

    from ._impacts import Impacts

__all__ = ["ANALYZER", "ANALYZERS", "BM25Index", "IndexLockedError"]

# Fields. "key" is the digest of the id (see _fields.id_key); "filter" holds one digest per
# top-level metadata entry (see _fields.filter_token); neither is stored. "row" is a fast
# field: a random number per document version, the key of the document table (_rows).
_ID, _KEY, _TITLE, _TEXT, _METADATA, _FILTER = "id", "key", "title", "text", "metadata", "filter"
_ROW = "row"
# aieng_v2's stored title and text (UTF-8; stored only): see _schema.
_STORED_TITLE, _STORED_TEXT = "stored_title", "stored_text"
# The most distinct query terms whose term queries are kept for reuse.
_TERM_CACHE = 65_536
# Words longer than this (bytes) are dropped at indexing and querying alike: they are
# hashes, base64 or run-together junk, and would bloat the term dictionary.
_MAX_TOKEN_BYTES = 40
# Documents added between two looks at whether the caller left.
_CANCEL_EVERY = 1024
_MIB = 1024 * 1024
# How tantivy's errors (ValueError) carry the OS error under them: "... (os error 28)",
# or, for its lock files, "IoError(Os { code: 30, kind: ReadOnlyFilesystem, ... })".
_OS_ERROR = re.compile(r"\(os error (\d+)\)|\bOs \{ code: (\d+)")
_WRITE_FAILED = ("nothing of this write was committed: the index keeps its last commit; "
                 "make room (or make the folder writable) and retry")
# What tantivy writes into a folder before the index's meta.json (its file list, its
# locks, the temporary files of its atomic writes): a folder holding only these is an
# index being created (by another process, at this moment) or whose creation was cut
# short, not a folder of the user's files.
_TANTIVY_OWN = re.compile(r"\.managed\.json|\.tantivy-(?:meta|writer)\.lock|\.tmp[0-9A-Za-z]{6}")
# A tantivy segment's files ("<segment id>.idx", ".term", ..., "<id>.<opstamp>.del"):
# written only after the index's meta.json, so beside no meta.json they are an index
# that lost it, not one being created.
_SEGMENT_FILE = re.compile(r"[0-9a-f]{32}\.(?:[0-9]+\.)?[a-z]+")
# Placeholders that leave a folder as empty as it was: what keeps an empty folder in git
# (.gitkeep, .keep, a .gitignore) and what macOS and Windows drop into folders they show.
# tantivy deletes only the files it lists, so they stay beside the index.
_PLACEHOLDERS = frozenset({".gitkeep", ".keep", ".gitignore", ".DS_Store", "Thumbs.db",
                           "desktop.ini"})
# Unchecked constructors (see _rows.builder): Document(id, text, title, metadata) and
# Hit(document, score, rank, source).
_new_document, _new_hit = builder(Document), builder(Hit)


# aieng_v2's words are aieng_en_v1's (tantivy's simple tokenizer: runs of the characters
# Rust calls alphanumeric, char::is_alphanumeric), except that every Chinese, Japanese or
# Korean character (Han, hiragana, katakana, hangul; the kana marks ー ｰ ﾞ ﾟ) is a word of
# its own, wherever it stands ("Pythonは" is "python", "は"). Both run the same tantivy
# analyzer: aieng_v2 feeds it the text with a space on either side of every CJK character
# (_split_cjk), which makes those words and no others, at the same positions. tantivy's
# regex tokenizer could cut them itself but costs ~2 µs more a word on any text; this
# costs nothing on ASCII text and a scan by Python's re on other text.
#: The CJK characters that are alphanumeric (Unicode 17, as Rust's std), exactly: what
#: aieng_v2 makes a word each; those of the BMP, then the others (tests/test_analyzer.py
#: checks every code point against the specification, a regex of Unicode properties).
_CJK = (
    r"\u1100-\u11ff\u3005\u3007\u3021-\u3029\u3038-\u303b\u3041-\u3096\u309d-\u309f"
    r"\u30a1-\u30fa\u30fc-\u30ff\u3131-\u318e\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\ua960-\ua97c\uac00-\ud7a3\ud7b0-\ud7c6\ud7cb-\ud7fb\uf900-\ufa6d\ufa70-\ufad9"
    r"\uff66-\uffbe\uffc2-\uffc7\uffca-\uffcf\uffd2-\uffd7\uffda-\uffdc")
_CJK_ASTRAL = (
    r"\U00016fe3\U00016ff0-\U00016ff6\U0001aff0-\U0001aff3\U0001aff5-\U0001affb"
    r"\U0001affd-\U0001affe\U0001b000-\U0001b122\U0001b132\U0001b150-\U0001b152\U0001b155"
    r"\U0001b164-\U0001b167\U00020000-\U0002a6df\U0002a700-\U0002b81d\U0002b820-\U0002cead"
    r"\U0002ceb0-\U0002ebe0\U0002ebf0-\U0002ee5d\U0002f800-\U0002fa1d\U00030000-\U0003134a"
    r"\U00031350-\U00033479")
# A run of adjacent CJK characters, as fast as re can find it. re tests a class of BMP
# characters with one table lookup, but ranges past the BMP one by one (~100 ns a
# character for these): a character is tested against the BMP ones and a single range
# spanning the others, and only one in that range against them (the lookbehind). A
# pattern that starts with a class is searched by that class alone (~10 µs a kB of text
# without CJK, against ~100 for one that starts with a group), hence the first character
# apart.
_ONE_CJK = rf"[{_CJK}\U00016fe3-\U00033479](?<=[{_CJK}{_CJK_ASTRAL}])"
_CJK_RUNS = re.compile(
    rf"({_ONE_CJK}(?:[{_CJK}]+|[\U00016fe3-\U00033479](?<=[{_CJK_ASTRAL}]))*)")


def _split_cjk(text: str) -> str:
    """``text`` as aieng_v2 gives it to the analyzer: a space on either side of every CJK
    character (ASCII text, and text without CJK, unchanged)."""
    if text.isascii():
        return text
    parts = _CJK_RUNS.split(text)
    if len(parts) == 1:
        return text
    # run.replace("", " ") is " " + " ".join(run) + " ", without a string per character.
    parts[1::2] = [run.replace("", " ") for run in parts[1::2]]
    return "".join(parts)


def _analyzer() -> tantivy.TextAnalyzer:
    """The analyzer of both aieng_en_v1 and aieng_v2: tantivy's simple tokenizer's words
    (runs of Unicode letters and digits), lower-cased, accents folded (``café`` →
    ``cafe``), Lucene's 33 English stopwords dropped, Snowball English (Porter2) stems. A
    CJK character passes the filters unchanged."""
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(_MAX_TOKEN_BYTES))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema(analyzer: str) -> tantivy.Schema:
    """The schema of an index whose title and text go through the analyzer ``analyzer``.

    The analyzer's name is part of it, so an index opens only with the analyzer it was
    made with: query terms are never cut one way and matched against terms cut another.
    aieng_en_v1 stores the title and text in their indexed fields; aieng_v2 indexes them
    as _split_cjk makes them, so it stores them as written in fields of their own.
    """
    import tantivy

    v1 = analyzer == "aieng_en_v1"
    builder = tantivy.SchemaBuilder()
    builder.add_text_field(_ID, stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(_KEY, stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(_TITLE, stored=v1, tokenizer_name=analyzer)
    builder.add_text_field(_TEXT, stored=v1, tokenizer_name=analyzer)
    builder.add_bytes_field(_METADATA, stored=True)
    builder.add_text_field(_FILTER, stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field(_ROW, stored=False, indexed=False, fast=True)
    if not v1:
        builder.add_bytes_field(_STORED_TITLE, stored=True)
        builder.add_bytes_field(_STORED_TEXT, stored=True)
    return builder.build()


# An analyzer's name says its version ("aieng_v2", "aieng_en_v1"): one above the newest
# this version knows was made by a later aieng-bm25.
_VERSIONED = re.compile(r"aieng_(?:[a-z]+_)?v([0-9]+)")
_NEWEST = max(int(found.group(1)) for name in ANALYZERS
              if (found := _VERSIONED.fullmatch(name)) is not None)


def _analyzers_of(folder: Path) -> set[str]:
    """The analyzers (tokenizer names) of the text fields in the schema that ``folder``'s
    ``meta.json`` records; none when it cannot be read."""
    try:
        fields = json.loads((folder / "meta.json").read_bytes())["schema"]
        return {str(field["options"]["indexing"]["tokenizer"]) for field in fields
                if field.get("name") in (_TITLE, _TEXT)}
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return set()


def _utf8(text: str) -> str:
    """``text`` with lone surrogates replaced: tantivy takes only what encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _stored_text(stored: dict[str, list[Any]], field: str) -> str:
    """The stored title or text ``field`` of a document (str, or aieng_v2's UTF-8)."""
    value = (stored.get(field) or [""])[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _remove_private(folder: str, owner: int) -> None:
    """Remove a read-only open's private folder, in the process that made it only: a child
    forked from it (multiprocessing "fork", gunicorn --preload) that closes the index, or
    exits, must not take it from the parent, still searching through it."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _clamp(score: float) -> float:
    # A Hit's score must be a finite float; BM25 sums are, but a boost could overflow.
    score = float(score)
    if math.isfinite(score):
        return score
    return 0.0 if math.isnan(score) else math.copysign(sys.float_info.max, score)


class BM25Index:
    """A BM25 index in tantivy, on disk or in memory; every method blocks, all are
    thread-safe.

    Writes (:meth:`add`, :meth:`delete`) take a lock, so they run one at a time; each
    opens a tantivy writer, commits and reloads the searcher, so a write is visible to the
    next search and the folder's writer lock is free between writes. Searches take no
    lock and run in parallel (tantivy releases the GIL while it searches). The index
    opens on first use, or by :meth:`open`.

    :param options: the component's options (``path``, ``title_boost``, writer budget).
    """

    def __init__(self, options: BM25Options) -> None:
        self.options = options
        self._lock = threading.RLock()
        self._index: tantivy.Index | None = None
        self._schema: tantivy.Schema | None = None
        self._analyzer: tantivy.TextAnalyzer | None = None
        self._analyzer_name = ""
        self._v2 = False  # whether the index's analyzer is aieng_v2
        self._table = DocumentTable(options.document_cache)
        # term -> its clauses (on text, and on title with title_boost), built once; the
        # same for pairs of CJK characters (their phrase queries), keyed by the pair.
        self._clauses: dict[str, list[tuple[tantivy.Occur, tantivy.Query]]] = {}
        self._pair_clauses: dict[str, list[tuple[tantivy.Occur, tantivy.Query]]] = {}
        # scorer = "impacts": the precomputed term weights, and the count of this object's
        # commits (with meta.json's state on disk, it names the committed index).
        self._impacts: Impacts | None = None
        if options.scorer == "impacts":
            from ._impacts import Impacts  # numpy loads only for this scorer

            self._impacts = Impacts(options.title_boost, self.terms)
        self._commits = 0
        folder = self.folder
        self._meta = None if folder is None else str(folder / "meta.json")
        # A folder opened read-only: the OS error that refused writing there (errno), and
        # the removal of the private folder that tantivy opens instead (see _read_only_at).
        self._read_only = 0
        self._unlink: Callable[[], Any] | None = None
        # The process this object's lock and tantivy index belong to (see _forked), and
        # whether a write is in progress (what a child forked meanwhile inherits).
        self._fork = ForkGuard()
        self._writing = False
        self._torn = False  # an in-memory index forked mid-write: its copy stays locked

    # -- opening and closing -------------------------------------------------------------

    @property
    def in_memory(self) -> bool:
        """Whether the index lives in RAM (``path = ":memory:"``)."""
        return self.options.path == MEMORY

    @property
    def folder(self) -> Path | None:
        """The index folder (``~`` expanded), or ``None`` in memory."""
        return None if self.in_memory else Path(self.options.path).expanduser()

    @property
    def analyzer(self) -> str:
        """The name of the index's analyzer (one of ``ANALYZERS``), opening the index: the
        one it was made with, which cuts its documents and its queries."""
        self._open()
        return self._analyzer_name

    def open(self) -> None:
        """Open the index, creating the folder and an empty index when missing.

        An existing index opens with the analyzer it was made with; a new one is made
        with ``options.analyzer``.

        :raises ValueError: when the path is a file, a folder holding other files, or an
            index with another schema (not made by this version of aieng-bm25).
        """
        self._open()
        self.refresh()

    def refresh(self) -> None:
        """With ``scorer = "impacts"``, bring the impacts up to the last commit now (the
        next search would do it first otherwise); nothing with ``scorer = "tantivy"``.

        Called by :meth:`open`, so that opening pays the first build. A write does not
        rebuild: it leaves the impacts stale, and the next search (or this call) rebuilds
        once for all the writes before it, so a bulk load of ``n`` batches costs one
        rebuild, not ``n``.
        """
        if self._impacts is not None:
            self._impacts.current(self._stamp, self._live)

    def _open(self) -> tantivy.Index:
        if self._fork.forked():
            self._forked()
        index = self._index
        if index is not None:
            return index
        with self._locked():
            if self._index is None:
                self._index = self._create()
            return self._index

    def _create(self) -> tantivy.Index:
        import tantivy

        folder, name = self.folder, self.options.analyzer
        if folder is None:
            schema = _schema(name)
            index = tantivy.Index(schema)
        else:
            self._check_folder(folder)
            with creating(folder, self.options.path, self.options.lock_timeout):
                name, schema, index = self._reuse(folder)
        analyzer = _analyzer()
        index.register_tokenizer(name, analyzer)
        self._clauses, self._pair_clauses = {}, {}  # of another analyzer, if any
        self._schema, self._analyzer, self._analyzer_name = schema, analyzer, name
        self._v2 = name == "aieng_v2"
        return index

    def _reuse(self, folder: Path, where: Path | None = None
               ) -> tuple[str, tantivy.Schema, tantivy.Index]:
        """The name of the analyzer of the index in ``folder``, its schema and the index:
        the analyzer it was made with (an existing index keeps its own), or
        ``options.analyzer`` for a new one. tantivy opens ``where`` (``folder`` itself, or
        the private folder of a read-only open)."""
        import tantivy

        wanted = self.options.analyzer
        for name in (wanted, *(other for other in ANALYZERS if other != wanted)):
            schema = _schema(name)
            try:
                return name, schema, tantivy.Index(schema, path=str(where or folder),
                                                   reuse=True)
            except ValueError as exc:
                found = _OS_ERROR.search(str(exc))
                if (where is None and found is not None and (folder / "meta.json").exists()
                        and int(found.group(1) or found.group(2)) in UNWRITABLE):
                    # tantivy creates its lock files even to read: open it read-only.
                    return self._read_only_at(folder, int(found.group(1) or found.group(2)))
                if "schema does not match" not in str(exc):
                    # tantivy names a damaged file relative to the folder (or not at all):
                    # say which index it is, and what to do.
                    raise self._disk_error(
                        exc, "opening the index", "make room (or make the folder readable "
                        "and writable) and retry") or ValueError(
                        f"{folder}: the tantivy index there cannot be opened ({exc}); if a "
                        "file of it is damaged or missing, restore the folder from a backup, "
                        "or delete it and index the documents again") from exc
        newer = sorted(_analyzers_of(folder) - set(ANALYZERS))
        if newer and all((found := _VERSIONED.fullmatch(name)) is not None
                         and int(found.group(1)) > _NEWEST for name in newer):
            raise ValueError(
                f"{folder} holds an index made by a newer aieng-bm25: its analyzer "
                f"{', '.join(newer)} is unknown to this version (analyzers "
                f"{', '.join(ANALYZERS)}); upgrade aieng-bm25 to open it (the folder is left "
                "as it is)") from None
        raise ValueError(
            f"{folder} holds a tantivy index with another schema: it was not made by this "
            f"version of aieng-bm25 (analyzers {', '.join(ANALYZERS)}); index into a new "
            "folder, or delete this one to rebuild it") from None

    def _read_only_at(self, folder: Path, number: int
                      ) -> tuple[str, tantivy.Schema, tantivy.Index]:
        """Open the index of ``folder``, which this process cannot write (``number``, the
        OS error), for searching only: tantivy opens a private temporary folder holding a
        copy of the index's ``meta.json`` (the last commit, as of now) and links to its
        other files, and every write is refused (see :meth:`_write`)."""
        try:
            private = Path(tempfile.mkdtemp(prefix="aieng-bm25-read-only-"))
        except OSError as exc:
            raise OSError(number, f"the index folder cannot be written ({os.strerror(number)})"
                          f", and no temporary folder to open it read-only from ({exc}): set "
                          "TMPDIR to a writable folder", str(folder)) from exc
        unlink = weakref.finalize(self, _remove_private, str(private), os.getpid())
        try:
            for entry in folder.iterdir():
                if entry.name in ("meta.json", ".managed.json"):
                    shutil.copyfile(entry, private / entry.name)
                elif entry.is_file() and not _TANTIVY_OWN.fullmatch(entry.name):
                    (private / entry.name).symlink_to(entry.absolute())
            opened = self._reuse(folder, private)
        except BaseException:
            unlink()
            raise
        self._read_only, self._unlink = number, unlink
        self._meta = str(private / "meta.json")  # what the impacts are built from
        return opened

    def _forked(self) -> None:
        """In a child forked from the process that opened the index (multiprocessing
        "fork", gunicorn ``--preload``): a lock of its own (one another thread held at the
        fork, mid-write, is never released here: every write and ``close`` hung), and a
        tantivy index of its own on a folder, opened on next use (the parent's is set
        aside, never used nor dropped). An in-memory index is the child's copy, kept; if
        a write was in progress at the fork, the copy's writer lock stays held, and
        writes here are refused (:meth:`_write`)."""
        self._lock = threading.RLock()
        if self.in_memory:
            self._torn = self._writing
            return
        if self._index is not None:
            INHERITED.append(self._index)
            self._index = None
        if self._unlink is not None:  # a read-only open's private folder: the parent's
            self._unlink, self._read_only = None, 0
            self._meta = str(Path(self.options.path).expanduser() / "meta.json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this object's lock (writes run one at a time), waiting for it in steps: a
        caller that left meanwhile (a deadline) ends the wait."""
        while not self._lock.acquire(timeout=POLL_S):
            stop_if_cancelled()
        try:
            yield
        finally:
            self._lock.release()

    @staticmethod
    def _check_folder(folder: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; path must name a folder for the index")
        if folder.is_dir() and not (folder / "meta.json").exists() and any(
                _SEGMENT_FILE.fullmatch(path.name) for path in folder.iterdir()):
            raise ValueError(
                f"{folder} holds a tantivy index's segment files but no meta.json (its list "
                "of commits: lost or deleted), so the index cannot be opened; restore the "
                "folder from a backup, or delete it and index the documents again")
        if folder.is_dir() and not (folder / "meta.json").exists() and any(
                not _TANTIVY_OWN.fullmatch(path.name) and path.name not in _PLACEHOLDERS
                for path in folder.iterdir()):
            # Refuse to write index files among a user's own files.
            raise ValueError(
                f"{folder} is a folder of other files, not a tantivy index; give an empty or "
                "new folder for the index")
        folder.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Release the index's files; the next use opens it again.

        In memory the index is kept: it lives as long as this object, so a component
        shared by several pipelines does not lose its documents when one of them closes.
        """
        if self._fork.forked():
            self._forked()
        with self._lock:
            if not self.in_memory:
                self._index = None
                self._table.clear()
                if self._impacts is not None:
                    self._impacts.clear()
                if self._unlink is not None:  # a read-only open's private folder
                    self._unlink()
                    self._unlink, self._read_only = None, 0
                    self._meta = str(Path(self.options.path).expanduser() / "meta.json")

    # -- writing -------------------------------------------------------------------------

    def add(self, documents: Sequence[Document]) -> int:
        """Add documents; one whose id is indexed already replaces it (an upsert).

        The batch is checked whole before anything is written, and written in one commit:
        a bad document fails the call with nothing written. Within a batch the last
        document with an id wins.

        :returns: the number of documents written (distinct ids in the batch).
        :raises ValueError: naming the document whose text is not valid Unicode or whose
            metadata is not JSON.
        :raises IndexLockedError: when another writer keeps the index locked.
        """
        latest: dict[str, Document] = {}
        for doc in documents:
            if not isinstance(doc, Document):
                raise TypeError(f"expected Document, got {type(doc).__name__}")
            latest[doc.id] = doc
        checked = [(doc, self._check(doc)) for doc in latest.values()]
        if not checked:
            return 0
        self._open()  # its analyzer decides the fields (see _prepare)
        prepared = [self._prepare(doc, stored) for doc, stored in checked]
        if self._impacts is not None:
            for _, _, number, entry in prepared:
                self._impacts.note(number, entry)

        def upsert(writer: tantivy.IndexWriter) -> None:
            for number, (key, row, _, _) in enumerate(prepared, start=1):
                # Deletes apply to what was added before them (opstamp order), so this
                # removes the old version and leaves the new one.
                writer.delete_documents_by_term(_KEY, key)
                writer.add_document(row)
                if number % _CANCEL_EVERY == 0:
                    stop_if_cancelled()  # a caller gone: roll back, nothing written

        with self._locked():
            self._write(upsert)
            self._table.forget(list(latest))
            for _, _, number, entry in prepared:
                self._table.put(number, entry)
        return len(prepared)

    @staticmethod
    def _check(doc: Document) -> bytes:
        """The stored metadata of a document, raising ``ValueError`` when it cannot be
        indexed (see :meth:`add`)."""
        for field, value in ((_ID, doc.id), (_TITLE, doc.title), (_TEXT, doc.text)):
            check_text(doc.id, field, value)
        return dump_metadata(doc.id, doc.metadata)

    def _prepare(self, doc: Document, stored: bytes
                 ) -> tuple[str, tantivy.Document, int, Document]:
        """The id key, the tantivy row, the row number and the table entry of a document
        checked by :meth:`_check`, its metadata ``stored``, for the open index."""
        import tantivy

        row = tantivy.Document()
        key, number = id_key(doc.id), self._table.new_row()
        row.add_text(_ID, doc.id)
        row.add_text(_KEY, key)
        if self._v2:
            row.add_text(_TITLE, _split_cjk(doc.title))
            row.add_text(_TEXT, _split_cjk(doc.text))
            row.add_bytes(_STORED_TITLE, doc.title.encode("utf-8"))
            row.add_bytes(_STORED_TEXT, doc.text.encode("utf-8"))
        else:
            row.add_text(_TITLE, doc.title)
            row.add_text(_TEXT, doc.text)
        row.add_bytes(_METADATA, stored)
        row.add_unsigned(_ROW, number)
        for name, value in load_metadata(stored).items():
            row.add_text(_FILTER, filter_token(name, value))
        # The table's copy is the document as a search returns it: metadata through JSON
        # (a fresh dict, tuples as lists), not the caller's objects.
        return key, row, number, _new_document(doc.id, doc.text, doc.title,
                                               load_metadata(stored))

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; ids that are not indexed are ignored.

        :returns: the number of documents deleted.
        :raises TypeError: for a lone string (one id is ``[id]``, not its characters).
        :raises IndexLockedError: when another writer keeps the index locked.
        """
        if isinstance(ids, (str, bytes)):
            # Iterating it would delete one document per character ("42": "4" and "2").
            raise TypeError("ids must be a sequence of document ids, got a string "
                            "(give [id] for one)")
        wanted = list(dict.fromkeys(ids))
        keys = sorted({id_key(doc_id) for doc_id in wanted})
        if not keys:
            return 0
        index = self._open()
        present: list[str] = []

        def find() -> list[str]:
            # The last commit of any writer (another process's too), not the searcher's
            # view, which tantivy reloads on its own only about half a second after it.
            index.reload()
            searcher = index.searcher()
            return [key for key in keys if self._count_key(searcher, key)]

        def remove(writer: tantivy.IndexWriter) -> bool:
            present[:] = find()  # again: nobody can commit while this writer lives
            for key in present:
                writer.delete_documents_by_term(_KEY, key)
            return bool(present)

        with self._locked():
            if find() and self._write(remove):
                self._table.forget(wanted)
                if self._impacts is not None:
                    self._impacts.forget(wanted)
        return len(present)

    def _count_key(self, searcher: tantivy.Searcher, key: str) -> int:
        import tantivy

        query = tantivy.Query.term_query(self._schema_(), _KEY, key, index_option="basic")
        # A key names at most one live document (every write deletes before it adds).
        return len(searcher.search(query, limit=1, count=False).hits)

    def _write(self, work: Callable[[tantivy.IndexWriter], bool | None]) -> bool:
        """Run ``work(writer)`` on a fresh writer, commit, and make it visible to searches;
        roll back on any error, or when ``work`` returns ``False`` (nothing to write).
        Call with ``self._lock`` held.

        :returns: whether it committed.
        """
        index = self._open()
        if self._torn:
            raise RuntimeError(
                "this in-memory bm25 index was being written by another thread when the "
                "process forked: the child's copy of it stays locked, and takes no writes; "
                "write in the parent, or build the index after the fork")
        if self._read_only:
            raise OSError(
                self._read_only, f"the index folder cannot be written "
                f"({os.strerror(self._read_only)}): it was opened read-only, for searches; "
                "nothing was written. Make the folder writable (or copy it to a writable "
                "place and use that path) to index into it", str(self.folder))
        # While the writer lives, a child forked lets go of its lock files (see _locks).
        with writing(self.folder):
            writer = self._writer(index)
            self._writing = True
            try:
                changed = work(writer) is not False
                stop_if_cancelled()  # the last look: past it, the commit lands
                if changed:
                    writer.commit()
                else:
                    writer.rollback()
            except BaseException as exc:
                writer.rollback()
                error = self._disk_error(exc, "writing to the index")
                if error is None:
                    raise
                raise error from exc
            finally:
                # Ends the writer (and its merge threads), releasing the folder's lock.
                writer.wait_merging_threads()
                self._writing = False
        if not changed:
            return False
        index.reload()
        # A new stamp: the next search rebuilds the impacts (see refresh), and no search
        # that begins once this write returns answers from a build without it.
        self._commits += 1
        return True

    def _disk_error(self, exc: BaseException, doing: str,
                    then: str = _WRITE_FAILED) -> OSError | None:
        """The ``OSError`` (its errno, the index folder) of a tantivy error caused by one
        (a full disk, a read-only folder), or ``None`` for another error.

        :param doing: what failed ("writing to the index").
        :param then: what it leaves, and what to do.
        """
        found = _OS_ERROR.search(str(exc)) if isinstance(exc, ValueError) else None
        if found is None:
            return None
        number = int(found.group(1) or found.group(2))
        return OSError(number, f"{doing} failed: {os.strerror(number)} (tantivy: {exc}); "
                       f"{then}", str(self.folder) if self.folder is not None else None)

    def _writer(self, index: tantivy.Index) -> tantivy.IndexWriter:
        """A writer of ``index``, waiting up to ``lock_timeout`` for another one to end."""
        heap = self.options.writer_heap_mb * _MIB

        def attempt() -> tantivy.IndexWriter | None:
            try:
                return index.writer(heap_size=heap, num_threads=self.options.writer_threads)
            except ValueError as exc:
                if "LockBusy" in str(exc):
                    return None
                error = self._disk_error(exc, "starting a write")
                if error is None:
                    raise
                raise error from exc

        return retry(attempt, self.options.lock_timeout, lambda wait: IndexLockedError(
            f"{self.options.path}: another writer has held the index for {wait:g} s "
            "(lock_timeout; another process indexing into this folder?); retry when it is "
            "done, or raise lock_timeout (seconds)"))

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of documents in the index."""
        return int(self._open().searcher().num_docs)

    def get(self, doc_id: str) -> Document | None:
        """The indexed document with this id, as it was indexed, or ``None``."""
        import tantivy

        searcher = self._open().searcher()
        query = tantivy.Query.term_query(self._schema_(), _KEY, id_key(doc_id),
                                         index_option="basic")
        found = searcher.search(query, limit=1, count=False).hits
        return self._documents(searcher, found)[0] if found else None

    def _documents(self, searcher: tantivy.Searcher,
                   hits: list[tuple[Any, tantivy.DocAddress]]) -> list[Document]:
        """The documents of ``hits``: from the document table, else from the store."""
        addresses = [address for _, address in hits]
        table = self._table
        # Row numbers are ints (None only with the table off: then every get misses).
        numbers: list[Any] = (searcher.fast_field_values(_ROW, addresses) if table.limit
                              else [None] * len(addresses))
        documents = []
        get = table.get
        title, text = (_STORED_TITLE, _STORED_TEXT) if self._v2 else (_TITLE, _TEXT)
        for address, number in zip(addresses, numbers, strict=True):
            document = get(number)
            if document is None:
                stored = searcher.doc(address).to_dict()
                # Built unchecked: every field was validated when the document was
                # indexed (a non-blank id, str text and title, JSON metadata).
                document = _new_document(
                    stored[_ID][0], _stored_text(stored, text), _stored_text(stored, title),
                    load_metadata((stored.get(_METADATA) or [b""])[0]))
                if isinstance(number, int):
                    table.put(number, document)
            documents.append(document)
        return documents

    def terms(self, text: str) -> list[str]:
        """The index terms of ``text``: what the analyzer makes of it, in order."""
        self._open()
        analyzer = self._analyzer
        assert analyzer is not None
        if text.isascii():  # most text: no CJK, no lone surrogate
            return list(analyzer.analyze(text))
        text = _utf8(text)
        return list(analyzer.analyze(_split_cjk(text) if self._v2 else text))

    def _pairs(self, text: str) -> list[str]:
        """The pairs of adjacent CJK characters of ``text`` (two-character strings), in
        order, with an ``aieng_v2`` index; none with ``aieng_en_v1``, whose terms are
        whole runs."""
        if text.isascii():  # most queries: no CJK, and no need to look
            return []
        self._open()
        if not self._v2:
            return []
        return [run[i:i + 2] for run in _CJK_RUNS.findall(_utf8(text))
                for i in range(len(run) - 1)]

    def _schema_(self) -> tantivy.Schema:
        self._open()
        assert self._schema is not None
        return self._schema

    def build_query(self, text: str, filters: Mapping[str, Any] | None = None
                    ) -> tantivy.Query | None:
        """The tantivy query for ``text``, or ``None`` when nothing can match.

        The user's text never meets tantivy's query parser: it is cut into terms by the
        index's own analyzer, and the query is a boolean OR of one term query per distinct
        term, boosted by the term's count in the query (the classic BM25 query-term
        frequency), on the text and, weighted by ``title_boost``, on the title. Query
        syntax (``title:``, quotes, ``AND``, ``*``...) is therefore plain text: its words are
        searched, its punctuation ignored.

        With ``aieng_v2``, whose terms are single CJK characters, each pair of adjacent CJK
        characters of the query is also a clause: a two-word phrase query (the bigram,
        matched through the positions), counted and weighted as a term, so that a document
        holding the query's words ranks above one holding their characters scattered.

        :param filters: equality filters on top-level metadata keys, all of which must hold.
            A ``None`` filter value is left out of the query: it also holds for a document
            that lacks the key, which no index term says, so :meth:`search` applies it to
            the hits.
        """
        import tantivy

        counts = Counter(self.terms(text))
        if not counts:
            return None
        schema = self._schema_()
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        for term, count in counts.items():
            if count == 1:
                clauses += self._term_clauses(term)
            else:
                clauses += self._term_clauses(term, float(count))
        for pair, count in Counter(self._pairs(text)).items():
            clauses += self._pair_clauses_(pair, float(count))
        query = tantivy.Query.boolean_query(clauses)
        if not filters:
            return query
        must = tantivy.Occur.Must
        wanted: list[tuple[tantivy.Occur, tantivy.Query]] = []
        for name, value in filters.items():
            if value is None:  # null or missing: checked on the hits (see search)
                continue
            try:
                token = filter_token(name, value)
            except (TypeError, ValueError):
                return None  # a value that is not JSON equals no stored value
            wanted.append((must, tantivy.Query.term_query(schema, _FILTER, token,
                                                          index_option="basic")))
        if not wanted:
            return query
        # The filter must match but must not score: a constant 0 keeps the BM25 scores.
        only = tantivy.Query.const_score_query(tantivy.Query.boolean_query(wanted), 0.0)
        return tantivy.Query.boolean_query([(must, query), (must, only)])

    def _term_clauses(self, term: str, count: float = 1.0
                      ) -> list[tuple[tantivy.Occur, tantivy.Query]]:
        """The OR clauses of one query term occurring ``count`` times in the query: on the
        text, boosted by ``count``, and on the title, boosted by ``count * title_boost``.
        Those of count 1 are kept for reuse (tantivy queries are immutable)."""
        import tantivy

        if count == 1.0:
            cached = self._clauses.get(term)
            if cached is not None:
                return cached
        schema, should = self._schema_(), tantivy.Occur.Should
        on_text = tantivy.Query.term_query(schema, _TEXT, term, index_option="freq")
        clauses = [(should, on_text if count == 1.0
                    else tantivy.Query.boost_query(on_text, count))]
        title_boost = self.options.title_boost
        if title_boost > 0:
            on_title = tantivy.Query.term_query(schema, _TITLE, term, index_option="freq")
            weight = title_boost * count
            clauses.append((should, on_title if weight == 1.0
                            else tantivy.Query.boost_query(on_title, weight)))
        if count == 1.0:
            if len(self._clauses) >= _TERM_CACHE:
                self._clauses.clear()
            self._clauses[term] = clauses
        return clauses

    def _pair_clauses_(self, pair: str, count: float
                       ) -> list[tuple[tantivy.Occur, tantivy.Query]]:
        """The OR clauses of a pair of adjacent CJK characters occurring ``count`` times in
        the query: its phrase query on the text and on the title, boosted as a term's."""
        import tantivy

        if count == 1.0:
            cached = self._pair_clauses.get(pair)
            if cached is not None:
                return cached
        schema, should = self._schema_(), tantivy.Occur.Should
        words: list[str | tuple[int, str]] = [pair[0], pair[1]]
        on_text = tantivy.Query.phrase_query(schema, _TEXT, words)
        clauses = [(should, on_text if count == 1.0
                    else tantivy.Query.boost_query(on_text, count))]
        title_boost = self.options.title_boost
        if title_boost > 0:
            on_title = tantivy.Query.phrase_query(schema, _TITLE, words)
            weight = title_boost * count
            clauses.append((should, on_title if weight == 1.0
                            else tantivy.Query.boost_query(on_title, weight)))
        if count == 1.0:
            if len(self._pair_clauses) >= _TERM_CACHE:
                self._pair_clauses.clear()
            self._pair_clauses[pair] = clauses
        return clauses

    def search(self, text: str, k: int, filters: Mapping[str, Any] | None = None,
               *, source: str = "bm25") -> list[Hit]:
        """The best ``k`` documents for ``text`` by BM25, best first.

        Any text gives a list, possibly empty, never an error: see :meth:`build_query`.

        :param filters: equality filters on metadata (see :meth:`build_query`).
        :param source: the ``source`` of the hits.
        :returns: at most ``k`` hits, ranks 1..n, scores not increasing, equal scores in
            document id order (Python string order) on every path, the top-``k``
            boundary included: which of several tied documents make the top ``k`` does
            not depend on the order they were indexed in. With ``scorer = "impacts"``
            and no filters, the exact BM25 of the impacts.
        """
        if k < 1:
            return []
        if self._impacts is not None and not filters and not self._pairs(text):
            # (the impacts hold term weights only: a query with CJK pairs, whose phrase
            # clauses need the positions, goes to tantivy, as one with filters does)
            return self._search_impacts(text, k, source)
        query = self.build_query(text, filters)
        if query is None:
            return []
        searcher = self._open().searcher()
        total = int(searcher.num_docs)
        if total == 0:
            return []
        nulls = [name for name, value in (filters or {}).items() if value is None]
        found, documents = self._search_top(searcher, query, k, total, nulls)
        # Unchecked too: the rank counts from 1 and _clamp makes the score finite.
        return [_new_hit(document, _clamp(score), rank, source)
                for rank, ((score, _), document) in enumerate(zip(found, documents, strict=True),
                                                               start=1)]

    def _search_top(self, searcher: tantivy.Searcher, query: tantivy.Query, k: int,
                    total: int, nulls: list[str]
                    ) -> tuple[list[tuple[Any, tantivy.DocAddress]], list[Document]]:
        """The best ``k`` hits of ``query``, with their documents, equal scores in id order
        (the boundary included); with ``nulls``, only those whose metadata has ``null`` or
        nothing under each of these keys (a missing key reads as ``null``, as in the
        ``vectors`` and ``memory`` retrievers).

        tantivy breaks ties by segment and document number (the order of indexing), so
        it is asked for ``k + 1`` hits (``4 k`` with ``nulls``): when the last one scores
        below the ``k``-th kept, no hit left out can enter the top ``k``, and one call
        answers; while they tie (or fewer than ``k`` pass the ``nulls``), the fetch
        widens (doubles; 4 times with ``nulls``) up to the document count. Equal means
        equal float32 scores as tantivy returns them.
        """
        # limit never above the document count: tantivy sizes its top-k buffer by it.
        limit = min(total, 4 * k if nulls else k + 1)
        grow = 4 if nulls else 2
        while True:
            found = searcher.search(query, limit=limit, count=False).hits
            documents = self._documents(searcher, found)
            pairs = list(zip(found, documents, strict=True))
            if nulls:
                pairs = [(hit, document) for hit, document in pairs
                         if all(document.metadata.get(name) is None for name in nulls)]
            pairs.sort(key=lambda pair: (-pair[0][0], pair[1].id))
            if (len(found) < limit or limit >= total
                    or (len(pairs) >= k and pairs[k - 1][0][0] > found[-1][0])):
                pairs = pairs[:k]
                return [hit for hit, _ in pairs], [document for _, document in pairs]
            limit = min(total, grow * limit)

    # -- the impacts scorer ---------------------------------------------------------------

    def _stamp(self) -> tuple[int, tuple[int, int, int] | None]:
        """What names the committed index: this object's commits, and the state of the
        folder's meta.json (which every commit, of any process, rewrites)."""
        if self._meta is None:
            return self._commits, None
        try:
            meta = os.stat(self._meta)
        except OSError:
            return self._commits, None
        return self._commits, (meta.st_mtime_ns, meta.st_size, meta.st_ino)

    def _live(self) -> list[tuple[int | None, Document]]:
        """(row number, document) of every live document of the last commit."""
        import tantivy

        index = self._open()
        index.reload()  # see a commit of another process at once
        searcher = index.searcher()
        total = int(searcher.num_docs)
        if total == 0:
            return []
        hits = searcher.search(tantivy.Query.all_query(), limit=total, count=False).hits
        rows: list[Any] = searcher.fast_field_values(_ROW, [address for _, address in hits])
        return list(zip(rows, self._documents(searcher, hits), strict=True))

    def _search_impacts(self, text: str, k: int, source: str) -> list[Hit]:
        """:meth:`search` by the precomputed impacts (``scorer = "impacts"``, no filters)."""
        impacts = self._impacts
        assert impacts is not None
        terms = self.terms(text)
        if not terms:
            return []
        built = impacts.current(self._stamp, self._live)
        where, scores = impacts.search(built, terms, k)
        if scores and not math.isfinite(scores[0]):  # the best; all are positive
            scores = [_clamp(score) for score in scores]
        docs, new_hit = built.docs, _new_hit
        # Unchecked: the rank counts from 1, the scores are finite floats.
        return [new_hit(docs[i], score, rank, source)
                for rank, i, score in zip(range(1, len(where) + 1), where, scores,
                                          strict=True)]
