"""The sandbox over many cases in one process: each case's process is reaped (no zombie
children), its descriptors closed, its folder removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aieng_metrics import SandboxLimits, run_tests

from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio


def _zombie_children() -> list[int]:
    """The pids of this process's children that exited and were not waited for."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
async def test_cases_leave_no_process_descriptor_or_folder(tmp_path: Path) -> None:
    """Calls of passing, failing and crashing cases (a process killed by a signal among
    them): no zombie child, no descriptor, thread or task held, no folder left under
    ``tmp_root``. (Memory is not asserted: too few calls to divide the noise down.)"""
    root = tmp_path / "sandboxes"
    root.mkdir()
    limits = SandboxLimits(timeout_s=5.0, memory_mb=256, tmp_root=str(root),
                           site_packages=False)
    tests = ["assert f() == {i}", "assert f() == -1",
             "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]

    async def call(i: int) -> None:
        results = await run_tests(f"def f():\n    return {i}\n",
                                  [test.format(i=i) for test in tests], limits)
        assert [r.status for r in results] == ["passed", "failed", "error"], results

    growth = await ameasure_growth(call, warmup=2, calls=15)
    assert not growth.held, growth.report()
    assert _zombie_children() == []
    assert os.listdir(root) == []
