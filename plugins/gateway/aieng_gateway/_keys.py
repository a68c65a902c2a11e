"""API keys: created once, stored hashed in SQLite, checked in constant time.

A key is ``aieng-<id>-<secret>``: ``id`` is 8 random hex characters kept in clear as the
lookup handle (and the only thing ever logged), ``secret`` 32 random bytes (256 bits,
``secrets.token_urlsafe``). The database holds the SHA-256 of the whole key. A slow,
salted password hash (bcrypt, scrypt, argon2) exists to make *guessing* low-entropy
passwords expensive; a 256-bit random secret cannot be guessed, so a fast hash loses
nothing, and it keeps each request's check in microseconds. The stored hash is compared
with :func:`hmac.compare_digest`, so timing tells an attacker nothing about it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import structlog
from aieng_hookspecs import (
    CacheDirError,
    check_layout,
    create_private,
    enable_wal,
    mark_layout,
    open_read_only,
    sqlite_busy,
    user_data_dir,
    writable,
)

__all__ = ["ApiKey", "KeyStore", "KeyStoreError", "default_keys_path", "hash_key"]

_KEY = re.compile(r"^aieng-([0-9a-f]{8})-[A-Za-z0-9_-]{43}$")
_ID = re.compile(r"^[0-9a-f]{8}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    created REAL NOT NULL,
    revoked REAL
);
"""
#: The layout this module writes and the newest it reads (``PRAGMA user_version``; a file
#: written before the marker reads 0: the same table).
VERSION = 1
#: Pauses (seconds) before a refresh reads the file again when a read fails, or finds no
#: key where the last one found some: a file copied over in place is empty, then torn, for
#: a moment. A lock held past the busy timeout has been waited for already: not retried.
_RETRY_PAUSES = (0.05, 0.25)
#: Seconds a key file (and its -wal) must have been left alone before a refresh may trust
#: that a file whose status is unchanged holds the keys it read: a write within the same
#: tick of the file system's clock (coarse: milliseconds, 2 s on FAT) as the status taken
#: before a read leaves the status as it was.
_SETTLED_S = 2.0

#: What :meth:`KeyStore._status` reads of a file: device, inode, size, mtime, ctime (ns).
_Stat = tuple[int, int, int, int, int]

log = structlog.get_logger(__name__)


def default_keys_path() -> Path:
    """``$AIENG_KEYS`` (``~`` expanded), else ``$XDG_DATA_HOME/aieng/keys.sqlite3``, else
    ``~/.local/share/aieng/keys.sqlite3``. A relative ``XDG_DATA_HOME`` is ignored, as the
    XDG spec says (it would put the keys in whatever folder the server starts in).

    :raises KeyStoreError: when the path would be under a home folder and there is none
        (no ``HOME``, no passwd entry: a container's arbitrary user).
    """
    env = os.environ.get("AIENG_KEYS")
    if env:
        return Path(env).expanduser()
    try:
        return user_data_dir() / "keys.sqlite3"
    except CacheDirError:  # no HOME and no passwd entry for this user
        raise KeyStoreError(
            "no home folder to keep the API keys in (HOME is unset and this user has no "
            "passwd entry): set AIENG_KEYS (or an absolute XDG_DATA_HOME) to the key "
            "database's path, or pass --keys FILE") from None


