"""The cross-process lock of a cache entry (:func:`aieng_hookspecs.build_lock`): a killed
holder never blocks the next build, a lock that cannot be made runs the build unlocked, the
lock file is shared like the cache and removed on release, and a waiter holds the file at
the path. The plugins' own tests race real builds through it (aieng-transformers'
conversion and quantization, aieng-onnx's exports, aieng-tensorrt's engines)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import structlog
from aieng_hookspecs import build_lock, lock_path

LOG = structlog.get_logger("test_build_lock")


_HOLD = """
import sys, time
from pathlib import Path
from aieng_hookspecs import build_lock
with build_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    """A process killed while it holds the lock (mid-conversion) leaves its lock file, but
    not the lock: the next build takes it at once, and removes the file."""
    entry = tmp_path / "tiny-0123456789abcdef"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(entry)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        holder.kill()
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert lock_path(entry).is_file()
    with structlog.testing.capture_logs() as logs, build_lock(entry, log=LOG) as held:
        assert held
    assert [e for e in logs if e["event"] == "cache.build_waiting"] == []
    assert list(tmp_path.iterdir()) == []


def test_a_lock_that_cannot_be_made_runs_unlocked(tmp_path: Path) -> None:
    """Where the lock file cannot be made (a cache folder that is a file: the caller's
    write then fails naming it), the block runs without the lock, as before locks."""
    blocker = tmp_path / "cache"
    blocker.write_text("a file", encoding="utf-8")
    with build_lock(blocker / "entry") as held:
        assert not held


def test_the_lock_file_is_shared_like_the_cache(tmp_path: Path) -> None:
    """The lock file gets the user's umask (another of their processes can open it to
    wait), not a private mode, holds nothing, and is gone once released."""
    previous = os.umask(0o022)
    try:
        with build_lock(tmp_path / "entry"):
            mode = lock_path(tmp_path / "entry").stat().st_mode & 0o777
            content = lock_path(tmp_path / "entry").read_bytes()
    finally:
        os.umask(previous)
    assert (oct(mode), content) == (oct(0o644), b"")
    assert not lock_path(tmp_path / "entry").exists()


def _taken(lock: Path) -> bool:
    # Whether another descriptor holds the flock of the file now at ``lock``.
    import fcntl

    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_waiter_holds_the_file_at_the_path_not_the_removed_one(tmp_path: Path) -> None:
    """A builder waiting while the holder releases (removing the lock file) locks the file
    now at the path, not the removed one it waited on: else a newcomer, finding no file,
    would make and lock a new one and build beside it."""
    import threading

    entry = tmp_path / "entry"
    inside: list[bool] = []

    def wait_then_build() -> None:
        with build_lock(entry, log=LOG):
            inside.append(_taken(lock_path(entry)))

    with structlog.testing.capture_logs() as logs:
        with build_lock(entry):
            waiter = threading.Thread(target=wait_then_build)
            waiter.start()
            deadline = time.monotonic() + 10
            while not any(e["event"] == "cache.build_waiting" for e in list(logs)):
                assert time.monotonic() < deadline
                time.sleep(0.005)
        waiter.join(10)
    assert inside == [True]
    assert not lock_path(entry).exists()
