"""Benchmark: ``aieng eval``'s runner, items/s at concurrency 8 against sequential.

The pipeline is a scripted backend double that awaits ``anyio.sleep(delay)`` per generate
(standing in for a model server's latency) and an exact-match judge. Each configuration
runs the whole dataset into a fresh run directory (results appended and fsynced, lockfile
and reports written, as a real run does); the median of the repeats is reported, after
one untimed warm-up run.

    .venv/bin/python benchmarks/eval_runner.py            # 200 items, 50 ms, 3 repeats
    .venv/bin/python benchmarks/eval_runner.py --json

Goal: concurrency 8 is at least 6x the sequential throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _args import nonnegative_float, positive
from aieng_eval import run_eval
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Sample, Score

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

PIPELINE = """
[pipeline]
name = "bench"

[components.llm]
use = "bench-sleepy"

[components.em]
use = "bench-exact"
"""


class _Exact:
    """Exact match against the reference."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score]:
        return [Score(name="exact_match", value=float(sample.output == sample.reference))]


class _BenchPlugin:
    """Registers the benchmark's backend double (with the chosen delay) and judge."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        delay = self.delay
        registry.add("bench-sleepy", lambda: ScriptedBackend(lambda r: r.prompt, delay=delay),
                     description="echo after anyio.sleep(delay)")
        registry.add("bench-exact", _Exact)


def _kernel(delay: float) -> Kernel:
    kernel = Kernel(entry_points=[], default_embedder=None)
    kernel.load()
    kernel.registry.register(_BenchPlugin(delay), name="bench")
    return kernel


def _once(folder: Path, concurrency: int, delay: float, repeat: int) -> float:
    out = folder / f"run-c{concurrency}-{repeat}"

    async def go() -> float:
        started = time.perf_counter()
        run = await run_eval(folder / "bench.toml", folder / "ds.jsonl", out=out,
                             concurrency=concurrency, kernel=_kernel(delay),
                             hash_cache=folder / "hashes.json")
        elapsed = time.perf_counter() - started
        assert run.ran == len(run.results) and not run.failed
        return elapsed

    return anyio.run(go)


def main() -> None:
    """Run the benchmark and print items/s per concurrency and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=positive, default=200)
    parser.add_argument("--delay", type=nonnegative_float, default=0.05,
                        help="seconds per generate")
    parser.add_argument("--concurrency", type=positive, default=8)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench.toml").write_text(PIPELINE, encoding="utf-8")
        (folder / "ds.jsonl").write_text("".join(
            json.dumps({"id": f"q{i}", "input": f"question {i}", "reference": f"question {i}"})
            + "\n" for i in range(args.items)), encoding="utf-8")
        result: dict[str, Any] = {"items": args.items, "delay_s": args.delay,
                                  "repeats": args.repeats}
        # Untimed warm-up (no delay): the process's first run pays one-off costs (lazy
        # imports, the hash cache) that would otherwise land on the first sequential sample.
        _once(folder, args.concurrency, 0.0, -1)
        for label, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
            times = [_once(folder, concurrency, args.delay, r) for r in range(args.repeats)]
            median = statistics.median(times)
            result[label] = {"concurrency": concurrency, "seconds": times,
                             "median_s": median, "items_per_s": args.items / median}
        result["ratio"] = result["concurrent"]["items_per_s"] / result["sequential"]["items_per_s"]
        result["ideal_ratio"] = float(args.concurrency)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for label in ("sequential", "concurrent"):
        r = result[label]
        print(f"{label:>10} (concurrency {r['concurrency']}): {r['items_per_s']:8.1f} items/s "
              f"(median {r['median_s']:.2f} s of {args.repeats})")
    print(f"ratio concurrent / sequential: {result['ratio']:.2f}x "
          f"(ideal {args.concurrency}x; goal >= 6x)")


if __name__ == "__main__":
    main()
