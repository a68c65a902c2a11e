"""This process's share of the machine: the CPUs it may keep busy and the memory it may still
take, as a container, ``taskset`` or ``ulimit`` cut them, not the whole host's.

A process in a container with one CPU's quota on a 64-core host that starts 64 threads per
matrix product runs many times slower than with one; one that loads a model larger than
its container's memory limit is killed without a word. Components size their thread pools
with :func:`cpu_share` and check a load against :func:`memory_share` first.

Read from Linux's files (``/proc``, cgroup v1 and v2); elsewhere the OS's CPU count, and
no memory figure.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

__all__ = ["cpu_share", "memory_share"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC = Path("/proc/self")
#: cgroup v1 writes "no limit" as the largest page-aligned 64-bit number, or near it.
_V1_UNLIMITED = 1 << 62


def cpu_share(*, cgroup_root: Path = _CGROUP_ROOT, proc: Path = _PROC) -> int:
    """The CPUs this process may keep busy, at least 1: the CPUs it may run on
    (``sched_getaffinity``: ``taskset``, a cpuset, ``docker --cpuset-cpus``) cut to its
    cgroup's CPU quota rounded up (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``; ``docker --cpus``, a Kubernetes CPU limit), the least of the
    cgroup and its parents.

    :param cgroup_root: where the cgroup file systems are mounted (for tests).
    :param proc: the process's ``/proc`` folder (for tests).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    for folder in _cgroup_folders(cgroup_root, proc, "cpu"):
        quota = _cpu_quota(folder)
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def memory_share(*, cgroup_root: Path = _CGROUP_ROOT, proc: Path = _PROC,
                 meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The bytes this process may still take, or ``None`` where nothing says (not Linux):
    the least of the system's available memory (``MemAvailable``), its cgroup's limit less
    its usage (v2 ``memory.max`` - ``memory.current``, v1 ``memory.limit_in_bytes`` -
    ``memory.usage_in_bytes``, the least of the cgroup and its parents) and its address-space
    limit (``ulimit -v``) less its size.

    :param cgroup_root: where the cgroup file systems are mounted (for tests).
    :param proc: the process's ``/proc`` folder (for tests).
    :param meminfo: the system's ``/proc/meminfo`` (for tests).
    """
    found: list[int] = []
    available = _meminfo_kib(meminfo, "MemAvailable")
    if available is not None:
        found.append(available * 1024)
    for folder in _cgroup_folders(cgroup_root, proc, "memory"):
        left = _cgroup_memory_left(folder)
        if left is not None:
            found.append(left)
    left_in_address_space = _address_space_left(proc)
    if left_in_address_space is not None:
        found.append(left_in_address_space)
    return max(0, min(found)) if found else None


def _cgroup_folders(root: Path, proc: Path, controller: str) -> list[Path]:
    """The process's cgroup folders for ``controller`` and their parents up to the mount,
    those that exist (v2's unified tree, or v1's controller tree)."""
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return []
    folders: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: "0::/path"
            base = root / "unified" if (root / "unified" / "cgroup.controllers").exists() \
                else root
            if not (base / "cgroup.controllers").exists():
                continue
        elif controller in controllers.split(","):
            base = next((root / name for name in (controllers, controller)
                         if (root / name).is_dir()), root / controller)
        else:
            continue
        folders.extend(_up_to(base, path))
    return folders


def _up_to(base: Path, path: str) -> list[Path]:
    """``base/path`` and each parent of it up to ``base``, those that exist. Inside a
    container the path named may be the host's and absent: then ``base`` alone (the
    container's own cgroup, mounted at the root)."""
    parts = [part for part in path.split("/") if part]
    folders = [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [folder for folder in folders if folder.is_dir()]


def _cpu_quota(folder: Path) -> float | None:
    """A cgroup's CPU quota in CPUs, or ``None`` for none."""
    v2 = _read(folder / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max" or not period:
            return None
        return _ratio(quota, period)
    quota_us = _read(folder / "cpu.cfs_quota_us")
    period_us = _read(folder / "cpu.cfs_period_us")
    if quota_us is None or period_us is None or quota_us.startswith("-"):
        return None
    return _ratio(quota_us, period_us)


def _ratio(quota: str, period: str) -> float | None:
    try:
        over = int(period)
        return int(quota) / over if over > 0 and int(quota) > 0 else None
    except ValueError:
        return None


def _cgroup_memory_left(folder: Path) -> int | None:
    """A cgroup's memory limit less its usage, or ``None`` for no limit."""
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        limit = _read(folder / limit_name)
        if limit is None:
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= _V1_UNLIMITED:
            return None
        usage = _read(folder / usage_name)
        used = int(usage) if usage is not None and usage.isdigit() else 0
        return int(limit) - used
    return None


def _address_space_left(proc: Path) -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size_kib = _meminfo_kib(proc / "status", "VmSize")
    return soft - (size_kib or 0) * 1024


def _meminfo_kib(path: Path, key: str) -> int | None:
    """``key:   123 kB`` from a ``/proc`` file, in KiB."""
    if sys.platform != "linux" and not path.is_file():
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            value = rest.split()
            return int(value[0]) if value and value[0].isdigit() else None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
