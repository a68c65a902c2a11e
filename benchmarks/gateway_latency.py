"""Gateway added latency: ``aieng serve`` against the LiteLLM proxy, over one fake upstream.

What is measured (every server a separate process on 127.0.0.1, one machine):

* a fake upstream: a tiny asyncio HTTP/1.1 server answering every
  ``POST /v1/chat/completions`` with one fixed OpenAI chat completion (no model);
* ours: ``aieng serve`` of a pipeline whose only component is the ``openai`` backend
  pointed at the fake upstream (API keys ON: every request is authenticated; the
  ``monitor`` subscriber and the ``feedback-sqlite`` sink are added as ``aieng serve`` does
  by default);
* peer: the LiteLLM proxy (``litellm --config``), installed in its own venv
  (``benchmarks/.venv-litellm``, so its pins cannot disturb ours), with one model routed to
  the same fake upstream, with a master key (it refuses to start without one), so both
  sides check a bearer key on every request.

One client (httpx, keep-alive) sends the same chat request in rounds — direct to the
upstream, through ours, through LiteLLM, in a shuffled order each round so that drift on a
shared machine hits all three alike. After ``--warmup`` rounds, ``--requests`` rounds are
timed. Added latency = percentile(through proxy) - percentile(direct), at p50 and p99;
the ratio ours / LiteLLM is reported (goal <= 0.5). Then ``--clients`` concurrent clients
hammer our gateway for ``--duration`` seconds: requests/s and errors (goal: 0 errors).

Run it alone::

    python3 -m venv benchmarks/.venv-litellm
    benchmarks/.venv-litellm/bin/pip install 'litellm[proxy]'
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gateway_latency.py [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _args import nonnegative, positive, positive_float
from _stats import nearest_rank

ROOT = Path(__file__).resolve().parent.parent
AIENG = ROOT / ".venv" / "bin" / "aieng"
LITELLM = ROOT / "benchmarks" / ".venv-litellm" / "bin" / "litellm"
MODEL = "fake-model"
PEER_KEY = "sk-bench-" + "0123456789abcdef" * 4
BODY = {"model": MODEL, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
COMPLETION = json.dumps({
    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Hello! Nice to meet you."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}).encode()
MODELS = json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}]}).encode()


# -- the fake upstream (run with --fake-upstream PORT in its own process) -----------------

async def _serve_upstream(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if " " in lines[0] else "/"
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                body = MODELS if path.endswith("/models") else COMPLETION
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# -- helpers ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float,
                headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.post(url, json=BODY, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready after {timeout} s")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", AIENG_LOG_LEVEL="WARNING",
               # LiteLLM would fetch its model price map from GitHub and send telemetry.
               LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
               LITELLM_LOG="ERROR", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1")
    return env


async def _hammer(url: str, key: str, clients: int, duration: float) -> dict[str, Any]:
    ok = errors = 0
    statuses: dict[str, int] = {}
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal ok, errors
        while time.monotonic() < stop:
            try:
                response = await client.post(url, json=BODY)
                if response.status_code == 200 and response.json()["choices"]:
                    ok += 1
                    continue
                label = str(response.status_code)
            except (httpx.HTTPError, ValueError) as exc:
                label = type(exc).__name__
            errors += 1
            statuses[label] = statuses.get(label, 0) + 1

    started = time.monotonic()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30,
                                 limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {"clients": clients, "seconds": round(elapsed, 2), "ok": ok, "errors": errors,
            "error_kinds": statuses, "requests_per_s": round(ok / elapsed, 1)}


# -- the benchmark ------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=positive, default=500)
    parser.add_argument("--warmup", type=nonnegative, default=50)
    parser.add_argument("--clients", type=positive, default=16)
    parser.add_argument("--duration", type=positive_float, default=30.0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--fake-upstream", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_upstream is not None:
        asyncio.run(_serve_upstream(args.fake_upstream))
        return

    work = Path(tempfile.mkdtemp(prefix="aieng-gw-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    env = _env()
    try:
        up_port, our_port, peer_port = _free_port(), _free_port(), _free_port()
        processes.append(subprocess.Popen(
            [sys.executable, __file__, "--fake-upstream", str(up_port)], env=env))
        upstream = f"http://127.0.0.1:{up_port}/v1"

        pipeline = work / "gateway.toml"
        pipeline.write_text(
            '[pipeline]\nname = "bench"\ntimeout = 30.0\n\n[components.llm]\nuse = "openai"\n'
            f'base_url = "{upstream}"\nmodel = "{MODEL}"\nmax_retries = 0\n')
        keys = work / "keys.sqlite3"
        key = subprocess.run([str(AIENG), "keys", "create", "bench", "--keys", str(keys)],
                             check=True, capture_output=True, env=env).stdout.decode().strip()
        processes.append(subprocess.Popen(
            [str(AIENG), "serve", str(pipeline), "--port", str(our_port), "--keys", str(keys),
             "--feedback-db", str(work / "feedback.sqlite3")], env=env))
        ours = f"http://127.0.0.1:{our_port}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {key}"}

        peer: str | None = None
        peer_problem = None
        if LITELLM.exists():
            config = work / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                f"  - model_name: {MODEL}\n"
                "    litellm_params:\n"
                f"      model: openai/{MODEL}\n"
                f"      api_base: {upstream}\n"
                "      api_key: fake-key\n"
                "litellm_settings:\n  telemetry: false\n  num_retries: 0\n"
                # LiteLLM refuses to start without a master key: both sides authenticate.
                f"general_settings:\n  master_key: {PEER_KEY}\n")
            processes.append(subprocess.Popen(
                [str(LITELLM), "--config", str(config), "--port", str(peer_port),
                 "--host", "127.0.0.1", "--num_workers", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=(work / "litellm.log").open("wb")))
            peer = f"http://127.0.0.1:{peer_port}/v1/chat/completions"
        else:
            peer_problem = f"{LITELLM} not found: install litellm[proxy] in that venv"

        direct = f"{upstream}/chat/completions"
        _wait_ready(direct, processes[0], 30)
        _wait_ready(ours, processes[1], 120, auth)
        if peer is not None:
            try:
                _wait_ready(peer, processes[2], 180, {"Authorization": f"Bearer {PEER_KEY}"})
            except RuntimeError as exc:
                peer_problem = f"{exc}; log: {(work / 'litellm.log').read_text()[-2000:]}"
                peer = None

        targets = {"direct": (direct, {}), "ours": (ours, auth)}
        if peer is not None:
            targets["litellm"] = (peer, {"Authorization": f"Bearer {PEER_KEY}"})
        times: dict[str, list[float]] = {name: [] for name in targets}
        rng = random.Random(0)
        with httpx.Client(timeout=30) as client:
            for round_ in range(args.warmup + args.requests):
                order = list(targets)
                rng.shuffle(order)
                for name in order:
                    url, headers = targets[name]
                    started = time.perf_counter()
                    response = client.post(url, json=BODY, headers=headers)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: HTTP {response.status_code}: "
                                           f"{response.text[:300]}")
                    if round_ >= args.warmup:
                        times[name].append(elapsed)

        result: dict[str, Any] = {"requests": args.requests, "warmup": args.warmup,
                                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                                  "latency_ms": {}, "added_ms": {}}
        for name, values in times.items():
            result["latency_ms"][name] = {f"p{q}": round(nearest_rank(values, q) * 1000, 3)
                                          for q in (50, 99)}
        for name in targets:
            if name == "direct":
                continue
            result["added_ms"][name] = {
                p: round(result["latency_ms"][name][p] - result["latency_ms"]["direct"][p], 3)
                for p in ("p50", "p99")}
        if "litellm" in result["added_ms"]:
            result["ratio_ours_over_litellm"] = {
                p: round(result["added_ms"]["ours"][p] / result["added_ms"]["litellm"][p], 3)
                for p in ("p50", "p99")}
        else:
            result["peer_problem"] = peer_problem
        result["load"] = asyncio.run(_hammer(ours, key, args.clients, args.duration))
        text = json.dumps(result, indent=2)
        print(text)
        if args.json is not None:
            args.json.write_text(text + "\n")
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
