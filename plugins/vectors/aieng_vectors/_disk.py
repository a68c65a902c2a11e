"""The on-disk layout of a ``vectors`` index: snapshots plus a write-ahead journal.

::

    PATH/index.json        manifest: format, generation, embedding model, dimension
    PATH/gen-N/            snapshot N: vectors.npy (float32 rows), documents.jsonl (one row
                           per vector, with its HNSW key), hnsw.usearch (when built)
    PATH/journal.jsonl     writes since snapshot N: one JSON line per upsert or delete
    PATH/LOCK              held (flock) by the one writer that has the folder open, or shared
                           by the read-only components that have it open

Every ``aieng_index`` batch and ``delete`` appends one line to the journal and fsyncs it,
so a write that returned survives a crash; rewriting the whole snapshot per batch would
make indexing quadratic. A snapshot is written on close, on ``flush()`` and when the
journal outgrows the snapshot: into a fresh ``gen-N+1`` folder, then the manifest is
replaced atomically, then the journal is emptied. Journal lines carry their generation,
so lines a crash left behind after a snapshot are recognised as already applied.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np
from aieng_hookspecs import UNWRITABLE, fsync_folder
from aieng_hookspecs.types import Document

__all__ = ["FORMAT", "Folder", "Manifest", "Snapshot"]

FORMAT = 1
MANIFEST = "index.json"
JOURNAL = "journal.jsonl"
LOCK = "LOCK"


@attrs.frozen
class Manifest:
    """What ``index.json`` records."""

    generation: int
    model: str
    dim: int
    next_key: int = 0
    hnsw: bool = False


@attrs.frozen
class Snapshot:
    """A snapshot's content: row ``i`` of ``vectors`` belongs to ``documents[i]``."""

    documents: list[Document]
    keys: list[int]
    vectors: Any  # np.ndarray[float32] of shape (n, dim)
    hnsw_file: Path | None


