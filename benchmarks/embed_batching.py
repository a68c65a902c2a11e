"""all-MiniLM-L6-v2 through ``aieng_embed``: dynamic batching vs unbatched calls.

Single-sentence ``aieng_embed`` requests (sentences of this repository's docs), 1 thread,
to a ``minilm`` without batching (``max_batch = 1``: one forward pass per request) and to
one with batching (``max_batch`` 256, ``max_wait_ms`` 0, ``batch_size`` 64 texts per
packed pass):

- **unbatched**: 1,000 requests one after another to the unbatched component;
- **batched, burst**: the 1,000 issued at once to the batched one: its saturation
  throughput (the last caller waits for the whole burst: its latency is the burst's);
- **batched, 32 clients**: 32 closed-loop clients (each sends its next request when the
  previous one returns) until the 1,000 are done;
- **open loop**: requests arrive as a Poisson process (seeded; the same arrival times
  for both components) at offered rates that are multiples (``--rates``) of the
  unbatched component's *capacity*, measured before the repeats as requests per
  CPU-second of ``--calibrate`` sequential calls (what it serves with a core to itself;
  wall time on a shared machine would move the rates with the other jobs). Latency runs
  from a request's *scheduled* arrival to its vectors (a late start counts); achieved
  throughput is requests over first arrival to last answer; a component *keeps up* when
  that is at least 95% of the realized arrival rate.

Reported per row: requests/s and the ratio to unbatched, requests per CPU-second of the
process (``time.process_time``, all threads: steadier than wall time on a shared machine)
and its ratio, the process's CPU share (CPU over wall seconds), latency p50/p99, p99 over a
single request's latency (the median of 50 lone calls to the unbatched component,
measured at the start of each repeat in the same process, so each repeat's p99 is divided
by its own), the mean batch. Medians of ``--repeats``; the modes are interleaved in each
repeat. The burst's vectors are checked against the unbatched ones (max |difference|).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/embed_batching.py --repeats 3 --json out.json

``--dtype bfloat16`` runs both components in bfloat16 (the ``minilm`` option).
``--component minilm-onnx`` measures the ONNX Runtime embedder (contrib/onnx, CPU
provider, ``intra_op_threads`` = ``--threads``) instead, in ``--precision`` fp32 or int8,
with the same ``max_batch`` / ``max_wait_ms`` / ``batch_size`` (its least-padding cuts
instead of packed passes). ``--profile`` splits the torch component only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Self

import anyio
import numpy as np
import torch
from _args import nonnegative_float, positive, positive_float
from _stats import nearest_rank
from aieng_transformers import MiniLMEmbedder, MiniLMOptions

#: Either embedder: both take ``max_batch`` and expose ``batcher()``.
Embedder = Any

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
    """The ``q`` percentile (0-100) of ``values``: nearest rank, as every script's
    (``_stats.nearest_rank``; it was numpy's linear interpolation between two samples)."""
    return float(nearest_rank(values, q))


class Clock:
    """Wall and CPU seconds (``time.process_time``: the process, all threads) of a run."""

    def __enter__(self) -> Self:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


async def unbatched(embedder: Embedder, texts: list[str]) -> tuple[Clock, np.ndarray]:
    """The requests one by one, and their vectors."""
    out = []
    with Clock() as clock:
        for text in texts:
            vectors = await embedder.aieng_embed([text], None)
            assert vectors is not None
            out.append(vectors[0])
    return clock, np.stack(out)


async def burst(embedder: Embedder, texts: list[str]) -> tuple[Clock, list[float], np.ndarray]:
    """All requests issued at once: the run, each one's latency, the vectors."""
    latencies = [0.0] * len(texts)
    out: list[Any] = [None] * len(texts)

    async def call(index: int) -> None:
        began = time.perf_counter()
        vectors = await embedder.aieng_embed([texts[index]], None)
        latencies[index] = time.perf_counter() - began
        assert vectors is not None
        out[index] = vectors[0]

    with Clock() as clock:
        async with anyio.create_task_group() as tg:
            for index in range(len(texts)):
                tg.start_soon(call, index)
    return clock, latencies, np.stack(out)


async def clients(embedder: Embedder, texts: list[str], count: int) -> tuple[Clock, list[float]]:
    """``count`` closed-loop clients getting through the requests."""
    latencies: list[float] = []
    queue = iter(range(len(texts)))

    async def client() -> None:
        for index in queue:
            began = time.perf_counter()
            await embedder.aieng_embed([texts[index]], None)
            latencies.append(time.perf_counter() - began)

    with Clock() as clock:
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(client)
    return clock, latencies


def arrivals(count: int, rate: float, seed: int) -> list[float]:
    """Poisson arrival offsets (seconds) of ``count`` requests at ``rate`` per second."""
    rng = random.Random(seed)
    at, out = 0.0, []
    for _ in range(count):
        out.append(at)
        at += rng.expovariate(rate)
    return out


async def open_loop(
    embedder: Embedder, texts: list[str], offsets: list[float]
) -> tuple[Clock, float, list[float]]:
    """Requests sent at ``offsets``: the run, the seconds from the first arrival to the
    last answer, each latency from its scheduled arrival."""
    latencies = [0.0] * len(offsets)
    done = [0.0] * len(offsets)

    async def call(index: int, due: float) -> None:
        await embedder.aieng_embed([texts[index % len(texts)]], None)
        done[index] = time.perf_counter()
        latencies[index] = done[index] - due

    with Clock() as clock:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index, offset in enumerate(offsets):
                due = start + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                tg.start_soon(call, index, due)
    return clock, max(done) - start, latencies


async def lone(plain: Embedder, batched: Embedder, texts: list[str]) -> tuple[float, float]:
    """Median latency of lone calls (nothing else running) to each component, alternated."""
    times: dict[str, list[float]] = {"plain": [], "batched": []}
    for text in texts:
        for name, embedder in (("plain", plain), ("batched", batched)):
            began = time.perf_counter()
            await embedder.aieng_embed([text], None)
            times[name].append(time.perf_counter() - began)
    return statistics.median(times["plain"]), statistics.median(times["batched"])


async def lone_spaced(plain: Embedder, texts: list[str]) -> float:
    """Median latency of lone calls to the unbatched component 50 ms apart (an idle
    server's request: on this shared machine such a call runs markedly slower than one
    right after another, its weights and caches gone cold)."""
    times = []
    for text in texts:
        await anyio.sleep(0.05)
        began = time.perf_counter()
        await plain.aieng_embed([text], None)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def make(args: argparse.Namespace, *, batched: bool) -> Embedder:
    """The unbatched or the batched component ``--component`` names."""
    batching: dict[str, Any] = (
        {
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "batch_size": args.batch_size,
        }
        if batched
        else {}
    )
    if args.component == "minilm":
        return MiniLMEmbedder(MiniLMOptions(dtype=args.dtype, **batching))
    from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions

    return MiniLMOnnxEmbedder(
        MiniLMOnnxOptions(
            precision=args.precision,
            providers=("cpu",),
            intra_op_threads=args.threads,
            **batching,
        )
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """All measurements."""
    texts = sentences(args.requests)
    plain, batched = make(args, batched=False), make(args, batched=True)
    await plain.aieng_pipeline_open()
    await batched.aieng_pipeline_open()
    await lone(plain, batched, texts[:20])  # warm-up
    calibration, _ = await unbatched(plain, texts[: args.calibrate])
    # Capacity from CPU time: what the unbatched component serves with one core to itself
    # (wall time on a shared machine would move the offered rates with the other jobs).
    capacity = args.calibrate / calibration.cpu
    rates = [factor * capacity for factor in args.rates]
    rows: dict[str, list[dict[str, float]]] = {"unbatched": [], "burst": [], "clients": []}
    loops: dict[str, list[dict[str, float]]] = {}
    singles: list[tuple[float, float, float]] = []
    difference = 0.0
    for repeat in range(args.repeats):
        # "single": lone calls measured in each repeat, so that each repeat's p99 is
        # divided by a single request's latency under that repeat's machine load.
        single, single_batched = await lone(plain, batched, texts[50 * repeat : 50 * repeat + 50])
        spaced = await lone_spaced(plain, texts[50 * repeat : 50 * repeat + 20])
        singles.append((single, single_batched, spaced))
        clock, reference = await unbatched(plain, texts)
        rows["unbatched"].append(
            {"seconds": clock.wall, "cpu": clock.cpu, "requests": len(texts), "single": single}
        )
        before = counted(batched)
        clock, latencies, vectors = await burst(batched, texts)
        after = counted(batched)
        difference = max(difference, float(np.abs(vectors - reference).max()))
        rows["burst"].append(latency_row(clock, latencies, single, before, after))
        before = after
        clock, latencies = await clients(batched, texts, args.clients)
        rows["clients"].append(latency_row(clock, latencies, single, before, counted(batched)))
        for factor, rate in zip(args.rates, rates, strict=True):
            offsets = arrivals(args.open_requests, rate, seed=1000 * repeat + int(100 * factor))
            for name, embedder in (("unbatched", plain), ("batched", batched)):
                before = counted(embedder) if embedder is batched else (0, 0)
                clock, span, latencies = await open_loop(embedder, texts, offsets)
                after = counted(embedder) if embedder is batched else (1, 1)
                row = latency_row(clock, latencies, single, before, after)
                row["seconds"] = span
                row["arrival_rps"] = (len(offsets) - 1) / offsets[-1]
                loops.setdefault(f"{factor}|{name}", []).append(row)
    await batched.aieng_pipeline_close()
    await plain.aieng_pipeline_close()
    summary = summarize(args, rows, loops, capacity, difference)
    summary["single_latency_ms"] = round(1000 * statistics.median(s[0] for s in singles), 2)
    summary["single_latency_batched_ms"] = round(1000 * statistics.median(s[1] for s in singles), 2)
    summary["single_latency_spaced_ms"] = round(1000 * statistics.median(s[2] for s in singles), 2)
    summary["single_latency_runs_ms"] = [round(1000 * s[0], 2) for s in singles]
    return summary


def counted(embedder: Embedder) -> tuple[int, int]:
    """The batcher's (batches, items) so far."""
    batcher = embedder.batcher()
    return batcher.batches, batcher.items


def latency_row(
    clock: Clock,
    latencies: list[float],
    single: float,
    before: tuple[int, int],
    after: tuple[int, int],
) -> dict[str, float]:
    """One run's figures; ``before`` / ``after``: the batcher's counts around it."""
    return {
        "seconds": clock.wall,
        "cpu": clock.cpu,
        "requests": len(latencies),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "single": single,
        "mean_batch": (after[1] - before[1]) / max(after[0] - before[0], 1),
    }


def summarize(
    args: argparse.Namespace,
    rows: dict[str, list[dict[str, float]]],
    loops: dict[str, list[dict[str, float]]],
    capacity: float,
    difference: float,
) -> dict[str, Any]:
    """Medians over the repeats, ratios to unbatched."""

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def latency(runs: list[dict[str, float]]) -> dict[str, float]:
        return {
            "p50_ms": round(1000 * med(runs, "p50"), 1),
            "p99_ms": round(1000 * med(runs, "p99"), 1),
            "p99_over_single": round(statistics.median(r["p99"] / r["single"] for r in runs), 2),
            "mean_batch": round(med(runs, "mean_batch"), 1),
        }

    summary: dict[str, Any] = {
        "requests": args.requests,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "batch_size": args.batch_size,
        "component": args.component,
        "dtype": args.dtype if args.component == "minilm" else args.precision,
        "clients": args.clients,
        "repeats": args.repeats,
        "open_requests": args.open_requests,
        "capacity_per_cpu_s": round(capacity, 1),
        "max_abs_difference": difference,
    }
    base_rps = statistics.median(r["requests"] / r["seconds"] for r in rows["unbatched"])
    base_cpu = statistics.median(r["requests"] / r["cpu"] for r in rows["unbatched"])
    for name, runs in rows.items():
        rps = statistics.median(r["requests"] / r["seconds"] for r in runs)
        per_cpu = statistics.median(r["requests"] / r["cpu"] for r in runs)
        entry: dict[str, Any] = {
            "requests_per_s": round(rps, 1),
            "throughput_ratio": round(rps / base_rps, 2),
            "requests_per_cpu_s": round(per_cpu, 1),
            "cpu_ratio": round(per_cpu / base_cpu, 2),
            "cpu_share": round(statistics.median(r["cpu"] / r["seconds"] for r in runs), 2),
            "runs_s": [round(r["seconds"], 3) for r in runs],
            "runs_cpu_s": [round(r["cpu"], 3) for r in runs],
        }
        if name != "unbatched":
            # Within each repeat (modes back to back): steadier than a ratio of medians.
            paired = [u["seconds"] / r["seconds"] for u, r in zip(rows["unbatched"], runs)]
            entry |= {
                "paired_throughput_ratios": [round(x, 2) for x in paired],
                "paired_cpu_ratios": [
                    round(u["cpu"] / r["cpu"], 2) for u, r in zip(rows["unbatched"], runs)
                ],
                **latency(runs),
            }
        summary[name] = entry
    open_rows: list[dict[str, Any]] = []
    for key, runs in loops.items():
        factor, name = key.split("|")
        # Keeping up: answers came as fast as the (realized) arrivals, within 5%.
        kept = statistics.median(r["requests"] / r["seconds"] / r["arrival_rps"] for r in runs)
        open_rows.append(
            {
                "offered_x_capacity": float(factor),
                "component": name,
                "offered_rps": round(float(factor) * capacity, 1),
                "achieved_rps": round(
                    statistics.median(r["requests"] / r["seconds"] for r in runs), 1
                ),
                "keeps_up": kept >= 0.95,
                "requests_per_cpu_s": round(
                    statistics.median(r["requests"] / r["cpu"] for r in runs), 1
                ),
                "cpu_share": round(statistics.median(r["cpu"] / r["seconds"] for r in runs), 2),
                **latency(runs),
                "runs_p99_over_single": [round(r["p99"] / r["single"], 2) for r in runs],
            }
        )
    summary["open_loop"] = open_rows
    within = [
        r["offered_x_capacity"]
        for r in open_rows
        if r["component"] == "batched" and r["p99_over_single"] <= 3.0 and r["keeps_up"]
    ]
    summary["goal"] = {
        "saturation_throughput_ratio": summary["burst"]["throughput_ratio"],
        "saturation_cpu_ratio": summary["burst"]["cpu_ratio"],
        "highest_offered_x_capacity_with_batched_p99_le_3x_single": max(within, default=None),
    }
    return summary


async def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Where a burst's CPU goes: the event loop's thread, the batcher's tokenizing and
    forward passes, against the same 1,000 texts encoded directly (no batcher, no event
    loop) in passes of ``batch_size`` and one by one."""
    texts = sentences(args.requests)
    batched = MiniLMEmbedder(
        MiniLMOptions(
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            batch_size=args.batch_size,
            dtype=args.dtype,
        )
    )
    await batched.aieng_pipeline_open()
    encoder = batched.load()
    spent = {"tokenize": 0.0, "forward": 0.0}
    tokenize, encode_ids = encoder.tokenize, encoder.encode_ids

    def timed(name: str, function: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            began = time.thread_time()
            try:
                return function(*a, **k)
            finally:
                spent[name] += time.thread_time() - began

        return call

    encoder.tokenize = timed("tokenize", tokenize)
    encoder.encode_ids = timed("forward", encode_ids)
    await burst(batched, texts[:100])  # warm-up
    out: dict[str, Any] = {"runs": []}
    for _ in range(args.repeats):
        spent.update(tokenize=0.0, forward=0.0)
        loop_began = time.thread_time()
        clock, _, _ = await burst(batched, texts)
        loop = time.thread_time() - loop_began
        batcher_spent = dict(spent)
        with Clock() as direct:
            encoder.encode(texts)
        with Clock() as alone:
            for text in texts[:200]:
                encoder.encode([text])
        out["runs"].append(
            {
                "burst_cpu_s": round(clock.cpu, 3),
                "event_loop_thread_cpu_s": round(loop, 3),
                "batcher_tokenize_cpu_s": round(batcher_spent["tokenize"], 3),
                "batcher_forward_cpu_s": round(batcher_spent["forward"], 3),
                "direct_passes_cpu_s": round(direct.cpu, 3),
                "direct_one_by_one_cpu_s_per_1000": round(alone.cpu * 1000 / 200, 3),
            }
        )
    await batched.aieng_pipeline_close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=positive, default=1000)
    parser.add_argument("--max-batch", type=positive, default=256)
    parser.add_argument("--max-wait-ms", type=nonnegative_float, default=0.0)
    parser.add_argument(
        "--batch-size",
        type=positive,
        default=64,
        help="texts per forward pass of the batched component",
    )
    parser.add_argument("--clients", type=positive, default=32)
    parser.add_argument(
        "--rates",
        type=positive_float,
        nargs="*",
        default=[0.25, 0.5, 0.8, 1.5, 2.0],
        help="open-loop offered rates, multiples of the unbatched capacity",
    )
    parser.add_argument("--open-requests", type=positive, default=300)
    parser.add_argument(
        "--calibrate",
        type=positive,
        default=200,
        help="sequential unbatched requests that measure the capacity",
    )
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--threads", type=positive, default=1)
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="both components' torch dtype (bfloat16: AMX on recent Intel CPUs)",
    )
    parser.add_argument(
        "--component",
        choices=["minilm", "minilm-onnx"],
        default="minilm",
        help="the torch embedder (aieng-transformers) or ONNX Runtime's (aieng-onnx)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="minilm-onnx's precision (with --component minilm-onnx)",
    )
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument(
        "--profile", action="store_true", help="only split a burst's CPU time (see profile())"
    )
    args = parser.parse_args(argv)
    from aieng_core.logs import configure_logging

    # As the CLI does: warnings and up, on stderr (not model-load info lines in stdout).
    configure_logging(level="WARNING", stream=sys.stderr)
    if args.profile and args.component != "minilm":
        parser.error("--profile splits the torch component's passes: --component minilm")
    if args.component == "minilm" and args.precision != "fp32":
        parser.error("--precision is minilm-onnx's option; minilm takes --dtype")
    if args.component != "minilm" and args.dtype != "float32":
        parser.error("--dtype is minilm's option; minilm-onnx takes --precision")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = anyio.run(profile if args.profile else run, args)
    summary["threads"] = args.threads
    summary["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    summary["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
