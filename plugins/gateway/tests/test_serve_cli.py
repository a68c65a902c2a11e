"""``aieng serve`` as a user runs it: a subprocess serving a pipeline file on loopback.

The file's backend is the ``openai`` component pointed at the module's test gateway, so
the whole chain is real HTTP; ``serve`` adds the ``monitor`` and ``feedback-sqlite``
components the file does not name."""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import FlakyBackend, LoopbackServer, free_port, make_gateway, wait_healthy
from aieng_gateway import Gateway, GatewaySettings, KeyStore

AIENG = Path(sys.executable).parent / "aieng"
#: Runs a command with Ctrl-C as at a terminal: a shell's background job (as CI may run the
#: tests in) hands its children SIGINT ignored.
SIGINT_AS_AT_A_TERMINAL = [sys.executable, "-c", ("import os, signal, sys; "
                                                  "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                                  "os.execv(sys.argv[1], sys.argv[1:])")]




def test_aieng_serve_subprocess(served: tuple[Gateway, LoopbackServer], api_key: str,
                                tmp_path: Path) -> None:
    """--no-auth warns; chat, /metrics from the added monitor, /v1/feedback into the added
    sink at --feedback-db all work; a bad pipeline file fails before binding."""
    pipeline = tmp_path / "relay.toml"
    pipeline.write_text(
        '[pipeline]\nname = "relay"\ntimeout = 20.0\n\n[components.llm]\nuse = "openai"\n'
        f'base_url = "{served[1].url}/v1"\nmodel = "test"\napi_key_env = "UPSTREAM_KEY"\n'
        'max_retries = 0\n')
    port = free_port()
    env = dict(os.environ, UPSTREAM_KEY=api_key, OMP_NUM_THREADS="1",
               AIENG_LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [str(AIENG), "serve", str(pipeline), "--port", str(port), "--no-auth",
         "--feedback-db", str(tmp_path / "fb.sqlite3")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, base)
        chat = httpx.post(f"{base}/v1/chat/completions", trust_env=False, timeout=30, json={
            "model": "relay", "messages": [{"role": "user", "content": "via two gateways"}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "You said: via two gateways"
        metrics = httpx.get(f"{base}/metrics", trust_env=False).text
        assert 'aieng_runs_total{pipeline="relay",status="ok"} 1' in metrics
        feedback = httpx.post(f"{base}/v1/feedback", trust_env=False, json={
            "run_id": chat.json()["id"], "kind": "rating", "value": 5})
        assert feedback.json() == {"run_id": chat.json()["id"], "kind": "rating",
                                   "recorded": 1}
        assert (tmp_path / "fb.sqlite3").exists()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert b"gateway.auth_disabled" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nname = "bad"\n[components.x]\nuse = "no-such-component"\n')
    result = subprocess.run([str(AIENG), "serve", str(bad), "--no-auth", "--port",
                             str(free_port())], env=env, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode != 0 and b"no-such-component" in result.stderr


def test_serve_port_0_prints_the_bound_port_and_warns_without_live_keys(
        served: tuple[Gateway, LoopbackServer], tmp_path: Path) -> None:
    """``--port 0`` prints the port the OS bound (one a client can reach), and auth on over
    a key database with no live key warns at start how to create one, then serves."""
    store = KeyStore(tmp_path / "keys.sqlite3")
    _, record = store.create("old")
    store.revoke(record.id)
    pipeline = tmp_path / "relay.toml"
    pipeline.write_text(
        '[pipeline]\nname = "relay"\n\n[components.llm]\nuse = "openai"\n'
        f'base_url = "{served[1].url}/v1"\nmodel = "test"\nmax_retries = 0\n')
    env = dict(os.environ, OMP_NUM_THREADS="1", AIENG_LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [str(AIENG), "serve", str(pipeline), "--port", "0", "--keys", str(store.path),
         "--no-monitor", "--feedback-db", str(tmp_path / "fb.sqlite3")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: queue.Queue[bytes] = queue.Queue()
    stderr = process.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stderr],
                              daemon=True)
    reader.start()
    seen: list[bytes] = []
    try:
        while not any(b" on http://" in line for line in seen):
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                pytest.fail(f"aieng serve printed no address: {b''.join(seen)!r}")
        [started] = [line.decode() for line in seen if b" on http://" in line]
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", started)
        assert found is not None, started
        port = int(found.group(1))
        assert port != 0, started
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).status_code == 200
        refused = httpx.get(f"http://127.0.0.1:{port}/v1/models", trust_env=False,
                            headers={"Authorization": "Bearer aieng-00000000-" + "x" * 43})
        assert refused.status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=20)
        reader.join(timeout=20)  # the pipe ends with the process
        stderr.close()
    text = b"".join(seen).decode()
    assert "no live API key" in text and "aieng keys create" in text, text


def _relay(tmp_path: Path, upstream: LoopbackServer, **options: str) -> Path:
    pipeline = tmp_path / "relay.toml"
    pipeline.write_text(
        '[pipeline]\nname = "relay"\ntimeout = 60.0\n\n[components.llm]\nuse = "openai"\n'
        f'base_url = "{upstream.url}/v1"\nmodel = "test"\nmax_retries = 0\n'
        + "".join(f'{name} = "{value}"\n' for name, value in options.items()))
    return pipeline


def _serve(pipeline: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SIGINT_AS_AT_A_TERMINAL, str(AIENG), "serve", str(pipeline), "--no-auth",
         "--no-monitor", "--feedback-db", str(tmp_path / "fb.sqlite3"), *args],
        env=dict(os.environ, OMP_NUM_THREADS="1", AIENG_LOG_LEVEL="WARNING", **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)




def test_a_pipeline_that_fails_to_start_is_one_line(served: tuple[Gateway, LoopbackServer],
                                                    tmp_path: Path) -> None:
    """A component that cannot start (here: its API key variable unset) fails `serve` with
    `aieng run`'s one line and exit status 2, not uvicorn's 60-line traceback; a port
    already taken says which address could not be bound."""
    pipeline = _relay(tmp_path, served[1], api_key_env="AIENG_TEST_UNSET_KEY")
    env = dict(os.environ, OMP_NUM_THREADS="1", AIENG_LOG_LEVEL="WARNING")
    env.pop("AIENG_TEST_UNSET_KEY", None)
    failed = subprocess.run([str(AIENG), "serve", str(pipeline), "--no-auth", "--port", "0",
                             "--no-monitor"], env=env, capture_output=True, timeout=60,
                            check=False)
    err = failed.stderr.decode()
    assert failed.returncode == 2, err
    assert "aieng: error:" in err and "AIENG_TEST_UNSET_KEY" in err, err
    assert "Traceback" not in err and "Application startup failed" not in err, err
    taken = subprocess.run([str(AIENG), "serve", str(_relay(tmp_path, served[1])),
                            "--no-auth", "--no-monitor", "--port", str(served[1].port)],
                           env=env, capture_output=True, timeout=60, check=False)
    err = taken.stderr.decode()
    assert taken.returncode == 3, err
    assert f"cannot listen on 127.0.0.1:{served[1].port}" in err and "Traceback" not in err


def _flaky_upstream(tmp_path: Path) -> tuple[FlakyBackend, Gateway]:
    """An upstream gateway (no auth) over the flaky backend double, which answers "SLOW"
    only after a long wait: requests stay in flight while the test stops `serve`."""
    backend = FlakyBackend()
    (tmp_path / "up").mkdir()
    return backend, make_gateway(tmp_path / "up", backend=backend, timeout=60,
                                 settings=GatewaySettings(auth=False))

def test_sigterm_ends_what_outlasts_the_grace_period_cleanly(tmp_path: Path) -> None:
    """SIGTERM with requests in flight: what is still running after --graceful-timeout
    ends as 503 ``server_shutting_down`` (a started stream: an error event, then [DONE]),
    not a bare 500 and a cut stream; no traceback; the process ends by SIGTERM (143)."""
    backend, upstream_gateway = _flaky_upstream(tmp_path)
    with LoopbackServer(upstream_gateway.app) as upstream:
        port = free_port()
        process = _serve(_relay(tmp_path, upstream), tmp_path, "--port", str(port),
                         "--graceful-timeout", "1")
        base = f"http://127.0.0.1:{port}"
        answers: dict[str, Any] = {}
        streaming = threading.Event()

        def ask_json() -> None:
            answers["json"] = httpx.post(f"{base}/v1/chat/completions", trust_env=False,
                                         timeout=60, json={
                "messages": [{"role": "user", "content": "SLOW"}]})

        def ask_stream() -> None:
            with httpx.stream("POST", f"{base}/v1/chat/completions", trust_env=False,
                              timeout=60, json={
                    "stream": True,
                    "messages": [{"role": "user", "content": "STREAMLONG"}]}) as response:
                chunks = response.iter_bytes()
                first = next(chunks)
                streaming.set()
                answers["stream"] = (response.status_code, first + b"".join(chunks))

        try:
            wait_healthy(process, base)
            clients = [threading.Thread(target=ask_json), threading.Thread(target=ask_stream)]
            for thread in clients:
                thread.start()
            assert backend.slow.wait(60) and streaming.wait(60)
            process.send_signal(signal.SIGTERM)
            for thread in clients:
                thread.join(60)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == -signal.SIGTERM, err.decode()
    assert b"Traceback" not in err, err.decode()
    response = answers["json"]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "server_shutting_down"
    assert response.headers["retry-after"] == "1"
    status, body = answers["stream"]
    assert status == 200
    assert b'"code": "server_shutting_down"' in body and body.endswith(b"data: [DONE]\n\n")


def test_ctrl_c_stops_serve_with_status_130(served: tuple[Gateway, LoopbackServer],
                                            tmp_path: Path) -> None:
    """Ctrl-C stops `aieng serve` cleanly with status 130, as every aieng command (it
    exited 0, as if the server had ended by itself)."""
    port = free_port()
    process = _serve(_relay(tmp_path, served[1]), tmp_path, "--port", str(port))
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err.decode()
    assert b"Traceback" not in err, err.decode()


def test_a_second_ctrl_c_stops_at_once_and_still_closes_the_pipeline(tmp_path: Path) -> None:
    """A second Ctrl-C while a request still runs stops `aieng serve` at once with one line
    saying so, not two tracebacks of the cancellation it forces (the request's and the
    lifespan's); the pipeline still closes (the feedback database's WAL is checkpointed
    away, the row it took kept) and the status is 130."""
    backend, upstream_gateway = _flaky_upstream(tmp_path)
    with LoopbackServer(upstream_gateway.app) as upstream:
        port = free_port()
        process = _serve(_relay(tmp_path, upstream), tmp_path, "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(process, base)
            recorded = httpx.post(f"{base}/v1/feedback", trust_env=False,
                                  json={"run_id": "r1", "kind": "rating", "value": 5})
            assert recorded.status_code == 200, recorded.text
            assert (tmp_path / "fb.sqlite3-wal").exists()  # open, in WAL mode
            threading.Thread(target=lambda: httpx.post(
                f"{base}/v1/chat/completions", timeout=60, trust_env=False,
                json={"messages": [{"role": "user", "content": "SLOW"}]}), daemon=True).start()
            assert backend.slow.wait(60)
            process.send_signal(signal.SIGINT)
            time.sleep(1.0)  # the first Ctrl-C's shutdown waits for the slow request
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = err.decode()
    assert process.returncode == 130, text
    assert "second Ctrl-C: requests still running are cut short" in text, text
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text
    assert not (tmp_path / "fb.sqlite3-wal").exists()
    with sqlite3.connect(tmp_path / "fb.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM feedback").fetchone() == (1,)
