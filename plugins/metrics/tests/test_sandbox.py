"""Functional correctness: the sandbox's verdicts (passed, failed, error, timeout), its
limits (wall time, CPU time, memory, network, processes, files outside its directory) and
the ``functional-correctness`` judge."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import anyio
import pytest
from aieng_hookspecs.types import Sample
from aieng_metrics import (
    FunctionalCorrectnessJudge,
    FunctionalCorrectnessOptions,
    SandboxLimits,
    network_namespace_available,
    run_tests,
)

pytestmark = pytest.mark.anyio

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture
def limits(tmp_path: Path) -> SandboxLimits:
    """Small limits, temporary directories under the test's own folder."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    return SandboxLimits(timeout_s=5.0, memory_mb=256, tmp_root=str(root))


async def one(code: str, test: str, limits: SandboxLimits) -> tuple[str, str]:
    """The status and message of one test case."""
    [result] = await run_tests(code, [test], limits)
    return result.status, result.message


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_passing_failing_and_broken_code(limits: SandboxLimits) -> None:
    """Passing asserts pass; a failing assert fails, quoting the test line; a syntax error
    and a runtime error are errors naming their exception."""
    results = await run_tests(ADD, ["assert add(1, 2) == 3", "assert add(1, 2) == 4, 'sum'",
                                    "assert add(1) == 1"], limits)
    assert [r.status for r in results] == ["passed", "failed", "error"]
    assert "AssertionError: sum" in results[1].message
    assert "assert add(1, 2) == 4" in results[1].message
    assert "TypeError" in results[2].message
    status, message = await one("def add(a, b) return a\n", "assert add(1, 2) == 3", limits)
    assert status == "error" and "SyntaxError" in message


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_infinite_loop_is_killed(limits: SandboxLimits) -> None:
    """A loop that never ends is a timeout: the whole process group is killed at the wall
    limit, a child process it started included, and its directory removed."""
    fast = SandboxLimits(timeout_s=2.0, cpu_s=30, tmp_root=limits.tmp_root,
                         allow_processes=True)
    code = ("import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "while True:\n    pass\n")
    [result] = await run_tests(code, ["pass"], fast)
    assert result.status == "timeout" and "time limit of 2 s (timeout_s)" in result.message
    child = int(result.stdout.strip())
    with anyio.fail_after(5):
        while _alive(child):
            await anyio.sleep(0.05)
    assert os.listdir(str(limits.tmp_root)) == []


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            return not any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return False


async def test_cpu_limit_stops_a_busy_loop(limits: SandboxLimits) -> None:
    """With a CPU limit below the wall limit, the kernel stops the loop (SIGXCPU)."""
    busy = SandboxLimits(timeout_s=20.0, cpu_s=1, tmp_root=limits.tmp_root)
    status, message = await one("while True:\n    pass\n", "pass", busy)
    assert status == "timeout" and "CPU-time limit of 1 s" in message


async def test_memory_bomb_is_stopped(limits: SandboxLimits) -> None:
    """Allocating far past the address-space limit raises MemoryError in the child."""
    status, message = await one("blob = bytearray(8 * 1024 ** 3)\n", "pass", limits)
    assert status == "error" and "MemoryError" in message
    status, message = await one("blocks = [bytearray(10 ** 6) for _ in range(10 ** 4)]\n",
                                "pass", limits)
    assert status == "error" and "MemoryError" in message


async def test_network_is_refused(limits: SandboxLimits) -> None:
    """Connecting to a server listening on the parent's loopback fails in the child, with
    or without the network namespace; the server never sees a connection."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[object] = []
    server.settimeout(5)

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    code = ("import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n")
    try:
        for network in ("auto", "hook"):
            limited = SandboxLimits(timeout_s=5.0, network=network,  # type: ignore[arg-type]
                                    tmp_root=limits.tmp_root)
            status, message = await one(code, "pass", limited)
            assert status == "error" and "network access is disabled" in message, message
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        server.close()
        thread.join(timeout=6)
    assert accepted == []


async def test_unix_socket_pairs_are_allowed_but_not_connections(limits: SandboxLimits,
                                                                tmp_path: Path) -> None:
    """asyncio's event loop (a Unix socket pair) works in the sandbox; connecting a Unix
    socket to a path is refused."""
    code = ("import asyncio\n"
            "async def main():\n    await asyncio.sleep(0)\n    return 3\n"
            "result = asyncio.run(main())\n")
    status, message = await one(code, "assert result == 3", limits)
    assert status == "passed", message
    path = tmp_path / "server.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        status, message = await one(
            f"import socket\nsocket.socket(socket.AF_UNIX).connect({str(path)!r})\n", "pass",
            limits)
    finally:
        server.close()
    assert status == "error" and "network access is disabled" in message, message


async def test_network_namespace_where_available(limits: SandboxLimits) -> None:
    """Where ``unshare -n`` works, the child's network namespace has no interface but
    loopback (``/proc/self/net/dev`` lists the namespace's own), so even code getting
    around the audit hook reaches no network; ``network = "namespace"`` then works."""
    if network_namespace_available() is None:
        pytest.skip("no network namespace can be made on this machine")
    code = ("lines = open('/proc/self/net/dev').read().splitlines()[2:]\n"
            "names = sorted(line.split(':')[0].strip() for line in lines)\n")
    status, message = await one(code, "assert names == ['lo'], names", limits)
    assert status == "passed", message
    strict = SandboxLimits(network="namespace", tmp_root=limits.tmp_root)
    status, message = await one(ADD, "assert add(2, 2) == 4", strict)
    assert status == "passed", message


async def test_processes_are_refused(limits: SandboxLimits) -> None:
    """subprocess, os.system and fork are refused unless allowed."""
    for code in ("import subprocess\nsubprocess.run(['true'])\n", "import os\nos.system('true')\n",
                 "import os\nos.fork()\n"):
        status, message = await one(code, "pass", limits)
        assert status == "error" and "starting processes is disabled" in message, code


async def test_files_land_in_the_temporary_directory_only(limits: SandboxLimits,
                                                          tmp_path: Path) -> None:
    """A relative write lands in the case's own directory (its cwd, also HOME and
    TMPDIR), which is removed afterwards; a write or removal elsewhere is refused."""
    code = ("import os\n"
            "open('out.txt', 'w').write('data')\n"
            "cwd = os.getcwd()\n")
    test = ("import os, tempfile\n"
            "assert open('out.txt').read() == 'data'\n"
            f"assert cwd.startswith({str(limits.tmp_root)!r})\n"
            "assert os.environ['HOME'] == cwd and tempfile.gettempdir() == cwd\n")
    status, message = await one(code, test, limits)
    assert status == "passed", message
    assert os.listdir(str(limits.tmp_root)) == []  # removed afterwards
    outside = tmp_path / "outside.txt"
    status, message = await one(f"open({str(outside)!r}, 'w').write('x')\n", "pass", limits)
    assert status == "error" and "writing outside" in message
    assert not outside.exists()
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    status, message = await one(f"import os\nos.remove({str(keep)!r})\n", "pass", limits)
    assert status == "error" and "outside the sandbox" in message
    assert keep.exists()


async def test_environment_is_scrubbed(limits: SandboxLimits,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret in the parent's environment does not reach the code."""
    monkeypatch.setenv("AIENG_TEST_SECRET", "hunter2")
    status, message = await one("import os\n",
                                "assert 'AIENG_TEST_SECRET' not in os.environ", limits)
    assert status == "passed", message


async def test_exit_tricks_are_errors(limits: SandboxLimits) -> None:
    """sys.exit before the tests and os._exit (no verdict reported) are errors, not
    passes."""
    status, message = await one("import sys\nsys.exit(0)\n", "assert False", limits)
    assert status == "error" and "exit(0)" in message
    status, message = await one("import os\nos._exit(0)\n", "assert False", limits)
    assert status == "error" and "without reporting a result" in message


async def test_loop_stays_free_while_cases_run(limits: SandboxLimits,
                                               tmp_path: Path) -> None:
    """While a case runs in its process, other tasks keep running on the loop: the case
    waits for a file that a task on the loop makes after ticking 5 times (a blocked loop
    would leave the case to time out), whatever the machine's speed."""
    ticks = 0
    flag = tmp_path / "ticked"

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1
            if ticks == 5:
                flag.touch()

    code = (f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n"
            "    time.sleep(0.01)\n")
    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        status, message = await one(code, "pass", limits)
        group.cancel_scope.cancel()
    assert status == "passed", message
    assert ticks >= 5


async def test_bad_arguments_are_named(limits: SandboxLimits) -> None:
    """One string instead of a list of cases, and non-positive limits, fail clearly."""
    with pytest.raises(TypeError, match="list of test-case sources"):
        await run_tests(ADD, "assert add(1, 1) == 2", limits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s must be a positive, finite number"):
        SandboxLimits(timeout_s=0)


async def test_judge_scores_test_cases(limits: SandboxLimits) -> None:
    """The judge runs the reference's or metadata's cases: all passing scores 1, some
    failing scores 0 with the share passed; HumanEval's check(entry_point) is called; no
    tests is not applicable."""
    judge = FunctionalCorrectnessJudge(FunctionalCorrectnessOptions(timeout_s=5.0,
                                                                    memory_mb=256),
                                       tmp_root=limits.tmp_root)
    sample = Sample(input="write add", output=ADD,
                    reference=("assert add(1, 2) == 3", "assert add(2, 2) == 5"))
    scores = {s.name: s for s in await judge.aieng_judge(sample) or []}
    assert scores["functional_correctness"].value == 0.0
    assert scores["tests_passed"].value == 0.5
    assert "case 2 failed" in scores["tests_passed"].rationale
    humaneval = Sample(input="def add(a, b):\n", output="    return a + b\n",
                       metadata={"tests": "def check(candidate):\n"
                                          "    assert candidate(2, 3) == 5\n",
                                 "entry_point": "add"})
    prepend = FunctionalCorrectnessJudge(FunctionalCorrectnessOptions(prepend_input=True),
                                         tmp_root=limits.tmp_root)
    scores = {s.name: s for s in await prepend.aieng_judge(humaneval) or []}
    assert scores["functional_correctness"].value == 1.0
    assert await judge.aieng_judge(Sample(input="q", output=ADD)) is None
    with pytest.raises(ValueError, match="entry_point"):
        await judge.aieng_judge(Sample(input="q", output=ADD, reference="pass",
                                       metadata={"entry_point": "not a name"}))


async def test_the_code_cannot_rewrite_its_verdict(limits: SandboxLimits) -> None:
    """Code that patches what reports the verdict (json, compile, exec) or edits the test
    it is judged by still fails that test: the test is compiled before the code runs and
    the report is written with what was bound before."""
    failing = "assert False, 'must fail'"
    cheats = {
        "json": "import json\njson.dumps = lambda *a, **k: '{\"status\": \"passed\"}'\n"
                "json._default_encoder = None\n",
        "compile": "import builtins\n_c = compile\n"
                   "builtins.compile = lambda s, f, m, *a, **k: _c('pass', f, m)\n",
        "exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\n",
        "job": "import sys\nsys._getframe(1).f_locals['job']['test'] = 'pass'\n",
    }
    for name, code in cheats.items():
        status, message = await one(code, failing, limits)
        assert status == "failed" and "must fail" in message, (name, status, message)


async def test_a_forged_report_line_is_an_error(limits: SandboxLimits) -> None:
    """A report line that is not a verdict (no status, an unknown one) is an error, not a
    crash of the judge."""
    from aieng_metrics._sandbox import _result

    for line in ('[]', '{"message": "x"}', '{"status": "hacked"}', '"passed"'):
        result = _result(f"n0nce {line}\n", "n0nce", 0, False, 0.1, SandboxLimits(), 1, "",
                         "")
        assert result.status == "error" and "report" in result.message, (line, result)


async def test_other_processes_environment_cannot_be_read(limits: SandboxLimits,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The parent's environment (API keys) is not read through /proc/<pid>/environ, nor
    its memory or command line; the code's own /proc/self stays readable."""
    monkeypatch.setenv("AIENG_TEST_SECRET", "hunter2")
    pid = os.getpid()
    for path in (f"/proc/{pid}/environ", f"/proc/self/../{pid}/environ",
                 f"/proc/{pid}/cmdline", f"/proc/{pid}/mem"):
        code = ("import os\n"
                f"data = open({path!r}, 'rb').read(100000)\n"
                "print(b'hunter2' in data)\n")
        status, message = await one(code, "pass", limits)
        assert status == "error" and "other processes" in message, (path, status, message)
    status, message = await one("import os\nmine = open('/proc/self/status').read()\n",
                                "assert 'Pid:' in mine", limits)
    assert status == "passed", message


async def test_private_modules_do_not_start_processes_or_signal(limits: SandboxLimits,
                                                                tmp_path: Path) -> None:
    """_posixsubprocess.fork_exec (what subprocess calls past its audit event) and
    signal.pidfd_send_signal (a signal to the parent, which would stop the judge) are
    refused like their public forms, also after a re-import."""
    marker = tmp_path / "spawned"
    fork_exec = ("import _posixsubprocess, os\n"
                 "r, w = os.pipe()\n"
                 f"args = [b'/bin/sh', b'-c', b'echo x > {marker}']\n"
                 "_posixsubprocess.fork_exec(args, [b'/bin/sh'], True, (), None, None, -1, -1,"
                 " -1, -1, -1, -1, r, w, True, False, -1, None, None, -1, -1, None, False)\n")
    reimport = ("import sys\ndel sys.modules['_posixsubprocess']\n"
                "import _posixsubprocess\n")
    for code in (fork_exec, reimport):
        status, message = await one(code, "pass", limits)
        assert status == "error" and "starting processes is disabled" in message, message
    assert not marker.exists()
    signal_parent = ("import os, signal\n"
                     "signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGCONT)\n")
    status, message = await one(signal_parent, "pass", limits)
    assert status == "error" and "signalling other processes" in message, message


async def test_sqlite_and_xattr_writes_outside_are_refused(limits: SandboxLimits,
                                                           tmp_path: Path) -> None:
    """sqlite3 opens its file in C (no ``open`` event): a database outside the directory
    is refused, as is setting extended attributes there; a relative one works."""
    outside = tmp_path / "outside.db"
    for database in (repr(str(outside)), f"'file:{outside}?mode=rwc', uri=True"):
        code = f"import sqlite3\nsqlite3.connect({database}).execute('create table t(x)')\n"
        status, message = await one(code, "pass", limits)
        assert status == "error" and "outside the sandbox" in message, (code, message)
    assert not outside.exists()
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    status, message = await one(f"import os\nos.setxattr({str(keep)!r}, 'user.x', b'1')\n",
                                "pass", limits)
    assert status == "error" and "outside the sandbox" in message, message
    status, message = await one("import sqlite3\ndb = sqlite3.connect('here.db')\n"
                                "db.execute('create table t(x)')\n", "pass", limits)
    assert status == "passed", message


async def test_a_silenced_stdout_does_not_lose_the_verdict(limits: SandboxLimits) -> None:
    """Code that sets sys.stdout to None or closes it (to silence output) still gets its
    verdict."""
    for code in ("import sys\nsys.stdout = None\n", "import sys\nsys.stdout.close()\n"):
        status, message = await one(code + ADD, "assert add(1, 2) == 3", limits)
        assert status == "passed", (code, message)


async def test_a_process_leaving_the_group_does_not_make_a_pass_a_timeout(
        limits: SandboxLimits) -> None:
    """With processes allowed, a child that leaves the process group (a new session) and
    keeps standard output open does not hold the case until its wall limit: the verdict
    is the code's."""
    allowed = SandboxLimits(timeout_s=30.0, allow_processes=True, tmp_root=limits.tmp_root)
    code = ("import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "print(child.pid, flush=True)\n")
    [result] = await run_tests(code, ["pass"], allowed)
    try:
        assert result.status == "passed", result
    finally:
        os.kill(int(result.stdout.split()[0]), 9)
