"""Run generated Python against test cases in a sandboxed subprocess (functional
correctness).

Each test case runs in its own ``python -I -B`` process (isolated mode: no ``PYTHON*``
variables, no user site, no current directory on ``sys.path``), started in a new session
so the whole process group is killed on timeout, with a scrubbed environment and a fresh
temporary working directory that is removed afterwards. What is enforced:

- time: the parent kills the process group (``SIGKILL``) once the case has run for
  ``timeout_s`` seconds, not counting the time it spent waiting for a CPU (Linux's
  ``/proc/<pid>/schedstat``), so a busy machine does not time out honest code; at most
  ten times ``timeout_s`` of wall time in any case (wall time alone where the kernel does
  not say);
- CPU time: ``RLIMIT_CPU`` (the kernel stops the process with ``SIGXCPU``);
- memory: ``RLIMIT_AS`` (allocations beyond it raise ``MemoryError``);
- file size: ``RLIMIT_FSIZE``; no core dumps;
- network: a new, empty network namespace (``unshare -n``) when the system allows it,
  and in any case an audit hook refusing sockets (but Unix socket pairs, which asyncio's
  loop needs) and every socket operation;
- processes: the audit hook refuses ``subprocess``, ``os.system``, ``fork``, ``exec``
  and ``spawn``, and signals to other processes; one that leaves the process group is
  not killed (its pipes are read for a second after the code's process exits);
- files: the audit hook refuses writes, removals and renames outside the working
  directory; ``HOME`` and ``TMPDIR`` point into it. Reads are not restricted but for
  other processes' ``/proc/<pid>`` files (the parent's environment).

The audit hook guards against accidents of generated code, not against an adversary
(``ctypes`` can get around it), and code written to cheat can forge its own verdict; run
hostile code in a container or VM as well.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs
import structlog
from anyio.abc import ByteReceiveStream, TaskStatus
from attrs import validators as v

__all__ = ["CaseResult", "SandboxLimits", "network_namespace_available", "run_tests"]

log = structlog.get_logger(__name__)

Status = Literal["passed", "failed", "error", "timeout"]
_BOOTSTRAP = str(Path(__file__).with_name("_bootstrap.py"))
_UNSHARE_CHECKED: dict[str, list[str] | None] = {}
_VERDICTS = ("passed", "failed", "error")
#: How long output is still read once the process has exited and its group was killed: a
#: process that left the group (a new session) may hold the pipes open for ever.
_DRAIN_AFTER_EXIT_S = 1.0
#: The most wall time a case gets, as a multiple of ``timeout_s``, however long it waited
#: for a CPU (a machine so loaded, or a clock so wrong, that the case would never end).
_MAX_STRETCH = 10.0


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # NaN and inf are floats too: a limit that never ends (or cannot be compared) is none.
    if isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"{attribute.name} must be a positive, finite number of seconds, "
                         f"got {value!r}")


@attrs.frozen
class SandboxLimits:
    """The limits each test case runs under.

    :param timeout_s: seconds per test case, not counting the time the case waited for a
        CPU (on a loaded machine, its wall time is longer; at most ten times this); the
        process group is then killed.
    :param cpu_s: CPU seconds per test case (``RLIMIT_CPU``); by default ``timeout_s``
        rounded up.
    :param memory_mb: address-space limit in MiB (``RLIMIT_AS``).
    :param file_mb: the largest file the code may write, in MiB (``RLIMIT_FSIZE``).
    :param output_bytes: how much of standard output and error is kept per case.
    :param network: ``"namespace"`` (require ``unshare -n``), ``"auto"`` (use it when it
        works) or ``"hook"`` (only the audit hook refuses sockets).
    :param allow_processes: let the code start processes (off: refused).
    :param site_packages: let the code import installed packages (off: ``-S``, the
        standard library only).
    :param python: the interpreter; the one running aieng by default.
    :param tmp_root: where the per-case temporary directories are made (the system's
        temporary directory by default).
    """

    timeout_s: float = attrs.field(default=10.0, validator=[v.instance_of((int, float)),
                                                            _seconds])
    cpu_s: int | None = attrs.field(default=None, validator=[v.optional(v.instance_of(int)),
                                                             _positive])
    memory_mb: int = attrs.field(default=1024, validator=[v.instance_of(int), _positive])
    file_mb: int = attrs.field(default=64, validator=[v.instance_of(int), _positive])
    output_bytes: int = attrs.field(default=65536, validator=[v.instance_of(int), _positive])
    network: Literal["auto", "namespace", "hook"] = attrs.field(
        default="auto", validator=v.in_(("auto", "namespace", "hook")))
    allow_processes: bool = attrs.field(default=False, validator=v.instance_of(bool))
    site_packages: bool = attrs.field(default=True, validator=v.instance_of(bool))
    python: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    tmp_root: str | None = attrs.field(default=None,
                                       validator=v.optional(v.instance_of(str)))


@attrs.frozen
class CaseResult:
    """The outcome of one test case.

    :param status: ``passed``, ``failed`` (an assertion failed), ``error`` (any other
        exception, a syntax error, a memory error, a crash) or ``timeout`` (``timeout_s``
        or ``cpu_s`` exceeded).
    :param message: a short explanation (empty when passed).
    :param duration_s: wall-clock seconds the case took (waiting for a CPU included).
    :param stdout: the start of what the code printed (at most ``output_bytes``).
    :param stderr: the start of its standard error.
    """

    status: Status
    message: str = ""
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""


def network_namespace_available() -> list[str] | None:
    """The ``unshare`` prefix that puts a process in an empty network namespace here
    (``["unshare", "-n"]`` as root, ``["unshare", "-r", "-n"]`` with user namespaces), or
    ``None`` when neither works. Checked once per process (blocking: call it in a thread).
    """
    if "prefix" not in _UNSHARE_CHECKED:
        found: list[str] | None = None
        if sys.platform.startswith("linux") and shutil.which("unshare"):
            for prefix in (["unshare", "-n"], ["unshare", "-r", "-n"]):
                try:
                    done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10,
                                          check=False)
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if done.returncode == 0:
                    found = prefix
                    break
        _UNSHARE_CHECKED["prefix"] = found
        log.debug("sandbox.network_namespace", prefix=found)
    return _UNSHARE_CHECKED["prefix"]


def _environment(work: str) -> dict[str, str]:
    # Scrubbed: nothing of the parent's environment (keys, tokens, proxies) reaches the code.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


async def _drain(stream: ByteReceiveStream | None, keep: int, into: bytearray) -> None:
    if stream is None:
        return
    async for chunk in stream:
        if len(into) < keep:
            into.extend(chunk[:keep - len(into)])


def _queued_s(pid: int) -> float | None:
    """Seconds process ``pid`` (its main thread) has spent runnable but waiting for a CPU
    (the second field of ``/proc/<pid>/schedstat``); ``None`` where the kernel does not say
    (not Linux, no ``CONFIG_SCHED_INFO``, the process gone)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


