"""The ``feedback-sqlite`` component: users' signals in a SQLite file, written off the loop."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from fractions import Fraction
from itertools import chain, groupby, repeat
from pathlib import Path
from typing import Any

import anyio
import attrs
import structlog
from aieng_hookspecs import (
    ForkGuard,
    check_layout,
    create_private,
    enable_wal,
    hookimpl,
    mark_layout,
    reclaim_space,
    sqlite_error,
    write_transaction,
)
from aieng_hookspecs.types import Feedback

from ._options import FeedbackOptions

__all__ = ["FEEDBACK_ID", "FeedbackRow", "FeedbackStore", "InvalidFeedback"]

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value REAL NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_run ON feedback (run_id);
CREATE INDEX IF NOT EXISTS feedback_kind_ts ON feedback (kind, ts);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts);
"""
#: The layout this module writes and the newest it reads (``PRAGMA user_version``; a file
#: written before the marker reads 0: the same table).
VERSION = 1


_SURROGATE = re.compile("[\ud800-\udfff]")
#: SQLite's largest LIMIT (a 64-bit integer); a larger one means "no limit" as well.
_MAX_LIMIT = 2**63 - 1
#: Rows one pruning transaction deletes: a recording waits for at most one of them.
_PRUNE_BATCH = 10_000
#: Seconds between the prunings ``retention_days`` makes as signals are recorded.
_PRUNE_EVERY_S = 3600.0
#: The bytes a checkpointed WAL file is cut back to (SQLite keeps it at the largest size
#: it ever reached otherwise: a pruning's deletes left it there for good).
_WAL_LIMIT = 1 << 20
#: The metadata key of a client's id for one signal: a signal sent again with the same run,
#: kind and id (a retried POST) is stored once.
FEEDBACK_ID = "feedback_id"
_MAX_ID_CHARS = 200


class InvalidFeedback(ValueError):
    """A signal the store refuses (a value outside its kind's range, a malformed
    ``feedback_id``): the sender's to fix. ``status`` is 422 for an HTTP front (the
    gateway answers a sink's error carrying a client-fault status with that status)."""

    status = 422


