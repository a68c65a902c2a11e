"""One build of a cache entry across processes: a lock file beside the entry.

Two processes starting at once (two ``aieng serve`` workers) would each convert the same
GGUF, export the same ONNX model, quantize the same file or build the same TensorRT engine
into a shared cache folder: the same minutes of work twice, and twice the memory.
:func:`build_lock` makes the others wait (two threads of one process lock separately
opened files, which exclude each other too). The first takes an exclusive ``fcntl.flock`` on ``.<entry name>.lock`` beside the entry and builds;
the others block on it, then find the entry made and load it (callers look again under
the lock). The operating system releases the lock when its holder ends, killed too, so a
lock left by a dead process never blocks anyone: no lock is judged stale by its age, so a
wall clock that jumps (an NTP step, a resumed VM) frees or blocks nothing. The holder
removes the lock file while it still holds it; a waiter then finds the file it locked gone
and locks the new one.

A waiter polls the lock (a few times a second at most) rather than blocking in the kernel:
in a worker thread of anyio (a ``@blocking`` impl), a caller that left (the host's
deadline, the stage's timeout) ends the wait at the next poll, with the caller's
cancellation, instead of holding the thread until the other build is done.

Where ``fcntl`` does not exist (Windows), or the lock file cannot be made (a read-only
cache: the build then fails with its own error naming the folder), the build runs
unlocked, as before: two processes may then both build, and the entry's atomic rename
keeps one whole result.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ._threads import stop_if_cancelled

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, builds run unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = ["build_lock", "lock_path"]

#: The longest pause between two tries of a lock another process holds (seconds).
_POLL_MAX_S = 0.25


class _Log(Protocol):
    """A logger taking an event and keyword fields (a structlog logger is one)."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def debug(self, event: str, **fields: Any) -> Any: ...


class _Quiet:
    """No logging (a caller that gives no logger)."""

    def info(self, event: str, **fields: Any) -> None:
        pass

    def debug(self, event: str, **fields: Any) -> None:
        pass


def lock_path(entry: Path) -> Path:
    """The lock file of the cache entry ``entry``: ``.<name>.lock`` beside it (hidden, and
    no scratch name: :func:`aieng_hookspecs.remove_abandoned` never takes it)."""
    return entry.parent / f".{entry.name}.lock"


@contextlib.contextmanager
def build_lock(entry: Path, *, log: _Log | None = None) -> Iterator[bool]:
    """Hold the cross-process lock of the cache entry ``entry`` (a file or a folder, made
    or not) for the ``with`` block: another process building the same entry waits here,
    logging ``cache.build_waiting`` once (and ``cache.build_waited`` with the seconds),
    until the holder is done (or dead). Look for the entry again inside the block: it may
    have been built meanwhile. Blocking; in an anyio worker thread whose caller left (a
    deadline passed), the wait ends with the caller's cancellation exception.

    :param entry: the cache entry.
    :param log: where to log (a structlog logger: the plugin's own); none by default.

    Yields whether the lock is held: ``False`` without ``fcntl``, or when the lock file
    cannot be made (the block then runs unlocked, as before the lock existed).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    lock = lock_path(entry)
    log = log if log is not None else _Quiet()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(lock, entry, log)
    except OSError as exc:  # a read-only cache; ENOLCK: a file system without locks
        log.debug("cache.build_unlocked", lock=str(lock), error=str(exc))
        yield False
        return
    try:
        yield True
    finally:
        # Removed while still held: a waiter on this file finds it gone and locks the
        # next one; the cache keeps no lock files (but a killed holder's, until the
        # next build of its entry).
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)  # releases the lock


def _locked(lock: Path, entry: Path, log: _Log) -> int:
    # A descriptor of ``lock`` holding its exclusive flock: waits for another holder, and
    # retries when the file locked is no longer the one at the path (its holder removed
    # it on release).
    waited: float | None = None
    while True:
        # 0o666 under the umask: the cache is shared by the user's processes.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if waited is None:
                        waited = time.monotonic()
                        log.info("cache.build_waiting", entry=str(entry), lock=str(lock),
                                 reason="another process is building it")
                stop_if_cancelled()
                time.sleep(delay)
                delay = min(delay * 2, _POLL_MAX_S)
            held, current = os.fstat(fd), _stat(lock)
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (held.st_dev, held.st_ino) == current:
            if waited is not None:
                log.info("cache.build_waited", entry=str(entry),
                         seconds=round(time.monotonic() - waited, 3))
            return fd
        os.close(fd)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino
