"""The process around a test: the same script raced in several processes (what two workers
sharing a cache or a file do at the same moment), a function run in a forked child (what a
pool's workers forked from a host do), a guard that fails a test instead of letting it
hang, a umask set for a block, and a folder seen read-only (a container's read-only
mount)."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

__all__ = ["can_unshare_mounts", "hang_guard", "in_forked_child", "race_processes",
           "read_only", "run_on_read_only_mount", "sqlite_layout", "umask"]

T = TypeVar("T")

#: What every racer runs first: it says it is ready (``ready-<n>``) and waits for ``go``.
_PREAMBLE = """
import json, sys, time
from pathlib import Path
here = Path(sys.argv[1])
(here / f"ready-{sys.argv[2]}").touch()
while not (here / "go").exists():
    time.sleep(0.005)
"""


def race_processes(body: str, here: Path, *args: str, processes: int = 2,
                   timeout: float = 120.0, env: Mapping[str, str] | None = None) -> list[str]:
    """Run the Python source ``body`` in ``processes`` processes at once and return the last
    line each printed, in start order.

    Each process imports what it needs and says it is ready; once all are, they are released
    together, so the work of ``body`` overlaps. In ``body``, ``here`` is the folder
    (``Path``), ``sys.argv[3:]`` are ``args``, and ``json``, ``sys``, ``time`` and ``Path``
    are imported. A racer that fails (its exit status), or one that dies before the
    release, fails the call with its standard error.

    :param here: a folder of the test's own (``tmp_path``): the racers' handshake files
        go there.
    :param env: the racers' environment (default: this one, with ``OMP_NUM_THREADS=1``
        and ``HF_HUB_OFFLINE=1``).
    """
    environment = dict(env) if env is not None else {
        **os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    racers = [subprocess.Popen([sys.executable, "-c", _PREAMBLE + body, str(here), str(n),
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment) for n in range(processes)]
    try:
        deadline = time.monotonic() + timeout
        while not all((here / f"ready-{n}").exists() for n in range(processes)):
            dead = [r.communicate() for r in racers if r.poll() is not None]
            assert not dead, f"a racer ended before the release: {dead}"
            assert time.monotonic() < deadline, (
                f"the racers were not ready within {timeout:g} s (timeout=)")
            time.sleep(0.01)
        (here / "go").touch()
        outs = [r.communicate(timeout=timeout) for r in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.communicate()
    for racer, (_, err) in zip(racers, outs):
        assert racer.returncode == 0, err
    return [out.strip().splitlines()[-1] if out.strip() else "" for out, _ in outs]


def in_forked_child(work: Callable[[], T], *, timeout: float = 60.0) -> T:
    """Run ``work()`` in a child forked from this process (what ``multiprocessing``'s "fork"
    start method and gunicorn ``--preload`` do to a host) and return what it returned.

    The result comes back pickled; an exception ``work`` raised is raised here (one that
    does not pickle comes back as a ``RuntimeError`` with its type and text). The child
    leaves through ``os._exit``, running none of this process's cleanup (atexit hooks,
    pytest's). POSIX only.

    :raises TimeoutError: when the child has not ended after ``timeout`` seconds (killed:
        a hang, such as a lock some thread held at the fork).
    :raises RuntimeError: when the child ended without a result (killed by a signal).
    """
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+: "multi-threaded, fork() may deadlock": known
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            try:
                outcome: tuple[bool, object] = (True, work())
            except BaseException as exc:  # noqa: BLE001 - sent to the parent
                outcome = (False, exc)
            try:
                data = pickle.dumps(outcome)
            except Exception:  # noqa: BLE001 - an unpicklable value or error: its text
                data = pickle.dumps((False, RuntimeError(
                    f"{type(outcome[1]).__name__}: {outcome[1]}")))
            with os.fdopen(write, "wb") as pipe:
                pipe.write(data)
        finally:
            os._exit(0)
    os.close(write)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"the forked child had not ended after {timeout:g} s "
                                   "(killed): a hang? (in_forked_child's timeout= bounds it)")
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise RuntimeError("the forked child ended without a result (exit status "
                           f"{os.waitstatus_to_exitcode(status)})")
    ok, value = pickle.loads(b"".join(chunks))
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


@contextlib.contextmanager
def hang_guard(seconds: int = 60) -> Iterator[None]:
    """Fail (``TimeoutError``) instead of hanging when the block has not ended after
    ``seconds``: a generous guard against a regular expression backtracking for minutes on
    hostile input, not a speed check. POSIX, main thread only (``SIGALRM``; ``re`` checks
    for signals while it backtracks); elsewhere the block runs unguarded."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fail(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s (hang_guard's seconds=): "
                           "catastrophic backtracking?")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def umask(mask: int = 0o022) -> Iterator[None]:
    """The process's umask set to ``mask`` for the block (by default the usual one: new
    files 0644, readable by all unless made otherwise), then restored."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` as this process sees a read-only one (a container's read-only mount):
    made ``a-w`` for a user, or, for root (whom file modes do not stop), bind-mounted
    read-only at a sibling path ``<name> (read-only)``, which is yielded. The test is
    skipped when neither can be done (root without the right to mount).

    The mount is undone lazily: memory-mapped files of an object not yet collected keep it
    busy; it is detached from the folder tree at once all the same.
    """
    import pytest

    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for path in paths:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            yield folder
        finally:
            for path in paths:
                path.chmod(path.stat().st_mode | 0o200)
        return
    view = folder.with_name(f"{folder.name} (read-only)")
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(view)],
                      capture_output=True, check=False).returncode:
        view.rmdir()
        pytest.skip("root, and no bind mount: cannot make a folder read-only")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True,
                       check=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True, check=False)
        with contextlib.suppress(OSError):  # detached at once: the empty mount point left
            view.rmdir()


def can_unshare_mounts() -> bool:
    """Whether :func:`run_on_read_only_mount` can run here (Linux, ``unshare -m`` allowed:
    root, or a user namespace)."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def run_on_read_only_mount(folder: Path, mount: Path, script: str, *args: str,
                           timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -c script args...`` in a private mount namespace where ``mount`` (an
    empty folder) is ``folder`` bind-mounted read-only: what a container with a read-only
    volume sees (root included), undone when the process ends, whatever happens.

    :returns: the finished process (text output), not checked.
    """
    shell = (f"mount --bind -o ro {shlex.quote(str(folder))} {shlex.quote(str(mount))} && "
             f"exec {shlex.quote(sys.executable)} -c \"$0\" \"$@\"")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell,
                           script, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def sqlite_layout(path: Path) -> int:
    """A SQLite file's layout mark (``PRAGMA user_version``)."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
