"""The machine saying no, for tests: a real disk that fills up (a small ``tmpfs``), and a
Python process started under a container's or ``ulimit``'s limits (few file descriptors, a
cap on memory or file size, a share of the CPUs) or with a strict interpreter (``-O``,
``-W error``, ``-X dev``)."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = ["SmallDisk", "can_mount_tmpfs", "run_limited", "small_disk"]

_CHUNK = 1 << 16


class SmallDisk:
    """A mounted ``tmpfs`` of a few MiB: writes past its size fail as on a full disk
    (``ENOSPC``, SQLite's ``SQLITE_FULL``). :meth:`fill` takes the space that is left,
    :meth:`free` gives it back (what a user does after deleting files)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._ballast = path / f".ballast-{uuid.uuid4().hex[:8]}"

    def available(self) -> int:
        """Bytes that can still be written."""
        found = os.statvfs(self.path)
        return found.f_bavail * found.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Write a ballast file until at most ``leave`` bytes are left (page-rounded).

        :returns: the bytes the ballast holds.
        """
        written = self._ballast.stat().st_size if self._ballast.exists() else 0
        block = b"\0" * _CHUNK
        with open(self._ballast, "ab", buffering=0) as out:
            while (room := self.available() - leave) > 0:
                try:
                    written += out.write(block[:min(_CHUNK, room)])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        return written

    def free(self) -> None:
        """Remove the ballast: the space :meth:`fill` took is free again."""
        self._ballast.unlink(missing_ok=True)


def can_mount_tmpfs() -> bool:
    """Whether :func:`small_disk` can run here (Linux, root or ``CAP_SYS_ADMIN``)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory(prefix="aieng-probe-") as folder:
        probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder],
                               capture_output=True, check=False)
        if probe.returncode:
            return False
        subprocess.run(["umount", "-l", folder], capture_output=True, check=False)
    return True


@contextlib.contextmanager
def small_disk(size: int = 4 << 20) -> Iterator[SmallDisk]:
    """A real file system of ``size`` bytes (a ``tmpfs``) mounted on a new temporary
    folder for the block, then unmounted and removed. Needs root on Linux (mounting); the
    test is skipped elsewhere, saying so.

    :param size: its size in bytes (rounded up to pages by the kernel).
    """
    import pytest

    if not can_mount_tmpfs():
        pytest.skip("small_disk mounts a tmpfs: needs root on Linux")
    folder = Path(tempfile.mkdtemp(prefix="aieng-small-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(folder)], capture_output=True, check=True)
    try:
        yield SmallDisk(folder, size)
    finally:
        # lazily: a memory map or an open file of an object not yet collected keeps it busy
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            folder.rmdir()


def run_limited(script: str, *args: str, open_files: int | None = None,
                memory: int | None = None, file_size: int | None = None,
                cpus: Sequence[int] | None = None, flags: Sequence[str] = (),
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python [flags] -c script args...`` (this interpreter) under limits, as
    ``ulimit`` / ``taskset`` / a container would start it. Needs no privilege.

    :param open_files: file descriptors the process may hold (``ulimit -n``).
    :param memory: bytes of address space (``ulimit -v``).
    :param file_size: the largest file it may write (``ulimit -f``): a write past it fails
        with ``EFBIG`` (``SIGXFSZ`` is ignored, as a shell's ``trap`` would).
    :param cpus: the CPUs it may run on (``taskset -c``).
    :param flags: interpreter flags (``["-O"]``, ``["-W", "error"]``, ``["-X", "dev"]``).
    :param env: variables set on top of this process's environment.
    :returns: the finished process (text output), not checked.
    """

    def limit() -> None:  # in the child, before exec
        for name, value in ((resource.RLIMIT_NOFILE, open_files),
                            (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, file_size)):
            if value is not None:
                resource.setrlimit(name, (value, value))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if cpus is not None:
            os.sched_setaffinity(0, set(cpus))

    return subprocess.run([sys.executable, *flags, "-c", script, *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})}, cwd=cwd, preexec_fn=limit)
