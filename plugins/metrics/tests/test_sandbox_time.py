"""The sandbox's time limit on a busy machine: ``timeout_s`` does not count the time a case
waited for a CPU (read from ``/proc/<pid>/schedstat``, faked here), is bounded at ten
times ``timeout_s`` of wall time, and is validated as a positive, finite number of
seconds."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aieng_metrics import FunctionalCorrectnessOptions, SandboxLimits, _sandbox, run_tests

pytestmark = pytest.mark.anyio


def _wait_for(flag: Path) -> str:
    """Code that waits, blocked, until ``flag`` exists (the test says when)."""
    return ("import os, time\n"
            f"while not os.path.exists({str(flag)!r}):\n"
            "    time.sleep(0.01)\n")


@pytest.fixture
def root(tmp_path: Path) -> str:
    folder = tmp_path / "sandboxes"
    folder.mkdir()
    return str(folder)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_case_kept_waiting_for_a_cpu_is_not_timed_out(
        tmp_path: Path, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A case still running at ``timeout_s`` whose process spent that time waiting for a
    CPU (a loaded CI box) is given the time it waited: the limit reads the run-queue
    delay then, and the case, let go on that reading, passes instead of timing out."""
    flag = tmp_path / "go"
    readings: list[int] = []

    def starved(pid: int) -> float:  # the kernel's word: it waited far longer than this
        readings.append(pid)
        flag.touch()  # the case ends once the limit was reached and read
        return 1e6

    monkeypatch.setattr(_sandbox, "_queued_s", starved, raising=False)
    monkeypatch.setattr(_sandbox, "_MAX_STRETCH", 1e6, raising=False)
    [result] = await run_tests(_wait_for(flag), ["pass"],
                               SandboxLimits(timeout_s=0.5, tmp_root=root))
    assert result.status == "passed", result
    assert readings


async def test_the_time_a_case_waited_is_bounded(
        tmp_path: Path, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """However long the kernel says the case waited for a CPU, it gets at most
    ``_MAX_STRETCH`` times ``timeout_s`` of wall time: a case that never ends is killed,
    and the message names the limit, its value and the option to raise."""
    readings: list[int] = []

    def starved(pid: int) -> float:
        readings.append(pid)
        return 1e6

    monkeypatch.setattr(_sandbox, "_queued_s", starved, raising=False)
    monkeypatch.setattr(_sandbox, "_MAX_STRETCH", 3.0, raising=False)
    [result] = await run_tests(_wait_for(tmp_path / "never"), ["pass"],
                               SandboxLimits(timeout_s=0.2, tmp_root=root))
    assert result.status == "timeout"
    assert "time limit of 0.2 s (timeout_s)" in result.message
    assert "raise timeout_s" in result.message
    assert readings
    assert os.listdir(root) == []


async def test_without_a_reading_the_limit_is_wall_time(
        tmp_path: Path, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel does not say how long the case waited (``None``: not Linux), a
    blocked case is stopped at ``timeout_s`` of wall time."""
    readings: list[int] = []

    def unknown(pid: int) -> None:
        readings.append(pid)

    monkeypatch.setattr(_sandbox, "_queued_s", unknown, raising=False)
    [result] = await run_tests(_wait_for(tmp_path / "never"), ["pass"],
                               SandboxLimits(timeout_s=0.3, tmp_root=root))
    assert result.status == "timeout" and "time limit of 0.3 s" in result.message
    assert len(readings) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_the_run_queue_delay_is_read_from_proc() -> None:
    """On Linux the reading is the seconds a live process waited for a CPU (a number, at
    least 0), and ``None`` for a process that is gone."""
    assert _sandbox._queued_s(os.getpid()) is not None
    assert _sandbox._queued_s(os.getpid()) >= 0.0  # type: ignore[operator]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert _sandbox._queued_s(gone.pid) is None


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, -math.inf, "10s", True])
def test_timeout_s_must_be_a_positive_finite_number_of_seconds(value: object) -> None:
    """0, negative, NaN, infinite (which crashed when a case ran), boolean and text
    values (``"10s"``) are refused up front, naming ``timeout_s``, in the limits and in
    the judge's options."""
    for make in (SandboxLimits, FunctionalCorrectnessOptions):
        with pytest.raises((ValueError, TypeError), match="timeout_s"):
            make(timeout_s=value)  # type: ignore[arg-type]
