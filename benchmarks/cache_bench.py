"""Cache benchmarks: exact-hit latency, and the semantic cache against GPTCache.

Measures, in one process on one machine:

1. **Exact cache hits**: p50/p99 µs of ``ExactCache.aieng_cache_lookup`` awaited directly
   (memory level; SQLite level alone), and of a whole pipeline run
   (``cache_lookup → generate → cache_store``) answered from the cache, next to the same
   run answered by a ``ScriptedBackend`` double (no cache stage).
2. **Semantic cache vs GPTCache** on identical, precomputed all-MiniLM-L6-v2 embeddings
   (both are given the same vectors by a dictionary look-up embedder): lookup p50/p99 µs
   with the paraphrase set's first texts stored plus random unit-vector fillers up to
   ``--entries``, and the hit and false-hit rates of both at the same cosine thresholds
   on the shipped paraphrase set (store ``text_a``, look up ``text_b``). GPTCache 0.1.44
   runs with its SQLite scalar store and its faiss ``IDMap,Flat`` (exact L2) vector
   store; its usearch store does not work with usearch 2.x. Its ``SearchDistanceEvaluation``
   with ``max_distance=2`` turns the squared L2 distance of unit vectors (2 - 2 cos) into
   2 cos, so its ``similarity_threshold`` is the same cosine threshold as ours.

Every variant runs ``--lookups`` times per repeat after a warm-up; the median over
``--repeats`` of each repeat's percentile is reported. GPTCache's lookup also commits an
access-time update to its SQLite store (an fsync on a file): it is measured on a file and,
like ours (whose index lives in memory), with its store in ``:memory:``. Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cache_bench.py [--json PATH]
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from _args import positive
from _stats import nearest_rank
from aieng_cache import (
    CacheOptions,
    ExactCache,
    SemanticCache,
    SemanticOptions,
    load_pairs,
)
from aieng_hookspecs.types import Completion, Message, Request

from aieng_core.testing import ScriptedBackend, isolated_kernel

THRESHOLDS = (0.85, 0.91, 0.95)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of samples (ns) in µs, nearest rank (``_stats.nearest_rank``)."""
    return nearest_rank(samples, 50) / 1000.0, nearest_rank(samples, 99) / 1000.0


