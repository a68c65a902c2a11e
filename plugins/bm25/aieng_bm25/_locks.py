"""Waiting for locks, and letting go of them: deadlines, callers that left, forks.

Every wait here polls (every :data:`POLL_S`) rather than blocks, so that a write whose
caller left (a deadline passed: the kernel abandons the worker thread running it) ends at
the next poll with the caller's cancellation, instead of waiting on, or writing, after its
caller is gone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aieng_hookspecs import stop_if_cancelled

__all__ = ["INHERITED", "POLL_S", "IndexLockedError", "creating", "retry", "stop_if_cancelled",
           "writing"]

T = TypeVar("T")

#: Seconds between two tries of a lock another writer holds.
POLL_S = 0.05
# tantivy's lock files, held (flock) through a file descriptor while a writer lives.
_LOCK_FILES = (".tantivy-writer.lock", ".tantivy-meta.lock")
# Folders (resolved) whose tantivy writer this process holds now, by how many writes.
_WRITING: dict[str, int] = {}
#: Objects a forked child inherited mid-use (the parent's tantivy index): kept, never used
#: nor dropped there (dropping them would run tantivy's destructors on the parent's
#: threads and files).
INHERITED: list[Any] = []
_AT_FORK: list[bool] = []  # [True] once the fork hook is installed


class IndexLockedError(RuntimeError):
    """Another writer holds the index folder's lock (another process is indexing into it)
    past ``lock_timeout``."""


def retry(attempt: Callable[[], T | None], wait: float,
          locked: Callable[[float], IndexLockedError]) -> T:
    """``attempt()``'s first answer that is not ``None``, trying again every
    :data:`POLL_S` for ``wait`` seconds (monotonic clock), then ``locked(wait)`` raised; a
    caller that left ends the wait with its cancellation."""
    deadline = time.monotonic() + wait
    while True:
        found = attempt()
        if found is not None:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            raise locked(wait) from None
        stop_if_cancelled()
        time.sleep(min(POLL_S, left))


@contextlib.contextmanager
def creating(folder: Path, path: str, wait: float) -> Iterator[None]:
    """Hold ``folder``'s advisory lock (``flock`` on the folder itself) while an index is
    opened in a folder that has none yet (no meta.json; POSIX only), waiting up to
    ``wait`` seconds for another process holding it (``path``: the option, for messages).

    tantivy makes a new index without a lock: two processes making one in a folder at
    the same moment each wrote their own schema into meta.json, and each commit then
    wrote its own, so with two analyzers the folder held segments of two schemas (a
    corrupt index: tantivy panicked reading their documents). The second one now waits,
    then opens the first one's index, with its analyzer, as it would have a moment later.
    """
    if (folder / "meta.json").exists():
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory lock
        yield
        return

    def attempt() -> bool | None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return True

    handle = os.open(folder, os.O_RDONLY)
    try:
        retry(attempt, wait, lambda waited: IndexLockedError(
            f"{path}: another process has been creating the index for {waited:g} s "
            "(lock_timeout); retry when it is done, or raise lock_timeout (seconds)"))
        yield
    finally:
        os.close(handle)  # releases the lock


@contextlib.contextmanager
def writing(folder: Path | None) -> Iterator[None]:
    """Mark ``folder``'s tantivy lock files as held by this process meanwhile: a child
    forked meanwhile closes its copies of their descriptors (see
    :func:`_release_inherited_locks`). Nothing for an index in memory."""
    if folder is None:
        yield
        return
    held = os.path.realpath(folder)
    if not _AT_FORK and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_release_inherited_locks)
        _AT_FORK.append(True)
    _WRITING[held] = _WRITING.get(held, 0) + 1
    try:
        yield
    finally:
        left = _WRITING.get(held, 1) - 1
        if left > 0:
            _WRITING[held] = left
        else:
            _WRITING.pop(held, None)


def _release_inherited_locks() -> None:
    """In a child forked while this process held a tantivy writer: close the child's copies
    of the lock files' descriptors. A ``flock`` lives while any descriptor of it is open:
    the child's copy kept the folder locked until the child exited, and every write of
    the parent meanwhile failed with ``IndexLockedError``. (Linux, through ``/proc``;
    elsewhere the child keeps them until it exits.)"""
    folders = set(_WRITING)
    _WRITING.clear()
    if not folders:
        return
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in descriptors:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        folder, _, file = target.rpartition("/")
        if file in _LOCK_FILES and folder in folders:
            with contextlib.suppress(OSError):
                os.close(int(name))
