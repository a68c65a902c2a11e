"""The process's share of the machine (aieng_hookspecs.cpu_share / memory_share) and the kit's
constrained machine (aieng_core.testing.small_disk / run_limited)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
from aieng_hookspecs import cpu_share, memory_share

from aieng_core.testing import run_limited, small_disk

linux = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's /proc and cgroups")


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _proc(root: Path, cgroup: str, status: str = "VmSize:\t  1000 kB\n") -> Path:
    return _tree(root / "proc", {"cgroup": cgroup, "status": status})


@linux
def test_cpu_share_is_the_affinity_cut_to_a_v2_quota_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cgroups = _tree(tmp_path / "cg", {"cgroup.controllers": "cpu memory\n",
                                     "app/cpu.max": "150000 100000\n"})
    proc = _proc(tmp_path, "0::/app\n")
    assert cpu_share(cgroup_root=cgroups, proc=proc) == min(affinity, 2)
    (cgroups / "app" / "cpu.max").write_text("max 100000\n")
    assert cpu_share(cgroup_root=cgroups, proc=proc) == affinity


@linux
def test_a_parent_cgroups_quota_counts_and_v1_is_read(tmp_path: Path) -> None:
    cgroups = _tree(tmp_path / "cg", {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
                                     "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                                     "cpu,cpuacct/pod/cpu.cfs_quota_us": "-1\n",
                                     "cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n"})
    proc = _proc(tmp_path, "4:memory:/pod\n3:cpu,cpuacct:/pod\n")
    assert cpu_share(cgroup_root=cgroups, proc=proc) == 1  # half a CPU: one thread


@linux
def test_a_host_path_absent_in_the_container_reads_the_mounts_own_cgroup(
        tmp_path: Path) -> None:
    cgroups = _tree(tmp_path / "cg", {"cgroup.controllers": "cpu\n",
                                     "cpu.max": "100000 100000\n"})
    proc = _proc(tmp_path, "0::/kubepods/burstable/pod-1234/abc\n")
    assert cpu_share(cgroup_root=cgroups, proc=proc) == 1


@linux
def test_taskset_is_honoured_in_a_real_process() -> None:
    done = run_limited("from aieng_hookspecs import cpu_share; print(cpu_share())",
                       cpus=[min(os.sched_getaffinity(0))])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


@linux
def test_memory_share_is_the_least_of_free_memory_and_the_cgroup_limit(
        tmp_path: Path) -> None:
    meminfo = _tree(tmp_path, {"meminfo": "MemTotal: 9000000 kB\nMemAvailable: 4000000 kB\n"})
    cgroups = _tree(tmp_path / "cg", {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                     "memory/job/memory.limit_in_bytes": str(3 << 30),
                                     "memory/job/memory.usage_in_bytes": str(1 << 30)})
    proc = _proc(tmp_path, "4:memory:/job\n")
    share = memory_share(cgroup_root=cgroups, proc=proc, meminfo=meminfo / "meminfo")
    assert share == 2 << 30  # the job's 3 GiB less its 1 GiB, under the 3.8 GiB free
    (cgroups / "memory" / "job" / "memory.limit_in_bytes").write_text("9223372036854771712")
    share = memory_share(cgroup_root=cgroups, proc=proc, meminfo=meminfo / "meminfo")
    assert share == 4000000 * 1024


@linux
def test_ulimit_v_is_a_memory_limit_in_a_real_process() -> None:
    done = run_limited("from aieng_hookspecs import memory_share; print(memory_share())",
                       memory=2 << 30)
    assert done.returncode == 0, done.stderr
    assert 0 < int(done.stdout) < 2 << 30


def test_nothing_known_is_none(tmp_path: Path) -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        pytest.skip("this process runs under ulimit -v")
    assert memory_share(cgroup_root=tmp_path / "none", proc=tmp_path / "none",
                        meminfo=tmp_path / "none") is None


def test_a_small_disk_fills_and_frees() -> None:
    with small_disk(1 << 20) as disk:
        assert disk.fill(leave=0) > 0
        with pytest.raises(OSError) as full:
            (disk.path / "x").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        disk.free()
        (disk.path / "x").write_bytes(b"x" * 8192)
        assert disk.available() > 512 * 1024
    assert not disk.path.exists()


def test_run_limited_sets_the_limits_it_is_given(tmp_path: Path) -> None:
    done = run_limited("import resource, sys; print(resource.getrlimit(resource.RLIMIT_NOFILE)"
                       "[0]); print(sys.flags.optimize); open(sys.argv[1], 'wb').write(b'x' * "
                       "9000)", str(tmp_path / "big"), open_files=64, file_size=4096,
                       flags=["-O"])
    assert done.stdout.split()[:2] == ["64", "1"]
    assert "File too large" in done.stderr


def test_disk_full_is_told_apart_however_it_comes(tmp_path: Path) -> None:
    import sqlite3

    from aieng_hookspecs import disk_full, disk_full_hint

    with small_disk(1 << 20) as disk:
        disk.fill()
        with pytest.raises(OSError) as os_full:
            (disk.path / "x").write_bytes(b"x" * 8192)
        conn = sqlite3.connect(disk.path / "db.sqlite3")
        with pytest.raises(sqlite3.Error) as sql_full:
            conn.execute("CREATE TABLE t (x)")
            conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4096,)] * 64)
            conn.commit()
        conn.close()
        hint = disk_full_hint(disk.path / "db.sqlite3", "nothing was kept")
        disk.free()
    assert disk_full(os_full.value) and disk_full(sql_full.value)
    try:
        raise RuntimeError("wrapped") from os_full.value
    except RuntimeError as wrapped:
        assert disk_full(wrapped)
    assert disk_full(OSError("IO error: No space left on device (os error 28)"))
    assert not disk_full(PermissionError(errno.EACCES, "denied"))
    assert not disk_full(sqlite3.OperationalError("database is locked"))
    assert f"{disk.path}/db.sqlite3: the disk is full ({disk.path}, " in hint
    assert "nothing was kept; free space there" in hint