def _utf8(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD: SQLite stores UTF-8, which cannot hold
    them, and a JSON body's ``"\\ud800"`` escape puts one in a ``str``."""
    return _SURROGATE.sub("\ufffd", text)


def _mean(values: list[tuple[float, int]], count: int) -> float:
    """The mean of ``count`` values given as ``(value, how many times)``."""
    if not all(math.isfinite(value) for value, _ in values):  # stored by another writer
        return sum(value * n for value, n in values) / count  # inf, -inf or NaN
    try:  # fsum: the sum correctly rounded, n copies of a value summed in C
        return math.fsum(chain.from_iterable(repeat(v, n) for v, n in values)) / count
    except OverflowError:  # a sum past a float's range: exactly, as fractions
        return float(sum((Fraction(value) * n for value, n in values), Fraction(0)) / count)


@attrs.frozen
class FeedbackRow:
    """One stored signal.

    :param id: its row id (increasing in insertion order).
    :param ts: when it was recorded, seconds since the epoch (UTC, whatever ``TZ`` says).
    """

    id: int
    ts: float
    run_id: str
    kind: str
    value: float
    text: str
    metadata: dict[str, Any] = attrs.field(hash=False)

    @property
    def recorded_at(self) -> datetime:
        """When it was recorded, as an aware UTC datetime (``.isoformat()`` ends in
        ``+00:00``)."""
        return datetime.fromtimestamp(self.ts, UTC)


def _epoch(name: str, value: object) -> float:
    """``value`` (seconds since the epoch, or an aware ``datetime``) as seconds since the
    epoch.

    :raises ValueError: for a naive datetime (its zone unknown: read as local time, it
        would depend on ``TZ``), NaN, or anything else.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} is a datetime without a time zone ({value.isoformat()}"
                             "): give an aware one, e.g. datetime(2024, 5, 1, tzinfo=UTC), "
                             "or seconds since the epoch")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{name} must be seconds since the epoch or an aware datetime, "
                         f"got {value!r}")
    try:
        return float(value)  # an int past 64 bits is no SQLite INTEGER
    except OverflowError:  # past a float too: no bound
        return math.inf if value > 0 else -math.inf


def _utc(ts: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC text, for logs (any float)."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return repr(ts)


class FeedbackStore:
    """Explicit (``thumbs``, ``rating``, ``correction``) and implicit (``regenerate``,
    ``early_stop``) signals in one SQLite table.

    SQLite calls run in a worker thread (``anyio.to_thread``), serialised by a lock on one
    connection in WAL mode, so recording never blocks the event loop and readers (another
    process running :meth:`query`) do not block the writer.

    :param options: the database path.
    :param clock: the wall clock signals are stamped with and ``retention_days`` counts
        on, seconds since the epoch (``time.time``); a fake one in tests.
    """

    def __init__(self, options: FeedbackOptions | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options or FeedbackOptions()
        self.path = Path(self.options.path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pruned_at: float | None = None  # time.monotonic() of the last pruning
        self._fork = ForkGuard()

    def _forked(self) -> None:
        """In a forked child: a lock and, on the next call, a connection of its own."""
        if self._fork.forked():
            self._lock = threading.Lock()
            ForkGuard.set_aside(self._db)
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        # Called with the lock held, from a worker thread.
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                # reclaim: a new file gives pruned pages back to the disk (_compact); an
                # existing one is left as it is until pruned.
                enable_wal(db, size_limit=_WAL_LIMIT, reclaim=True)
                found = check_layout(db, VERSION, "aieng-monitoring")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                mark_layout(db, found, VERSION)
            except BaseException:
                db.close()  # a file that is no database: the next call opens it again
                raise
            self._db = db
        if self.options.retention_days and (
                self._pruned_at is None
                or time.monotonic() - self._pruned_at >= _PRUNE_EVERY_S):
            self._pruned_at = time.monotonic()
            try:
                self._retain(self._db)
            except sqlite3.Error as exc:  # the call at hand (a signal) goes on; next hour
                log.warning("feedback.prune_failed", path=str(self.path), error=str(exc))
        return self._db

    def _retain(self, db: sqlite3.Connection) -> int:
        """Delete what ``retention_days`` no longer keeps, by the clock; a pruning that
        deletes every signal says so (a warning): a wall clock set forward (a VM's clock
        before NTP corrects it) makes everything look old."""
        now = self.clock()
        before = now - self.options.retention_days * 86400
        newest = db.execute("SELECT max(ts) FROM feedback").fetchone()[0]
        if newest is not None and newest < before:
            log.warning("feedback.prune_all", path=str(self.path), clock=_utc(now),
                        newest=_utc(newest), retention_days=self.options.retention_days,
                        hint="every signal is older than retention_days by this machine's "
                             "clock, so all are deleted; if the clock is wrong (set forward), "
                             "fix it and restore the file from a backup")
        return self._delete_before(db, before)

    def _delete_before(self, db: sqlite3.Connection, before: float) -> int:
        """Delete the rows recorded before ``before``, a batch per transaction, and give
        their space back to the disk."""
        deleted = 0
        while True:
            done = db.execute("DELETE FROM feedback WHERE id IN (SELECT id FROM feedback "
                              "WHERE ts < ? LIMIT ?)", (before, _PRUNE_BATCH)).rowcount
            deleted += done
            if done < _PRUNE_BATCH:
                break
        if deleted:
            log.info("feedback.pruned", rows=deleted, before=before)
            self._compact(db)
        return deleted

    def _compact(self, db: sqlite3.Connection) -> None:
        """Shrink the file after a pruning: the freed pages go back to the disk (a file
        made by an earlier version, without incremental vacuum, is rebuilt with it once,
        when at least half of it is free) and the WAL file is cut back. A failure (a
        reader holding the file, a full disk) is logged: the pages stay free for later
        signals, and the next pruning tries again."""
        try:
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # not incremental
                free = db.execute("PRAGMA freelist_count").fetchone()[0]
                if free * 2 >= db.execute("PRAGMA page_count").fetchone()[0]:
                    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    db.execute("VACUUM")  # the setting takes effect as the file is rebuilt
            if not reclaim_space(db, min_pages=0, share=0, checkpoint="TRUNCATE"):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("feedback.compact_failed", path=str(self.path), error=str(exc))

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, the lock held; SQLite's errors (a file that is no database, a
        full disk, a lock held past the busy timeout) name the file, keeping their type."""
        self._forked()
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise sqlite_error(exc, f"feedback database {self.path}: {exc}") from exc

    def _check(self, feedback: Feedback) -> str | None:
        """The signal's ``feedback_id`` (``None``: it has none).

        :raises InvalidFeedback: on a value outside its kind's range, or an id that is no
            non-blank string of at most 200 characters.
        """
        bounds = self.options.value_ranges.get(feedback.kind)
        if bounds is not None and not bounds[0] <= feedback.value <= bounds[1]:
            raise InvalidFeedback(
                f"a {feedback.kind!r} signal's value must be from {bounds[0]:g} to "
                f"{bounds[1]:g}, got {feedback.value!r} (value_ranges sets the bounds)")
        key = feedback.metadata.get(FEEDBACK_ID)
        if key is None:
            return None
        if not isinstance(key, str) or not key.strip() or len(key) > _MAX_ID_CHARS \
                or _SURROGATE.search(key):
            raise InvalidFeedback(f"metadata.{FEEDBACK_ID} must be a non-blank string of at "
                                  f"most {_MAX_ID_CHARS} characters, got {key!r}")
        return key

    def _insert(self, feedback: Feedback, ts: float, key: str | None) -> int:
        with self._locked() as db:
            if key is not None:
                return self._insert_once(db, feedback, ts, key)
            return self._insert_row(db, feedback, ts)

    def _insert_once(self, db: sqlite3.Connection, feedback: Feedback, ts: float,
                     key: str) -> int:
        """Insert unless the run already has a signal of this kind with this id; the check
        and the insert in one write transaction, so two processes sending the same retry
        at once still store it once.

        :raises InvalidFeedback: when the stored signal with this id has another value or
            text (an id reused for another signal, not a retry: the first is kept).
        """
        with write_transaction(db):
            found = db.execute(
                "SELECT id, value, text FROM feedback WHERE run_id = ? AND kind = ? AND "
                "json_extract(metadata, '$.feedback_id') = ? LIMIT 1",
                (_utf8(feedback.run_id), _utf8(feedback.kind), key)).fetchone()
            if found and (found[1], found[2]) != (float(feedback.value),
                                                  _utf8(feedback.text)):
                raise InvalidFeedback(
                    f"{FEEDBACK_ID} {key!r} was sent before for run {feedback.run_id!r} "
                    f"with another {feedback.kind!r} signal (value {found[1]!r}); a retry "
                    "repeats the signal, another signal takes another id")
            row = int(found[0]) if found else self._insert_row(db, feedback, ts)
        if found:
            log.debug("feedback.duplicate", run_id=feedback.run_id, kind=feedback.kind, row=row)
        return row

    @staticmethod
    def _insert_row(db: sqlite3.Connection, feedback: Feedback, ts: float) -> int:
        cursor = db.execute(
            "INSERT INTO feedback (ts, run_id, kind, value, text, metadata) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            # float: the column is REAL; an int past 64 bits is no SQLite INTEGER.
            (ts, _utf8(feedback.run_id), _utf8(feedback.kind), float(feedback.value),
             _utf8(feedback.text),
             # ensure_ascii: a lone surrogate stays a \udXXX escape (lossless).
             json.dumps(feedback.metadata, ensure_ascii=True, sort_keys=True)))
        return int(cursor.lastrowid or 0)

    @hookimpl
    async def aieng_feedback_record(self, feedback: Feedback) -> None:
        """Store one signal (in a worker thread); one that carries a ``feedback_id`` its run
        already has a signal of this kind with is not stored again.

        :raises InvalidFeedback: on a value outside its kind's ``value_ranges``, or a
            malformed ``feedback_id``.
        """
        key = self._check(feedback)
        row = await anyio.to_thread.run_sync(self._insert, feedback, self.clock(), key)
        log.debug("feedback.recorded", run_id=feedback.run_id, kind=feedback.kind, row=row)

    def _select(self, run_id: str | None, kind: str | None, since: float | None,
                limit: int) -> list[FeedbackRow]:
        clauses, params = [], []  # type: tuple[list[str], list[Any]]
        for column, op, value in (("run_id", "=", run_id), ("kind", "=", kind),
                                  ("ts", ">=", since)):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(_utf8(value) if isinstance(value, str) else value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._locked() as db:
            rows = db.execute(
                f"SELECT id, ts, run_id, kind, value, text, metadata FROM feedback{where} "
                "ORDER BY id LIMIT ?", (*params, min(limit, _MAX_LIMIT))).fetchall()
        return [FeedbackRow(id=r[0], ts=r[1], run_id=r[2], kind=r[3], value=r[4], text=r[5],
                            metadata=json.loads(r[6])) for r in rows]

    async def query(self, *, run_id: str | None = None, kind: str | None = None,
                    since: float | datetime | None = None,
                    limit: int = 1000) -> list[FeedbackRow]:
        """Stored signals in insertion order, filtered by run, kind and time.

        :param since: only signals recorded at or after this time: seconds since the
            epoch, or an aware ``datetime`` (a naive one is refused: its zone is unknown).
        :param limit: at most this many rows (1 or more).
        :raises ValueError: on a limit below 1, or a ``since`` that is neither a number
            nor an aware datetime.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        bound = None if since is None else _epoch("since", since)
        return await anyio.to_thread.run_sync(self._select, run_id, kind, bound, limit)

    def _prune(self, before: float) -> int:
        with self._locked() as db:
            return self._delete_before(db, before)

    async def prune(self, before: float | datetime) -> int:
        """Delete the signals recorded before ``before`` (seconds since the epoch, or an
        aware ``datetime``), in batches of 10,000 rows so that recording goes on
        meanwhile; ``retention_days`` does this by itself.

        :returns: how many signals were deleted.
        :raises ValueError: for a ``before`` that is not a finite number or an aware
            datetime (a naive one is refused: its zone is unknown).
        """
        bound = _epoch("before", before)
        if not math.isfinite(bound):
            raise ValueError(f"before must be a finite time, got {before!r}")
        return await anyio.to_thread.run_sync(self._prune, bound)

    def _summarise(self) -> dict[str, dict[str, float]]:
        with self._locked() as db:
            # Each distinct value with its count: the mean is summed here (SQLite's AVG is
            # a running double sum before 3.43: ten 0.1s averaged 0.09999999999999999).
            rows = db.execute("SELECT kind, value, COUNT(*) FROM feedback "
                              "GROUP BY kind, value ORDER BY kind").fetchall()
        summary: dict[str, dict[str, float]] = {}
        for kind, group in groupby(rows, key=lambda row: row[0]):
            values = [(value, n) for _, value, n in group]
            count = sum(n for _, n in values)
            summary[kind] = {"count": count, "mean": _mean(values, count)}
        return summary

    async def summary(self) -> dict[str, dict[str, float]]:
        """Per kind (in name order): how many signals and the mean of their values (the
        sum correctly rounded, then divided: within one ulp of the exact mean, finite for
        finite values)."""
        return await anyio.to_thread.run_sync(self._summarise)

    def _close(self) -> None:
        self._forked()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Close the database (a later call reopens it)."""
        await anyio.to_thread.run_sync(self._close)
