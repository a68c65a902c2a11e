"""A file's SHA-256, computed once per file version: the digest of a multi-GB model file
is kept on disk under a name made of the file's path, device, inode, size, mtime and
ctime, so a later load does not read the whole file again (~1 s/GB).

The memo holds at most :data:`MEMO_ENTRIES` digests: every rewrite, copy or move of a
file makes a new entry and the old one is never asked for again, so a host whose models
are re-downloaded or re-installed would otherwise add one per version for ever. An entry
read is marked used (its mtime set to now); writing a new entry removes the least
recently used ones past the bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

import structlog
from aieng_hookspecs import remove_abandoned, scratch_path

__all__ = ["file_digest"]

log = structlog.get_logger(__name__)

#: Files smaller than this are hashed every time (cheaper than reading a memo entry).
MEMO_MIN = 1 << 20
#: A file changed less than this many seconds ago is not memoized: it may still be
#: written within the same timestamp tick, which would leave its stat line unchanged.
MEMO_SETTLE_S = 2
#: The most digests kept in one memo folder (64 bytes each; least recently used removed).
MEMO_ENTRIES = 256
_CHUNK = 1 << 20
_PREFIX = "digest"


def file_digest(path: Path, memo: Path | None = None) -> str:
    """The SHA-256 (hex) of all of ``path``'s bytes.

    With ``memo`` (a folder), the digest of a file of at least :data:`MEMO_MIN` bytes is
    kept there per file version: any rewrite changes the file's ctime (and a copy, its
    inode), so a stale digest is never used. A file changed while it was hashed, or
    within the last :data:`MEMO_SETTLE_S` seconds, is not memoized; a memo that cannot be
    read or written costs a full hash, nothing else.
    """
    entry = None
    before = path.stat()
    if memo is not None and before.st_size >= MEMO_MIN:
        entry = memo / hashlib.sha256(_stat_line(path, before).encode()).hexdigest()
        try:
            kept = entry.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            kept = ""
        if len(kept) == 64 and all(c in "0123456789abcdef" for c in kept):
            with contextlib.suppress(OSError):  # used now: the last to be pruned
                _touch(entry)
            return kept
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    hexdigest = digest.hexdigest()
    if entry is not None:
        after = path.stat()
        settled = time.time_ns() - after.st_mtime_ns > MEMO_SETTLE_S * 1_000_000_000
        if settled and _stat_line(path, after) == _stat_line(path, before):
            _keep(entry, hexdigest)
    return hexdigest


def _stat_line(path: Path, stat: os.stat_result) -> str:
    return (f"{path.resolve()}\0{stat.st_dev}\0{stat.st_ino}\0{stat.st_size}"
            f"\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}")


def _keep(entry: Path, hexdigest: str) -> None:
    # Written whole: a scratch name, then renamed over the entry.
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(entry.parent, _PREFIX)
        scratch = scratch_path(entry.parent, _PREFIX)
        try:
            scratch.write_text(hexdigest, encoding="ascii")
            _touch(scratch)
            os.replace(scratch, entry)
        finally:
            scratch.unlink(missing_ok=True)
        _prune(entry)
    except OSError as exc:
        log.debug("transformers.digest_not_kept", path=str(entry), error=str(exc))


def _touch(path: Path) -> None:
    # The clock's own nanoseconds: a file system stamps writes at its coarse tick (~4 ms),
    # which would leave entries used one after the other in no order.
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _prune(kept: Path) -> None:
    # The least recently used entries of ``kept``'s folder past MEMO_ENTRIES, ``kept``
    # (just written) never (entries are named by a SHA-256; scratch files start with a
    # dot). Another process pruning at once: already gone.
    entries = []
    for path in kept.parent.iterdir():
        if len(path.name) == 64 and path != kept:
            with contextlib.suppress(OSError):
                entries.append((path.stat().st_mtime_ns, path.name, path))
    entries.sort()
    for _, _, path in entries[:max(0, len(entries) + 1 - MEMO_ENTRIES)]:
        path.unlink(missing_ok=True)