async def time_calls(call: Callable[[int], Awaitable[Any]], count: int) -> list[float]:
    """Nanoseconds of each of ``count`` awaited calls (after ``count // 10`` warm-up)."""
    for i in range(count // 10):
        await call(i)
    gc.collect()
    gc.disable()
    try:
        samples = []
        for i in range(count):
            start = time.perf_counter_ns()
            await call(i)
            samples.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    return samples


def summarize(runs: list[tuple[float, float]]) -> dict[str, float]:
    """Median p50 and p99 over repeats."""
    return {"p50_us": statistics.median(r[0] for r in runs),
            "p99_us": statistics.median(r[1] for r in runs)}


def ask(text: str) -> Request:
    return Request(messages=(Message("system", "Answer briefly."), Message("user", text)))


# ---------------------------------------------------------------------------- exact


async def bench_exact(lookups: int, repeats: int, folder: Path) -> dict[str, Any]:
    """Exact-hit latency: the lookup coroutine alone, and whole pipeline runs."""
    requests = [ask(f"What is the answer to question number {i}?") for i in range(1000)]
    answer = Completion(text="An answer of a few words, " * 8, model="m")
    memory = ExactCache(CacheOptions())
    sqlite = ExactCache(CacheOptions(memory=False, sqlite=str(folder / "exact.db")))
    for cache in (memory, sqlite):
        for request in requests:
            await cache.aieng_cache_store(request, answer)

    # The SQLite level and whole runs are slower: a quarter of the lookups (one at least).
    quarter = max(lookups // 4, 1)
    results: dict[str, list[tuple[float, float]]] = {
        "lookup_memory": [], "lookup_sqlite": [], "run_cached": [], "run_backend": []}
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        cached = kernel.compose(
            {"cache": ExactCache(CacheOptions()), "llm": ScriptedBackend(["an answer"])},
            name="cached", stages=["cache_lookup", "generate", "cache_store"])
        uncached = kernel.compose({"llm": ScriptedBackend(["an answer"])}, name="plain",
                                  stages=["generate"])
        async with cached, uncached:
            for request in requests:  # every request stored: runs below are hits
                await cached.run(request)
            for _ in range(repeats):
                results["lookup_memory"].append(percentiles(await time_calls(
                    lambda i: memory.aieng_cache_lookup(requests[i % 1000]), lookups)))
                results["lookup_sqlite"].append(percentiles(await time_calls(
                    lambda i: sqlite.aieng_cache_lookup(requests[i % 1000]), quarter)))
                results["run_cached"].append(percentiles(await time_calls(
                    lambda i: cached.run(requests[i % 1000]), quarter)))
                results["run_backend"].append(percentiles(await time_calls(
                    lambda i: uncached.run(requests[i % 1000]), quarter)))
            hit = await cached.run(requests[0])
            assert hit.cache_hit == "cache", "the pipeline benchmark must measure hits"
    await sqlite.aclose()
    return {name: summarize(runs) for name, runs in results.items()}


# ---------------------------------------------------------------------------- semantic


def minilm_vectors(texts: list[str]) -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2 embeddings (unit vectors) of the texts, computed once."""
    from aieng_transformers import MiniLMEmbedder, MiniLMOptions

    embedder = MiniLMEmbedder(MiniLMOptions())
    embedder.load()
    matrix = embedder.encode(texts)
    return {text: matrix[i].astype(np.float32) for i, text in enumerate(texts)}


def gptcache_instance(folder: Path, vectors: dict[str, np.ndarray], threshold: float,
                      max_size: int, *, in_memory: bool = False) -> Any:
    """A GPTCache ``Cache`` on SQLite (a file, or ``:memory:``) + faiss, embedding by
    look-up in ``vectors``."""
    from gptcache import Cache, Config
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    folder.mkdir(parents=True, exist_ok=True)
    url = "sqlite:///:memory:" if in_memory else f"sqlite:///{folder}/gpt.db"
    manager = get_data_manager(CacheBase("sqlite", sql_url=url),
                               VectorBase("faiss", index_path=str(folder / "gpt.faiss"),
                                          dimension=384, top_k=1), max_size=max_size)
    cache = Cache()
    cache.init(pre_embedding_func=get_prompt,
               embedding_func=lambda text, **_: vectors[text],
               data_manager=manager,
               similarity_evaluation=SearchDistanceEvaluation(max_distance=2.0),
               config=Config(similarity_threshold=threshold))
    return cache


def answer_of(text: str) -> str:
    return f"answer to: {text}"


async def bench_semantic(lookups: int, repeats: int, entries: int, folder: Path
                         ) -> dict[str, Any]:
    """Semantic lookup latency and hit / false-hit rates, ours vs GPTCache."""
    from gptcache.adapter.api import get as gpt_get

    pairs = load_pairs()
    texts = sorted({t for p in pairs for t in (p.text_a, p.text_b)})
    vectors = minilm_vectors(texts)
    stored = sorted({p.text_a for p in pairs})
    rng = np.random.default_rng(0)
    fillers = [f"filler prompt {i}" for i in range(max(entries - len(stored), 0))]
    for name in fillers:
        vector = rng.standard_normal(384).astype(np.float32)
        vectors[name] = vector / np.linalg.norm(vector)
    keys = stored + fillers
    queries = [p.text_b for p in pairs if p.text_b not in set(stored)]

    def embed(batch: Any, model: Any) -> list[np.ndarray]:
        return [vectors[t] for t in batch]

    out: dict[str, Any] = {"entries": len(keys), "queries": len(queries), "rates": {}}
    latency: dict[str, list[tuple[float, float]]] = {"aieng": [], "gptcache": [],
                                                     "gptcache_memory": []}
    for threshold in THRESHOLDS:
        ours = SemanticCache(SemanticOptions(threshold=threshold, max_entries=len(keys)),
                             embedder=embed)
        for key in keys:
            await ours.aieng_cache_store(Request(messages=(Message("user", key),)),
                                         Completion(text=answer_of(key)))
        peer = gptcache_instance(folder / f"gpt-{threshold}", vectors, threshold,
                                 max_size=len(keys) + 10)
        peer.data_manager.import_data(keys, [answer_of(k) for k in keys],
                                      [vectors[k] for k in keys], [None] * len(keys))
        rates: dict[str, dict[str, float]] = {}
        for system in ("aieng", "gptcache"):
            right = wrong = positives = negatives = 0
            for pair in pairs:
                if system == "aieng":
                    found = await ours.aieng_cache_lookup(
                        Request(messages=(Message("user", pair.text_b),)))
                    text = None if found is None else found.text
                else:
                    text = gpt_get(pair.text_b, cache_obj=peer)
                same = text == answer_of(pair.text_a)
                if pair.is_paraphrase:
                    positives += 1
                    right += same
                else:
                    negatives += 1
                    wrong += same
            rates[system] = {"hit_rate": right / positives, "false_hit_rate": wrong / negatives}
        out["rates"][str(threshold)] = rates
        if threshold == SemanticOptions().threshold:
            requests = [Request(messages=(Message("user", q),)) for q in queries]
            for _ in range(repeats):

                async def our_lookup(i: int, ours: SemanticCache = ours,
                                     requests: list[Request] = requests) -> Any:
                    return await ours.aieng_cache_lookup(requests[i % len(requests)])

                latency["aieng"].append(percentiles(await time_calls(our_lookup, lookups)))

                async def peer_lookup(i: int, peer: Any = peer) -> Any:
                    return gpt_get(queries[i % len(queries)], cache_obj=peer)

                latency["gptcache"].append(percentiles(await time_calls(peer_lookup,
                                                                        lookups)))
            # The same with GPTCache's scalar store in memory (ours never reads the disk
            # on a lookup): its per-lookup access-time commit then costs no fsync.
            resident = gptcache_instance(folder / "gpt-memory", vectors, threshold,
                                         max_size=len(keys) + 10, in_memory=True)
            resident.data_manager.import_data(keys, [answer_of(k) for k in keys],
                                              [vectors[k] for k in keys], [None] * len(keys))
            for _ in range(repeats):

                async def resident_lookup(i: int, peer: Any = resident) -> Any:
                    return gpt_get(queries[i % len(queries)], cache_obj=peer)

                latency["gptcache_memory"].append(percentiles(await time_calls(
                    resident_lookup, lookups)))
        peer.data_manager.close()
    out["latency"] = {name: summarize(runs) for name, runs in latency.items()}
    for peer_name in ("gptcache", "gptcache_memory"):
        for q in ("p50", "p99"):
            out["latency"][f"ratio_{q}_vs_{peer_name}"] = (
                out["latency"]["aieng"][f"{q}_us"] / out["latency"][peer_name][f"{q}_us"])
    return out


# ---------------------------------------------------------------------------- main


def versions() -> dict[str, str]:
    from importlib import metadata

    names = ["aieng-cache", "gptcache", "faiss-cpu", "numpy", "SQLAlchemy"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    found["python"] = platform.python_version()
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # GPTCache flushes its faiss index from an atexit hook: the folder must outlive it, so
    # it is removed by a hook registered before GPTCache's (atexit runs them last-first).
    folder = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    atexit.register(shutil.rmtree, folder, True)
    report: dict[str, Any] = {"versions": versions(), "cpus": os.cpu_count(),
                              "repeats": args.repeats, "lookups": args.lookups}
    report["exact"] = await bench_exact(args.lookups, args.repeats, folder)
    semantic = {}
    for entries in args.entries:
        semantic[str(entries)] = await bench_semantic(args.semantic_lookups, args.repeats,
                                                      entries, folder / str(entries))
    report["semantic"] = semantic
    return report


def show(report: dict[str, Any]) -> None:
    """Print the report (what the cache section of docs/benchmarks.md shows)."""
    print(f"versions: {report['versions']}, cpus: {report['cpus']}")
    print("\nexact hits (µs, median of repeats)")
    for name, row in report["exact"].items():
        print(f"  {name:<16} p50 {row['p50_us']:9.1f}   p99 {row['p99_us']:9.1f}")
    for sem in report["semantic"].values():
        lat = sem["latency"]
        print(f"\nsemantic lookup, {sem['entries']} entries, {sem['queries']} distinct queries")
        for name in ("aieng", "gptcache", "gptcache_memory"):
            print(f"  {name:<16} p50 {lat[name]['p50_us']:9.1f}   p99 {lat[name]['p99_us']:9.1f}")
        for peer_name in ("gptcache", "gptcache_memory"):
            print(f"  ratio aieng/{peer_name}: p50 {lat[f'ratio_p50_vs_{peer_name}']:.3f}"
                  f"  p99 {lat[f'ratio_p99_vs_{peer_name}']:.3f}")
        print("  threshold   aieng hit / false-hit    gptcache hit / false-hit")
        for threshold, rates in sem["rates"].items():
            a, g = rates["aieng"], rates["gptcache"]
            print(f"  {threshold:<9}   {a['hit_rate']:.3f} / {a['false_hit_rate']:.3f}"
                  f"            {g['hit_rate']:.3f} / {g['false_hit_rate']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=positive, default=20_000)
    parser.add_argument("--semantic-lookups", type=positive, default=1000,
                        help="lookups per repeat of each semantic variant (GPTCache on a "
                             "file takes milliseconds each)")
    parser.add_argument("--repeats", type=positive, default=5)
    parser.add_argument("--entries", type=positive, nargs="+", default=[1000, 10000])
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    from _peers import require

    require("gptcache", "faiss", "sqlalchemy")
    if os.environ.get("OMP_NUM_THREADS") != "1":
        sys.exit("run with OMP_NUM_THREADS=1 (torch and faiss threads skew a shared box)")
    from aieng_core.logs import configure_logging

    configure_logging(level="ERROR", stream=sys.stderr)  # stdout carries the report
    report = anyio.run(run, args)
    show(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