async def _time_limit(pid: int, timeout_s: float, limit: anyio.CancelScope, *,
                      task_status: TaskStatus[anyio.CancelScope]) -> None:
    """Cancel ``limit`` once the case has had ``timeout_s`` seconds of time not spent
    waiting for a CPU (at most :data:`_MAX_STRETCH` times ``timeout_s`` of wall time);
    cancelling the scope given to ``task_status`` stops the watch."""
    with anyio.CancelScope() as watch:
        task_status.started(watch)
        start = anyio.current_time()
        last = start + timeout_s * _MAX_STRETCH
        until = start + timeout_s
        while True:
            await anyio.sleep_until(until)
            # Read when the limit is reached, not before: a case that ends in time costs
            # no reading. Monotonic clocks only: a wall clock set back or forward changes
            # nothing here.
            queued = _queued_s(pid)
            later = min(start + timeout_s + (queued or 0.0), last)
            if later <= anyio.current_time():
                break
            until = later
        limit.cancel()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _prepare(limits: SandboxLimits) -> tuple[str, str, str, int]:
    # A private folder per case: ``work`` (the code's cwd, the only place it may write) and,
    # beside it, the report file the child writes its verdict to through an inherited fd.
    base = tempfile.mkdtemp(prefix="aieng-sandbox-", dir=limits.tmp_root)
    work = os.path.join(base, "work")
    os.mkdir(work, 0o700)
    report_path = os.path.join(base, "report")
    report_fd = os.open(report_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return base, work, report_path, report_fd


async def _run_case(code: str, test: str, limits: SandboxLimits, prefix: list[str]) -> CaseResult:
    base, work, report_path, report_fd = await anyio.to_thread.run_sync(_prepare, limits)
    nonce = secrets.token_hex(16)
    cpu = limits.cpu_s or max(1, int(-(-limits.timeout_s // 1)))
    job = {"code": code, "test": test, "root": work, "nonce": nonce, "report_fd": report_fd,
           "memory_bytes": limits.memory_mb * 1024 * 1024, "cpu_seconds": cpu,
           "file_bytes": limits.file_mb * 1024 * 1024,
           "block_network": True, "block_processes": not limits.allow_processes}
    flags = ["-I", "-B"] if limits.site_packages else ["-I", "-B", "-S"]
    command = [*prefix, limits.python or sys.executable, *flags, _BOOTSTRAP]
    out, err = bytearray(), bytearray()
    started = time.perf_counter()
    timed_out = False
    try:
        process = await anyio.open_process(command, cwd=work, env=_environment(work),
                                           start_new_session=True, pass_fds=(report_fd,))
        os.close(report_fd)
        report_fd = -1
        try:
            with anyio.CancelScope() as limit:  # cancelled by _time_limit
                async with anyio.create_task_group() as group:
                    watch = await group.start(_time_limit, process.pid, limits.timeout_s,
                                              limit)
                    group.start_soon(_drain, process.stdout, limits.output_bytes, out)
                    group.start_soon(_drain, process.stderr, limits.output_bytes, err)
                    assert process.stdin is not None
                    try:
                        await process.stdin.send(json.dumps(job).encode("utf-8"))
                        await process.stdin.aclose()
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass  # it died before reading: its exit status says why
                    await process.wait()
                    watch.cancel()  # it ended: its own verdict stands
                    _kill_group(process.pid)  # leftovers holding the pipes open
                    # One that left the group keeps them open: stop reading soon.
                    group.cancel_scope.deadline = anyio.current_time() + _DRAIN_AFTER_EXIT_S
            timed_out = limit.cancelled_caught
        finally:
            _kill_group(process.pid)
            with anyio.CancelScope(shield=True):
                await process.aclose()  # the pipes too: an escaped process may hold them
        duration = time.perf_counter() - started
        report = await anyio.to_thread.run_sync(
            lambda: Path(report_path).read_text(encoding="utf-8", errors="replace"))
        return _result(report, nonce, process.returncode, timed_out, duration, limits, cpu,
                       _decode(bytes(out)), _decode(bytes(err)))
    finally:
        if report_fd >= 0:
            os.close(report_fd)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(base, ignore_errors=True))


def _result(report: str, nonce: str, returncode: int | None, timed_out: bool,
            duration: float, limits: SandboxLimits, cpu: int, stdout: str,
            stderr: str) -> CaseResult:
    def made(status: Status, message: str) -> CaseResult:
        return CaseResult(status, message, duration, stdout, stderr)

    if timed_out:
        return made("timeout", f"time limit of {limits.timeout_s:g} s (timeout_s) exceeded, "
                               "time spent waiting for a CPU not counted: the process group "
                               "was killed; raise timeout_s for slower code")
    for line in reversed(report.splitlines()):
        if line.startswith(nonce + " "):
            try:
                outcome = json.loads(line[len(nonce) + 1:])
            except ValueError:
                outcome = None
            if not isinstance(outcome, dict) or outcome.get("status") not in _VERDICTS:
                return made("error", f"the process wrote an unreadable report: {line[:200]!r}")
            return made(outcome["status"], str(outcome.get("message", "")))
    if returncode == -signal.SIGXCPU:
        return made("timeout", f"CPU-time limit of {cpu} s exceeded; raise cpu_s (or "
                               "timeout_s, which sets it by default) for slower code")
    if returncode is not None and returncode < 0:
        return made("error", f"killed by signal {signal.Signals(-returncode).name}")
    tail = stderr.strip().splitlines()[-1:] or [""]
    return made("error", f"the process exited with status {returncode} without reporting "
                         f"a result {tail[0][:500]}".rstrip())


async def run_tests(code: str, tests: Sequence[str], limits: SandboxLimits | None = None,
                    ) -> list[CaseResult]:
    """Run ``code`` against each test case, each in its own sandboxed process.

    A test case is Python source run after the code in the same namespace: it passes when
    it raises nothing (``assert`` statements, or a HumanEval ``check(candidate)`` call).
    Cases run one after the other; the event loop stays free (the processes are awaited,
    the file work runs in threads).

    :param code: the program under test.
    :param tests: the test cases' source.
    :param limits: the limits of each case (:class:`SandboxLimits` defaults when ``None``).
    :returns: one :class:`CaseResult` per test case, in order.
    :raises RuntimeError: when ``limits.network == "namespace"`` and no network namespace
        can be made here.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be str, got {type(code).__name__}")
    if isinstance(tests, str):
        raise TypeError("tests must be a list of test-case sources, not one string")
    for i, test in enumerate(tests):
        if not isinstance(test, str):
            raise TypeError(f"test case #{i} must be str, got {type(test).__name__}")
    limits = limits or SandboxLimits()
    prefix: list[str] = []
    if limits.network != "hook":
        found = await anyio.to_thread.run_sync(network_namespace_available)
        if found is not None:
            prefix = found
        elif limits.network == "namespace":
            raise RuntimeError("no network namespace can be made here (`unshare -n` fails): "
                               "set network = 'auto' or 'hook' to rely on the audit hook")
    return [await _run_case(code, test, limits, prefix) for test in tests]
