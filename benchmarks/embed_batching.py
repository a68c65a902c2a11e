"""all-MiniLM-L6-v2 through ``aieng_embed``: dynamic batching vs unbatched calls.

1,000 single-sentence ``aieng_embed`` requests (sentences of this repository's docs):

- **unbatched**: the requests one after another through a ``minilm`` component without
  batching (``max_batch = 1``): one forward pass per request;
- **batched, burst**: all 1,000 issued at once to a ``minilm`` with ``max_batch`` (256)
  and ``max_wait_ms`` (5); each request's latency runs from its call to its vectors;
- **batched, 32 clients**: 32 concurrent clients, each sending its next request when the
  previous one returns (a closed loop), until 1,000 are done.

Reported: requests/s and the ratio to unbatched, latency p50/p99, and p99 over a single
request's latency (the median of 50 lone requests). Medians of ``--repeats`` runs. The
batched vectors are checked against the unbatched ones (max |difference|).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/embed_batching.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import torch
from aieng_transformers import MiniLMEmbedder, MiniLMOptions

ROOT = Path(__file__).resolve().parent.parent


def sentences(count: int) -> list[str]:
    """``count`` sentences of 5-40 words from docs/*.md (repeated if needed)."""
    found: list[str] = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = re.sub(r"`[^`]*`|\[|\]\([^)]*\)|[#*|>_]", " ", path.read_text(encoding="utf-8"))
        for piece in re.split(r"(?<=[.!?])\s+", text):
            words = piece.split()
            if 5 <= len(words) <= 40:
                found.append(" ".join(words))
    if not found:
        raise SystemExit("no sentences found under docs/")
    return [found[i % len(found)] for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100) of ``values``."""
    return float(np.percentile(np.asarray(values), q))


async def unbatched(embedder: MiniLMEmbedder, texts: list[str]) -> tuple[float, np.ndarray]:
    """Seconds for the requests one by one, and their vectors."""
    out = []
    started = time.perf_counter()
    for text in texts:
        vectors = await embedder.aieng_embed([text], None)
        assert vectors is not None
        out.append(vectors[0])
    return time.perf_counter() - started, np.stack(out)


async def burst(embedder: MiniLMEmbedder, texts: list[str]
                ) -> tuple[float, list[float], np.ndarray]:
    """Seconds for all requests issued at once, each one's latency, the vectors."""
    latencies = [0.0] * len(texts)
    out: list[Any] = [None] * len(texts)

    async def call(index: int) -> None:
        began = time.perf_counter()
        vectors = await embedder.aieng_embed([texts[index]], None)
        latencies[index] = time.perf_counter() - began
        assert vectors is not None
        out[index] = vectors[0]

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index in range(len(texts)):
            tg.start_soon(call, index)
    return time.perf_counter() - started, latencies, np.stack(out)


async def clients(embedder: MiniLMEmbedder, texts: list[str], count: int
                  ) -> tuple[float, list[float]]:
    """Seconds for ``count`` closed-loop clients to get through the requests."""
    latencies: list[float] = []
    queue = iter(range(len(texts)))

    async def client() -> None:
        for index in queue:
            began = time.perf_counter()
            await embedder.aieng_embed([texts[index]], None)
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(client)
    return time.perf_counter() - started, latencies


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """All measurements."""
    texts = sentences(args.requests)
    plain = MiniLMEmbedder(MiniLMOptions())
    batched = MiniLMEmbedder(MiniLMOptions(max_batch=args.max_batch,
                                           max_wait_ms=args.max_wait_ms))
    await plain.aieng_pipeline_open()
    await batched.aieng_pipeline_open()
    single = []
    for text in texts[:50]:
        began = time.perf_counter()
        await plain.aieng_embed([text], None)
        single.append(time.perf_counter() - began)
    single_latency = statistics.median(single)
    rows: dict[str, list[dict[str, float]]] = {"unbatched": [], "burst": [], "clients": []}
    difference = 0.0
    for _ in range(args.repeats):
        seconds, reference = await unbatched(plain, texts)
        rows["unbatched"].append({"seconds": seconds})
        seconds, latencies, vectors = await burst(batched, texts)
        difference = max(difference, float(np.abs(vectors - reference).max()))
        rows["burst"].append({"seconds": seconds, "p50": percentile(latencies, 50),
                              "p99": percentile(latencies, 99)})
        seconds, latencies = await clients(batched, texts, args.clients)
        rows["clients"].append({"seconds": seconds, "p50": percentile(latencies, 50),
                                "p99": percentile(latencies, 99)})
    await batched.aieng_pipeline_close()
    batches = batched.batcher()
    summary: dict[str, Any] = {
        "requests": args.requests, "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms, "clients": args.clients,
        "single_latency_ms": round(1000 * single_latency, 2),
        "max_abs_difference": difference,
        "mean_batch": round(batches.items / max(batches.batches, 1), 1),
    }
    base = statistics.median(r["seconds"] for r in rows["unbatched"])
    for name, runs in rows.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        entry: dict[str, Any] = {"requests_per_s": round(args.requests / seconds, 1),
                                 "throughput_ratio": round(base / seconds, 2),
                                 "runs_s": [round(r["seconds"], 3) for r in runs]}
        if name != "unbatched":
            p99 = statistics.median(r["p99"] for r in runs)
            entry |= {"p50_ms": round(1000 * statistics.median(r["p50"] for r in runs), 1),
                      "p99_ms": round(1000 * p99, 1),
                      "p99_over_single": round(p99 / single_latency, 1)}
        summary[name] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = anyio.run(run, args)
    summary["threads"] = args.threads
    print(json.dumps(summary, indent=2), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