def _document_row(doc: Document, key: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": doc.id, "text": doc.text}
    if doc.title:
        row["title"] = doc.title
    if doc.metadata:
        row["metadata"] = doc.metadata
    if key is not None:
        row["key"] = key
    return row


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be stored: its metadata is not JSON ({exc})") from None


# Metadata values that JSON stores and reads back as they are.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _as_stored(doc: Document) -> Document:
    """``doc`` as a folder reads it back: its metadata through JSON (a tuple becomes a
    list, an object's keys strings), so that hits and filters see the same values
    before and after the folder is reopened. Flat metadata of plain values is kept."""
    if all(type(value) in _PLAIN for value in doc.metadata.values()):
        return doc
    stored = json.loads(_dumps(doc.metadata, f"document {doc.id!r}"))
    return attrs.evolve(doc, metadata=stored)


def _read_document(row: dict[str, Any]) -> Document:
    return Document(id=row["id"], text=row["text"], title=row.get("title", ""),
                    metadata=row.get("metadata") or {})


class Folder:
    """One index folder: reads and writes its manifest, snapshots and journal."""

    def __init__(self, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise ValueError(f"vectors path {root} exists and is not a folder")
        self.root = root
        self._journal: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None
        #: bytes appended to the journal since the last snapshot
        self.journal_bytes = 0
        #: the generation of the last manifest this object switched to (-1: none yet)
        self.switched = -1
        #: the OS error (errno) that keeps this process from writing the folder, which
        #: :meth:`lock` then opened read-only (for searches); 0: writable
        self.read_only = 0
        #: whether the read-only open was asked for (the ``read_only`` option)
        self.requested = False

    # -- locking -------------------------------------------------------------------------

    def lock(self, read_only: bool = False) -> None:
        """Take the folder's lock, so two components never write one index.

        A writer holds it exclusively. A reader holds it shared, with any number of other
        readers and no writer: a component asking for it (``read_only``, for a folder
        that holds an index), or one on a folder holding an index that this process
        cannot write (a read-only mount, ``chmod a-w``), which then opens read-only too
        (:attr:`read_only`).

        :raises RuntimeError: when another component or process has the folder open in a
            way that excludes this one (saying which way).
        :raises FileNotFoundError: when ``read_only`` and the folder holds no index.
        """
        if read_only:
            if not self.root.is_dir():
                raise self._no_index()
            self.read_only, self.requested = errno.EROFS, True
            handle = self._reader_handle()
        else:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                handle = open(self.root / LOCK, "ab")  # noqa: SIM115 (held until unlock)
            except OSError as exc:
                if exc.errno not in UNWRITABLE or not (self.root / MANIFEST).is_file():
                    raise
                self.read_only = exc.errno
                handle = self._reader_handle()
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory lock; one writer is the caller's job
            self._lock = handle
        else:
            if handle is not None:
                try:
                    fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if self.read_only
                                                  else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                except OSError:
                    message = self._held(handle, fcntl)
                    handle.close()
                    raise RuntimeError(message) from None
            self._lock = handle
        if read_only and not (self.root / MANIFEST).exists():
            self.unlock()
            raise self._no_index()

    def _reader_handle(self) -> IO[bytes] | None:
        """The LOCK file opened for a shared lock; ``None`` when there is none and none can
        be made (a folder copied without it onto a read-only place: no writer there)."""
        try:
            return open(self.root / LOCK, "rb")  # (held until unlock)
        except FileNotFoundError:
            if not (self.root / MANIFEST).is_file():
                return None  # no index, and no writer ever here: nothing to make
        try:  # a writable folder copied without its LOCK: made, so a writer sees readers
            return open(self.root / LOCK, "ab")  # (held until unlock)
        except OSError as exc:
            if exc.errno not in UNWRITABLE:
                raise
            return None

    def _held(self, handle: IO[bytes], fcntl: Any) -> str:
        """What to say when the lock this folder wanted is held by another component."""
        where = f"the vectors index at {self.root}"
        if self.read_only:
            return (f"{where} is open for writing in another component or process (aieng "
                    "index, or a pipeline without read_only); read-only components do not "
                    "open beside a writer: let it finish (close that pipeline), then open "
                    "again")
        try:  # a shared lock taken where the exclusive one was not: readers hold it
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return (f"{where} is open in another component or process; close that pipeline "
                    "first (one writer per index folder)")
        return (f"{where} is open read-only in another component or process (read_only = "
                "true: serving workers?); a writer needs the folder to itself: stop the "
                "read-only ones first, then index (and start them again after)")

    def _no_index(self) -> FileNotFoundError:
        return FileNotFoundError(
            errno.ENOENT, f"no vectors index at {self.root} (no {MANIFEST}): a read_only "
            "component searches an index that exists; check the path, or build the index "
            "there first (aieng index, with read_only off)", str(self.root / MANIFEST))

    def unlock(self) -> None:
        """Release the lock and the journal (closing the files releases the flock)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- reading -------------------------------------------------------------------------

    def manifest(self) -> Manifest | None:
        """The manifest, or ``None`` for a folder never written to.

        :raises ValueError: when it is unreadable or of an unknown format.
        """
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            found = data.get("format")
            if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT:
                raise ValueError(
                    f"format {found}: a newer aieng-vectors wrote it (this one reads format "
                    f"{FORMAT}); upgrade aieng-vectors to open it (the folder is left as it is)")
            if found != FORMAT:
                raise ValueError(f"unknown format {found!r} (expected {FORMAT})")
            return Manifest(generation=int(data["generation"]), model=str(data["model"]),
                            dim=int(data["dim"]), next_key=int(data.get("next_key", 0)),
                            hnsw=bool(data.get("hnsw", False)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"the vectors index at {self.root} has a bad {MANIFEST}: "
                             f"{exc}") from None

    def snapshot(self, manifest: Manifest) -> Snapshot:
        """The snapshot the manifest names (empty for generation 0).

        :raises ValueError: when its files disagree with each other.
        """
        if manifest.generation == 0:
            return Snapshot([], [], np.zeros((0, manifest.dim), np.float32), None)
        folder = self.root / f"gen-{manifest.generation}"
        try:
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            documents: list[Document] = []
            keys: list[int] = []
            with open(folder / "documents.jsonl", encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    documents.append(_read_document(row))
                    keys.append(int(row["key"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"the vectors index at {self.root} has an unreadable snapshot "
                             f"{folder.name}: {exc}") from None
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape != (
                len(documents), manifest.dim):
            raise ValueError(f"the vectors index at {self.root}: snapshot {folder.name} holds "
                             f"vectors of shape {vectors.shape} for {len(documents)} documents "
                             f"of dimension {manifest.dim}")
        hnsw = folder / "hnsw.usearch"
        return Snapshot(documents, keys, vectors, hnsw if hnsw.exists() else None)

    def journal(self, generation: int) -> Iterator[dict[str, Any]]:
        """The journal's operations of ``generation``, in order.

        A torn last line (a crash in the middle of an append) ends the journal: it is cut
        off so that later appends follow a whole line. A damaged line followed by whole
        ones is no torn append (a crash tears the last line only): cutting the journal
        there would drop writes that returned, so it is an error, the journal untouched.

        The journal is read twice, a line at a time: once to check it (the lines after a
        damaged one decide whether it is an error), then to yield its operations. Holding
        them all between the two would need as much memory as the journal, which may grow
        as large as the snapshot (1.5 GB for 1M x 384 vectors) before it is folded.

        :raises ValueError: naming the journal and the damaged line.
        """
        path = self.root / JOURNAL
        if not path.exists():
            return
        good, damaged = 0, 0  # bytes of whole lines; the first damaged line's number
        wanted: list[tuple[int, int]] = []  # (offset, length) of the lines of generation
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                op = _operation(raw)
                if damaged:
                    if op is not None:
                        raise ValueError(
                            f"the vectors index at {self.root}: {JOURNAL} line {damaged} is "
                            f"damaged, and line {number} after it is whole (no crash leaves "
                            "that): the folder is left as it is; restore it from a backup, "
                            f"or cut {JOURNAL} before line {damaged} to open the index "
                            "without the writes from there on")
                elif op is None:
                    damaged = number
                else:
                    if op["gen"] == generation:
                        wanted.append((good, len(raw)))
                    good += len(raw)
        if good != path.stat().st_size and not self.read_only:
            with open(path, "r+b") as handle:
                handle.truncate(good)
        self.journal_bytes = good
        with open(path, "rb") as handle:
            for offset, length in wanted:
                handle.seek(offset)
                op = _operation(handle.read(length))
                if op is None:  # changed since it was checked: no other writer can do it
                    raise ValueError(f"the vectors index at {self.root}: {JOURNAL} changed "
                                     "while it was read; open the folder again")
                yield op

    def drop_journal(self) -> None:
        """Empty a journal that no manifest goes with (the index was cleared by hand): its
        lines would otherwise be read back beside the next writes of a new index."""
        path = self.root / JOURNAL
        if path.exists() and path.stat().st_size and not self.read_only:
            with open(path, "r+b") as handle:
                handle.truncate(0)
        self.journal_bytes = 0

    # -- writing -------------------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace the manifest atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, **attrs.asdict(manifest)}
        tmp = self.root / f"{MANIFEST}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / MANIFEST)
        self.switched = manifest.generation  # even should the fsync below fail
        fsync_folder(self.root)

    def append_upsert(self, generation: int, documents: Sequence[Document],
                      vectors: Any) -> list[Document]:
        """Journal an upsert of ``documents`` with their (unit, float32) ``vectors``.

        :returns: the documents as the folder will read them back (metadata through JSON).
        """
        blob = base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        rows = [_document_row(doc) for doc in documents]
        self._append(_dumps({"gen": generation, "op": "upsert", "documents": rows,
                             "dim": int(vectors.shape[1]), "vectors": blob.decode("ascii")},
                            f"document {documents[0].id!r} (or another of its batch)"))
        return [_as_stored(doc) for doc in documents]

    def append_delete(self, generation: int, ids: Sequence[str]) -> None:
        """Journal a delete of ``ids``."""
        self._append(_dumps({"gen": generation, "op": "delete", "ids": list(ids)}, "delete"))

    def _append(self, line: str) -> None:
        # backslashreplace: a lone surrogate (a str may hold one, UTF-8 cannot) only occurs
        # inside a JSON string, where it becomes its JSON escape ``\udXXX`` and reads back
        # as the same character.
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            if self._journal is None:
                self._journal = open(self.root / JOURNAL, "ab")  # noqa: SIM115 (kept open)
                # The journal holds journal_bytes of whole lines: cut off what a failed
                # append left (see below) before appending after it.
                self._journal.truncate(self.journal_bytes)
            self._journal.write(data)
            self._journal.flush()
            os.fsync(self._journal.fileno())
        except BaseException:
            # A failed append (a full disk) may have written part of its line: the next
            # open would stop at that torn line and drop every later write. Drop the
            # handle (and what its buffer holds) and cut the part off; should that fail
            # too, the next append cuts it before writing.
            handle, self._journal = self._journal, None
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
            with contextlib.suppress(OSError):
                os.truncate(self.root / JOURNAL, self.journal_bytes)
            raise
        self.journal_bytes += len(data)

    def write_snapshot(self, manifest: Manifest, documents: Sequence[Document],
                       keys: Sequence[int], vectors: Any, hnsw: Any) -> None:
        """Write snapshot ``manifest.generation``, switch the manifest to it, empty the
        journal and remove older snapshots."""
        final = self.root / f"gen-{manifest.generation}"
        tmp = self.root / f"gen-{manifest.generation}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with open(tmp / "vectors.npy", "wb") as handle:
            np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32),
                    allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        # backslashreplace: see _append.
        with open(tmp / "documents.jsonl", "w", encoding="utf-8",
                  errors="backslashreplace") as text:
            text.writelines(_dumps(_document_row(doc, key), f"document {doc.id!r}") + "\n"
                            for doc, key in zip(documents, keys, strict=True))
            text.flush()
            os.fsync(text.fileno())
        if hnsw is not None:
            hnsw.save(str(tmp / "hnsw.usearch"))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_folder(self.root)
        try:
            self.write_manifest(manifest)
        finally:
            if self.switched == manifest.generation:
                # The journal's lines are of the older generation now, skipped at the next
                # open: whatever happens below, the next append reopens the journal and
                # cuts them (see _append) before writing.
                self.journal_bytes = 0
                stale, self._journal = self._journal, None
                if stale is not None:
                    with contextlib.suppress(OSError):
                        stale.close()
        with open(self.root / JOURNAL, "wb") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        for old in self.root.glob("gen-*"):
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)


# The fields of each journal operation, and their types.
_OPERATIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "upsert": {"documents": list, "dim": int, "vectors": str},
    "delete": {"ids": list},
}


def _operation(raw: bytes) -> dict[str, Any] | None:
    """The operation of a journal line, or ``None`` for a torn or damaged line."""
    if not raw.endswith(b"\n"):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    op: dict[str, Any] = value
    fields = _OPERATIONS.get(str(op.get("op")))
    if fields is None or not isinstance(op.get("gen"), int) or not all(
            isinstance(op.get(name), kind) for name, kind in fields.items()):
        return None
    return op


def decode_vectors(op: dict[str, Any], count: int) -> Any:
    """The vectors of a journal upsert line, as a float32 array of ``count`` rows."""
    raw = base64.b64decode(op["vectors"])
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(count, int(op["dim"]))


def decode_documents(op: dict[str, Any]) -> list[Document]:
    """The documents of a journal upsert line."""
    return [_read_document(row) for row in op["documents"]]
