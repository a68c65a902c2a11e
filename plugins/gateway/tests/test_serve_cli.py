"""``aieng serve`` as a user runs it: a subprocess serving a pipeline file on loopback.

The file's backend is the ``openai`` component pointed at the module's test gateway, so
the whole chain is real HTTP; ``serve`` adds the ``monitor`` and ``feedback-sqlite``
components the file does not name."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway, KeyStore

AIENG = Path(sys.executable).parent / "aieng"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_aieng_serve_subprocess(served: tuple[Gateway, LoopbackServer], api_key: str,
                                tmp_path: Path) -> None:
    """--no-auth warns; chat, /metrics from the added monitor, /v1/feedback into the added
    sink at --feedback-db all work; a bad pipeline file fails before binding."""
    pipeline = tmp_path / "relay.toml"
    pipeline.write_text(
        '[pipeline]\nname = "relay"\ntimeout = 20.0\n\n[components.llm]\nuse = "openai"\n'
        f'base_url = "{served[1].url}/v1"\nmodel = "test"\napi_key_env = "UPSTREAM_KEY"\n'
        'max_retries = 0\n')
    port = _free_port()
    env = dict(os.environ, UPSTREAM_KEY=api_key, OMP_NUM_THREADS="1",
               AIENG_LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [str(AIENG), "serve", str(pipeline), "--port", str(port), "--no-auth",
         "--feedback-db", str(tmp_path / "fb.sqlite3")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "aieng serve did not start"
            time.sleep(0.1)
        chat = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "relay", "messages": [{"role": "user", "content": "via two gateways"}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "You said: via two gateways"
        metrics = httpx.get(f"{base}/metrics").text
        assert 'aieng_runs_total{pipeline="relay",status="ok"} 1' in metrics
        feedback = httpx.post(f"{base}/v1/feedback", json={"run_id": chat.json()["id"],
                                                           "kind": "rating", "value": 5})
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
                             str(_free_port())], env=env, capture_output=True, timeout=60,
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
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
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
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        refused = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                            headers={"Authorization": "Bearer aieng-00000000-" + "x" * 43})
        assert refused.status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=20)
    text = b"".join(seen).decode()
    assert "no live API key" in text and "aieng keys create" in text, text