def hash_key(key: str) -> str:
    """The SHA-256 (hex) stored for a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStoreError(Exception):
    """The key database cannot be read or written (not a database, locked, no access)."""


@attrs.frozen
class ApiKey:
    """One key's record (never the key itself).

    :param id: the public lookup handle (8 hex characters).
    :param rpm: requests per minute (``None``: no limit).
    :param tpm: tokens per minute, prompt plus completion (``None``: no limit).
    :param revoked: when it was revoked, or ``None``.
    """

    id: str
    name: str
    rpm: int | None
    tpm: int | None
    created: float
    revoked: float | None = None
    hash: str = attrs.field(default="", repr=False)


class KeyStore:
    """The keys of one SQLite file (WAL), with an in-memory copy for the request path.

    :meth:`verify` reads the in-memory copy; it is reloaded from the file at most every
    ``refresh_s`` seconds (:meth:`refresh`, called by the server off the event loop), so a
    key created or revoked by ``aieng keys`` in another process takes effect within that
    (within ``2 * refresh_s`` while the file cannot be read: see :meth:`refresh`).

    :param path: the database file (created with its folder, mode 0600; ``~`` expanded).
        It is marked with its layout (``PRAGMA user_version`` :data:`VERSION`); a file of
        a newer layout is refused (:class:`KeyStoreError`), left as it is.
    :param refresh_s: the most seconds the in-memory copy is served before the file is
        read again (on the server's monotonic clock); a positive, finite number, else a
        ``ValueError``.

    A file this process cannot write (a read-only mount, a file of another owner it may
    only read) is opened for reading (:attr:`read_only`): its keys are loaded and verified
    as usual (each refresh reopens it, so a change to the file is seen), an older unmarked
    file is read without the mark, and :meth:`create` and :meth:`revoke` are refused with
    a :class:`KeyStoreError` naming the file and what to do. The server writes nothing to
    the file in any case (rate-limit buckets live in its memory).
    """

    def __init__(self, path: str | Path, *, refresh_s: float = 5.0) -> None:
        if isinstance(refresh_s, bool) or not isinstance(refresh_s, (int, float)) \
                or not math.isfinite(refresh_s) or refresh_s <= 0:
            # NaN would never be stale (the copy served forever), 0 or less read the file
            # on every request, infinity never again.
            raise ValueError(f"refresh_s must be a positive, finite number of seconds, "
                             f"got {refresh_s!r}")
        self.path = Path(path).expanduser()
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cache: dict[str, ApiKey] = {}
        self._loaded_at = -float("inf")
        #: Whether the file was last opened for reading only (see the class).
        self.read_only = False
        self._clock: Callable[[], float] = time.monotonic  # the copy's age (tests move it)
        self._pause: Callable[[float], None] = time.sleep
        self._busy_s = 5.0  # SQLite's busy timeout: how long a lock held elsewhere is waited
        self._read_at = -float("inf")  # the last good read (``_loaded_at`` is reset by writes)
        self._rows = 0  # the keys it found, revoked ones included
        self._failure: KeyStoreError | None = None  # the last read's, while it fails
        self._reads = 0  # reads done, so a call that waited for one takes its outcome
        self._wall: Callable[[], float] = time.time  # against the files' times (tests move it)
        # The status of the file and its -wal when the copy was read, if they had settled
        # (see _SETTLED_S): while it is unchanged, a refresh keeps the copy instead of
        # reading every key again (100,000 keys take half a second of the server's CPU).
        self._read_status: tuple[_Stat | None, ...] | None = None

    def _read_only(self) -> bool:
        """Whether the file exists and this process may not write it or its folder (a
        read-only mount, a file of another owner it may only read)."""
        return self.path.is_file() and not writable(self.path)

    def _cannot_write(self, what: str) -> KeyStoreError:
        return KeyStoreError(
            f"the key database {self.path} cannot be written (a read-only mount, or a file "
            f"or folder this user may only read), so no key can be {what} here: run this "
            "'aieng keys' command where the file can be written (where the image or volume "
            "is made), or give --keys a writable file; 'aieng keys list' and 'aieng serve' "
            "read it as it is")

    @contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        if self._read_only():
            with self._db_read_only(write=write) as db:
                yield db
            return
        self.read_only = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)  # 0600 before any row: no moment readable by others
            if not self.path.exists() and not os.access(self.path.parent, os.W_OK | os.X_OK):
                raise KeyStoreError(  # SQLite would say "unable to open database file"
                    f"the key database {self.path} cannot be created: its folder cannot be "
                    "written (a read-only mount?); give --keys a file in a writable folder")
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_s)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(f"the key database {self.path} cannot be used: {exc}") from exc
        try:
            enable_wal(db, timeout=self._busy_s)
            # A newer layout's keys may carry what this version cannot enforce: refused.
            found = check_layout(db, VERSION, "aieng-gateway")
            db.executescript(_SCHEMA)
            mark_layout(db, found, VERSION)
            yield db
        except sqlite3.Error as exc:  # "file is not a database", "database is locked"...
            raise KeyStoreError(f"the key database {self.path} cannot be used: {exc}") from exc
        finally:
            db.close()

    @contextmanager
    def _db_read_only(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """The file opened for reading (:attr:`read_only`): its layout checked, neither
        made WAL nor given the schema nor marked (an older, unmarked file is read as it
        is); a write is refused naming the file and what to do."""
        try:
            db = open_read_only(self.path, timeout=self._busy_s)
        except sqlite3.Error as exc:
            hint = ""
            wal = Path(f"{self.path}-wal")
            if wal.is_file() and wal.stat().st_size:
                hint = (": its -wal file holds writes not yet in the database, and its "
                        "folder cannot be written to read them; open it once where it can be "
                        "written ('aieng keys list' there), or copy it with its -wal file")
            raise KeyStoreError(f"the key database {self.path} cannot be used: {exc}{hint}"
                                ) from exc
        try:
            check_layout(db, VERSION, "aieng-gateway")
            self.read_only = True
            if write:
                raise self._cannot_write("created or revoked")
            yield db
        except sqlite3.Error as exc:
            raise KeyStoreError(f"the key database {self.path} cannot be used: {exc}") from exc
        finally:
            db.close()

    def create(self, name: str, *, rpm: int | None = None, tpm: int | None = None
               ) -> tuple[str, ApiKey]:
        """Make a key; returns ``(key, record)``. The key is shown once and not stored.

        :raises ValueError: on a blank name, a name with control characters (it would
            forge rows of ``aieng keys list``) or shaped like a key id (8 hex characters:
            ``revoke`` takes either), or a limit below 1.
        :raises KeyStoreError: when the database cannot be used.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a key needs a non-empty name")
        if not name.isprintable():
            raise ValueError(f"a key name cannot hold control characters: {name!r}")
        if _ID.match(name):
            raise ValueError(f"a key name cannot look like a key id (8 hex characters): "
                             f"{name!r}")
        for label, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                      or limit < 1):
                raise ValueError(f"{label} must be an integer >= 1 (or unset), got {limit!r}")
        with self._db(write=True) as db:
            while True:
                key_id = secrets.token_hex(4)
                if db.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone() \
                        is None:
                    break
            key = f"aieng-{key_id}-{secrets.token_urlsafe(32)}"
            record = ApiKey(id=key_id, name=name, rpm=rpm, tpm=tpm, created=time.time(),
                            hash=hash_key(key))
            db.execute("INSERT INTO api_keys (id, name, hash, rpm, tpm, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (record.id, name, record.hash, rpm, tpm, record.created))
        self._loaded_at = -float("inf")
        return key, record

    def records(self) -> list[ApiKey]:
        """Every key record, revoked ones included, oldest first (none, and no file
        created, when the database does not exist).

        :raises KeyStoreError: when the database cannot be read.
        """
        if not self.path.exists():
            return []
        with self._db() as db:
            if self.read_only and db.execute(  # read as it is: no table made, so none kept
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'"
                    ).fetchone() is None:
                return []
            rows = db.execute("SELECT id, name, rpm, tpm, created, revoked, hash "
                              "FROM api_keys ORDER BY created").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, id_or_name: str) -> list[ApiKey]:
        """Revoke the key with this id, or else every live key with this name. An id
        match wins: a key whose name happens to be another key's id is left alone.

        :returns: the keys revoked (empty when none matched, or no database exists).
        :raises KeyStoreError: when the database cannot be used.
        """
        if not self.path.exists():
            return []
        now = time.time()
        with self._db(write=True) as db:
            by_id = db.execute("SELECT 1 FROM api_keys WHERE id = ?",
                               (id_or_name,)).fetchone() is not None
            rows = db.execute("SELECT id FROM api_keys WHERE revoked IS NULL AND "
                              + ("id = ?" if by_id else "name = ?"), (id_or_name,)).fetchall()
            for (key_id,) in rows:
                db.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (now, key_id))
        self._loaded_at = -float("inf")
        return [k for k in self.records() if k.id in {r[0] for r in rows}]

    def refresh(self, *, force: bool = False) -> None:
        """Reload the live keys into memory when the copy is older than ``refresh_s``
        (blocking: call it from a worker thread).

        A read that fails, or finds no key (not even a revoked one) where the last good
        read found some, is tried twice more after a short pause (a file copied over in
        place is empty, then torn, for a moment; a lock held past the busy timeout is not
        waited for again). When it still fails, the keys of the last good read are kept
        and served, with one ``gateway.keys_stale`` warning, until that read is
        ``2 * refresh_s`` old; after that (and always with ``force``, or with no good read
        yet) the :class:`KeyStoreError` is raised: the server answers 503, fail closed.
        While one call reads the file, another returns at once while the copy may be
        served, else waits and takes that read's outcome rather than reading again.
        A file whose status (and its -wal's: place, size, times) is the one it had when
        the copy was read, at least :data:`_SETTLED_S` after its last change, is not read
        again: nothing wrote it, and the copy is current (a server with 100,000 keys
        would otherwise read them all every ``refresh_s``).

        :raises KeyStoreError: when the file cannot be read and the copy is too old.
        """
        if not force and not self.stale:
            return
        seen = self._reads
        if not self._lock.acquire(blocking=False):
            if not force and self._servable():  # another call is reading the file
                return
            self._lock.acquire()
        try:
            if not force and self._reads != seen:  # one was read while this call waited
                if self._failure is None or self._servable():
                    return
                raise KeyStoreError(str(self._failure))
            status = self._status()
            if not force and self._failure is None and status is not None \
                    and status == self._read_status:  # no writer touched it: still current
                self._reads += 1
                self._loaded_at = self._read_at = self._clock()
                return
            try:
                records = self._read()
            except KeyStoreError as exc:
                self._reads += 1
                self._read_status = None
                first, self._failure = self._failure is None, exc
                if force or not self._servable():
                    raise
                if first:
                    log.warning("gateway.keys_stale", keys=str(self.path), error=str(exc)[:300],
                                effect="the keys read "
                                       f"{self._clock() - self._read_at:.1f} s ago are served "
                                       f"until they are {2 * self.refresh_s:g} s old; then "
                                       "every keyed request is refused (503 keys_unavailable) "
                                       "until the file reads again")
                return
            self._reads += 1
            self._failure, self._rows = None, len(records)
            self._cache = {k.id: k for k in records if k.revoked is None}
            self._loaded_at = self._read_at = self._clock()
            self._read_status = status if self._settled(status) else None
        finally:
            self._lock.release()

    def _status(self) -> tuple[_Stat | None, ...] | None:
        """What the file system says of the key file and its -wal (where each is, its
        size, when it or its metadata last changed): a write, a copy over in place, a
        rename over it, a change of mode or owner each change it. ``None`` when the file
        cannot be looked at."""
        found: list[_Stat | None] = []
        for path in (self.path, Path(f"{self.path}-wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                if path == self.path:
                    return None
                found.append(None)
            except OSError:
                return None
            else:
                found.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                              st.st_ctime_ns))
        return tuple(found)

    def _settled(self, status: tuple[_Stat | None, ...] | None) -> bool:
        """Whether every time in ``status`` is :data:`_SETTLED_S` older than now, so a
        later write cannot leave it unchanged."""
        if status is None:
            return False
        newest = max((max(item[3], item[4]) for item in status if item is not None),
                     default=0)
        return newest / 1e9 < self._wall() - _SETTLED_S

    def _servable(self) -> bool:
        """Whether the in-memory copy may still be served while the file cannot be read:
        until the read that made it is ``2 * refresh_s`` old."""
        return self._clock() - self._read_at < 2 * self.refresh_s

    def _read(self) -> list[ApiKey]:
        """The file's records, read again after each of :data:`_RETRY_PAUSES` while the read
        fails (but for a lock already waited for) or finds no key where the last found
        some."""
        for pause in (*_RETRY_PAUSES, None):
            try:
                records = self.records()
                if records or not self._rows:
                    return records
                found = ("holds no key, not even a revoked one," if self.path.exists()
                         else "is gone")
                raise KeyStoreError(
                    f"the key database {self.path} {found} where the last read found "
                    f"{self._rows}: it is being copied over in place, or was removed or "
                    "replaced by an empty file; put the key file back (or create a key in "
                    "it: 'aieng keys create NAME')")
            except KeyStoreError as exc:
                cause = exc.__cause__
                if pause is None or sqlite_busy(cause):
                    raise
            self._pause(pause)
        raise AssertionError("unreachable")  # the last pass returns or raises

    @property
    def live(self) -> int:
        """How many live (unrevoked) keys the in-memory copy held at the last refresh."""
        return len(self._cache)

    @property
    def stale(self) -> bool:
        """Whether :meth:`refresh` would reload."""
        return self._clock() - self._loaded_at >= self.refresh_s

    def verify(self, key: str) -> ApiKey | None:
        """The live key's record, or ``None`` (unknown, malformed or revoked). Reads only
        memory; the comparison takes the same time whatever the stored hash is."""
        match = _KEY.match(key)
        if match is None:
            return None
        record = self._cache.get(match.group(1))
        if record is None:
            return None
        return record if hmac.compare_digest(record.hash, hash_key(key)) else None
