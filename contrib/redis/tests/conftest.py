"""A real redis-server for the tests: started once per session on a free port, in a
temporary folder, without persistence (``--save '' --appendonly no``), and stopped after.

Without the binary the tests skip, naming the package to install, except under ``CI``
where they fail: CI installs redis-server (``apt-get install -y redis-server``), and a
skip there would hide a broken step.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# A hang guard: a loaded 2-core CI box starts redis-server in well under a second.
_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _binary() -> str:
    """The redis-server binary; skips the test without one (fails it under ``CI``)."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        reason = "needs redis-server on PATH: apt-get install redis-server"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


@contextmanager
def _server(folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server on a free port of 127.0.0.1, in ``folder``: its URL and process."""
    binary = _binary()
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"redis-server did not start on port {port}: {error}")
            time.sleep(0.02)  # waiting for a server to come up, not a timing assertion
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """asyncio only: redis-py's asyncio client runs on nothing else (under trio the level
    refuses to open, as test_redis_host.py checks)."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server this session started (database 0)."""
    with _server(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test alone (to stop, pause or restart): URL and process."""
    with _server(tmp_path) as started:
        yield started


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses, so tests share the server without interfering."""
    return f"test:{uuid.uuid4().hex[:12]}:"
