"""Kernel overhead (issue 2): what aieng adds around components that do nothing.

Measures, in one process on one machine:

* µs per run of a 3-stage pipeline (retrieve → rerank → generate) of no-op components,
  with sync impls and with async impls, against langchain-core (a ``RunnableSequence`` of
  three ``RunnableLambda``) and haystack-ai (a ``Pipeline`` of three ``@component``);
* µs per hook call of ``Dispatcher.first`` on one sync and on one async impl, against a raw
  pluggy hook call on a sync impl;
* events delivered to and dropped by a callback subscriber attached during the hot loop;
* wall time of ``aieng --help`` and ``aieng plugins`` (hyperfine when installed).

Every variant runs ``--runs`` times per repeat after a warm-up, repeats are interleaved
(a different variant order each repeat) so that drift on a shared machine hits all
variants alike, and the median over repeats is reported. Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overhead.py [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# Peers must not phone home or trace during a benchmark (haystack enables telemetry at
# import time unless told otherwise; LangSmith tracing is off unless these are set).
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ["LANGCHAIN_TRACING_V2"] = "false"
os.environ["LANGSMITH_TRACING"] = "false"

import anyio
import pluggy
from _args import positive
from aieng_hookspecs import PROJECT, hookimpl
from aieng_hookspecs.specs import backend as backend_specs
from aieng_hookspecs.types import (
    Completion,
    Document,
    Event,
    Hit,
    Message,
    Request,
)

from aieng_core import Dispatcher, Kernel, StagePolicy
from aieng_core.logs import configure_logging

QUESTION = "What is reciprocal rank fusion?"
HITS = [Hit(document=Document(id="d1", text="RRF sums 1/(k + rank)."), score=1.0)]
COMPLETION = Completion(text="It sums reciprocal ranks.")
REQUEST = Request(messages=(Message("user", QUESTION),))
STAGES = ["retrieve", "rerank", "generate"]

Timer = Callable[[int], float]  # runs n iterations, returns seconds
AsyncTimer = Callable[[int], Awaitable[float]]


# -- no-op components ---------------------------------------------------------------------


class SyncRetriever:
    @hookimpl
    def aieng_retrieve(self, query: Any, k: int) -> list[Hit]:
        return HITS


class SyncReranker:
    @hookimpl
    def aieng_rerank(self, query: Any, hits: Any, k: int) -> Any:
        return hits


class SyncBackend:
    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        return COMPLETION


class AsyncRetriever:
    @hookimpl
    async def aieng_retrieve(self, query: Any, k: int) -> list[Hit]:
        return HITS


class AsyncReranker:
    @hookimpl
    async def aieng_rerank(self, query: Any, hits: Any, k: int) -> Any:
        return hits


class AsyncBackend:
    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        return COMPLETION


def _components(kind: str) -> dict[str, object]:
    if kind == "sync":
        return {"retriever": SyncRetriever(), "reranker": SyncReranker(), "llm": SyncBackend()}
    return {"retriever": AsyncRetriever(), "reranker": AsyncReranker(), "llm": AsyncBackend()}


# -- aieng --------------------------------------------------------------------------------


def aieng_pipeline(kind: str, *, timeout: float | None = 30.0,
                   subscriber: dict[str, Any] | None = None) -> AsyncTimer:
    """A timer of ``pipeline.run`` on the default kernel (watchdog on, 30 s stage timeouts).

    With ``subscriber``, a sync callback subscribed to every event counts deliveries, and
    the backlog (published minus delivered) is sampled after every run.
    """

    async def timed(n: int) -> float:
        async with Kernel() as kernel:
            pipeline = kernel.compose(_components(kind), name=f"noop-{kind}", stages=STAGES,
                                      timeout=timeout)
            assert all(pipeline.config.policy(s).timeout == timeout for s in STAGES)
            got = [0]

            def count(event: Event) -> None:
                got[0] += 1

            if subscriber is not None:
                kernel.bus.add_callback(count, name="bench-counter")
            first = await pipeline.run(QUESTION)
            assert first.completion == COMPLETION and first.hits == tuple(HITS), first
            per_run = len(first.events)  # a listener adds stage.started events
            for _ in range(max(n // 10, 50)):  # warm-up
                await pipeline.run(QUESTION)
            await anyio.sleep(0.01)  # let the subscriber catch up before counting
            base = got[0]
            backlog = 0
            run = pipeline.run
            start = time.perf_counter()
            if subscriber is None:
                for _ in range(n):
                    await run(QUESTION)
            else:
                for i in range(1, n + 1):
                    await run(QUESTION)
                    backlog = max(backlog, i * per_run - (got[0] - base))
            elapsed = time.perf_counter() - start
            if subscriber is not None:
                stats = {s.name: s for s in kernel.bus.stats()}["bench-counter"]
                subscriber.setdefault("repeats", []).append({
                    "runs": n, "events_per_run": per_run, "published": n * per_run,
                    "delivered_during_loop": got[0] - base, "dropped": stats.dropped,
                    "failed": stats.failed, "max_backlog": backlog, "buffer": 4096})
        if subscriber is not None:  # the kernel has drained the queue on exit
            subscriber["repeats"][-1]["delivered_after_drain"] = got[0] - base
        return elapsed

    return timed


def dispatcher_call(kind: str, *, timeout: float | None = 30.0) -> AsyncTimer:
    """A timer of ``Dispatcher.first`` on one impl of ``aieng_generate``."""

    async def timed(n: int) -> float:
        pm = _backend_pm(SyncBackend() if kind == "sync" else AsyncBackend())
        dispatcher = Dispatcher(pm, emit=lambda event: None)
        policy = StagePolicy(timeout=timeout)
        kwargs = {"request": REQUEST}
        first = dispatcher.first
        assert (await first("aieng_generate", kwargs, policy=policy)) == (COMPLETION, "llm")
        for _ in range(max(n // 10, 50)):
            await first("aieng_generate", kwargs, policy=policy)
        start = time.perf_counter()
        for _ in range(n):
            await first("aieng_generate", kwargs, stage="generate", policy=policy)
        return time.perf_counter() - start

    return timed


async def _awaited_directly(n: int) -> float:
    """The floor for any async dispatch: awaiting the impl's coroutine by hand."""
    impl = AsyncBackend().aieng_generate
    for _ in range(max(n // 10, 50)):
        await impl(REQUEST)
    start = time.perf_counter()
    for _ in range(n):
        await impl(REQUEST)
    return time.perf_counter() - start


def _backend_pm(component: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(backend_specs)
    pm.register(component, name="llm")
    return pm


def pluggy_call(n: int) -> float:
    """A raw pluggy hook call on one sync impl (what the dispatcher is compared against)."""
    hook = _backend_pm(SyncBackend()).hook.aieng_generate
    assert hook(request=REQUEST) == [COMPLETION]
    for _ in range(max(n // 10, 50)):
        hook(request=REQUEST)
    start = time.perf_counter()
    for _ in range(n):
        hook(request=REQUEST)
    return time.perf_counter() - start


# -- peers --------------------------------------------------------------------------------


def _lc_sequence(native_async: bool) -> Any:
    from langchain_core.runnables import RunnableLambda

    def retrieve(query: str) -> list[Hit]:
        return HITS

    def rerank(hits: list[Hit]) -> list[Hit]:
        return hits

    def generate(hits: list[Hit]) -> Completion:
        return COMPLETION

    async def aretrieve(query: str) -> list[Hit]:
        return HITS

    async def arerank(hits: list[Hit]) -> list[Hit]:
        return hits

    async def agenerate(hits: list[Hit]) -> Completion:
        return COMPLETION

    if native_async:
        return (RunnableLambda(retrieve, afunc=aretrieve) | RunnableLambda(rerank, afunc=arerank)
                | RunnableLambda(generate, afunc=agenerate))
    return RunnableLambda(retrieve) | RunnableLambda(rerank) | RunnableLambda(generate)


def langchain_invoke(n: int) -> float:
    invoke = _lc_sequence(native_async=False).invoke
    assert invoke(QUESTION) == COMPLETION
    for _ in range(max(n // 10, 50)):
        invoke(QUESTION)
    start = time.perf_counter()
    for _ in range(n):
        invoke(QUESTION)
    return time.perf_counter() - start


def langchain_ainvoke(native_async: bool) -> AsyncTimer:
    """``ainvoke``; without native async lambdas LangChain runs each one in a thread."""

    async def timed(n: int) -> float:
        ainvoke = _lc_sequence(native_async).ainvoke
        assert (await ainvoke(QUESTION)) == COMPLETION
        for _ in range(max(n // 10, 50)):
            await ainvoke(QUESTION)
        start = time.perf_counter()
        for _ in range(n):
            await ainvoke(QUESTION)
        return time.perf_counter() - start

    return timed


def _haystack_pipeline() -> Any:
    from haystack import Pipeline, component

    @component
    class Retrieve:
        @component.output_types(hits=list)
        def run(self, query: str) -> dict[str, Any]:
            return {"hits": HITS}

        @component.output_types(hits=list)
        async def run_async(self, query: str) -> dict[str, Any]:
            return {"hits": HITS}

    @component
    class Rerank:
        @component.output_types(hits=list)
        def run(self, hits: list) -> dict[str, Any]:  # type: ignore[type-arg]
            return {"hits": hits}

        @component.output_types(hits=list)
        async def run_async(self, hits: list) -> dict[str, Any]:  # type: ignore[type-arg]
            return {"hits": hits}

    @component
    class Generate:
        @component.output_types(completion=Completion)
        def run(self, hits: list) -> dict[str, Any]:  # type: ignore[type-arg]
            return {"completion": COMPLETION}

        @component.output_types(completion=Completion)
        async def run_async(self, hits: list) -> dict[str, Any]:  # type: ignore[type-arg]
            return {"completion": COMPLETION}

    pipe = Pipeline()
    pipe.add_component("retrieve", Retrieve())
    pipe.add_component("rerank", Rerank())
    pipe.add_component("generate", Generate())
    pipe.connect("retrieve.hits", "rerank.hits")
    pipe.connect("rerank.hits", "generate.hits")
    return pipe


HAYSTACK_INPUT = {"retrieve": {"query": QUESTION}}


def haystack_run(n: int) -> float:
    run = _haystack_pipeline().run
    assert run(HAYSTACK_INPUT) == {"generate": {"completion": COMPLETION}}
    for _ in range(max(n // 10, 50)):
        run(HAYSTACK_INPUT)
    start = time.perf_counter()
    for _ in range(n):
        run(HAYSTACK_INPUT)
    return time.perf_counter() - start


async def haystack_run_async(n: int) -> float:
    run = _haystack_pipeline().run_async
    assert (await run(HAYSTACK_INPUT)) == {"generate": {"completion": COMPLETION}}
    for _ in range(max(n // 10, 50)):
        await run(HAYSTACK_INPUT)
    start = time.perf_counter()
    for _ in range(n):
        await run(HAYSTACK_INPUT)
    return time.perf_counter() - start


# -- the harness --------------------------------------------------------------------------


def _sync(timer: AsyncTimer) -> Timer:
    """Each repeat of an async variant gets a fresh event loop (asyncio, anyio's default)."""
    return lambda n: anyio.run(timer, n)


def _measure(variants: dict[str, tuple[Timer, int]], repeats: int) -> dict[str, list[float]]:
    """µs per iteration of each variant, one sample per repeat, interleaved by rotation."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            timer, n = variants[name]
            gc.collect()
            samples[name].append(timer(n) / n * 1e6)
            print(f"  repeat {r + 1}/{repeats} {name}: {samples[name][-1]:.2f} µs",
                  file=sys.stderr)
    return samples


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median_us": statistics.median(values), "min_us": min(values),
            "max_us": max(values), "samples_us": [round(v, 3) for v in values]}


def _cli_times(runs: int) -> dict[str, Any]:
    """Wall time of CLI commands: hyperfine when installed, else a subprocess loop."""
    exe = Path(sys.executable)
    aieng = exe.parent / "aieng"
    commands = {"python -c pass": [str(exe), "-c", "pass"],
                "python -c 'import aieng_core'": [str(exe), "-c", "import aieng_core"],
                "aieng --help": [str(aieng), "--help"],
                "aieng plugins": [str(aieng), "plugins"]}
    # As after a normal install: bytecode cached (the warm-up runs write it when missing).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    hyperfine = shutil.which("hyperfine")
    out: dict[str, Any] = {"tool": "hyperfine" if hyperfine else "subprocess loop"}
    for label, argv in commands.items():
        if hyperfine:
            with tempfile.TemporaryDirectory() as tmp:
                export = Path(tmp) / "h.json"
                subprocess.run([hyperfine, "--warmup", "2", "--runs", str(runs), "-N",
                                "--export-json", str(export), shlex.join(argv)], env=env,
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times = json.loads(export.read_text())["results"][0]["times"]
        else:
            for _ in range(2):
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
                times.append(time.perf_counter() - t0)
        out[label] = {"median_ms": statistics.median(times) * 1e3,
                      "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
                      "runs": len(times)}
    return out


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "loadavg_start": os.getloadavg()}


def _revision() -> str:
    """The commit measured, with ``+dirty`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("aieng", "aieng-hookspecs", "pluggy", "anyio", "attrs", "structlog",
                 "langchain-core", "haystack-ai"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=positive, default=2000, help="pipeline runs per repeat")
    parser.add_argument("--calls", type=positive, default=20000, help="hook calls per repeat")
    parser.add_argument("--repeats", type=positive, default=7)
    parser.add_argument("--cli-runs", type=positive, default=10)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    from _peers import require

    require("langchain_core", "haystack")
    # As the CLI does: warnings and up. Unconfigured structlog prints every debug line.
    configure_logging(level="WARNING", stream=sys.stderr)
    versions = _versions()
    machine = _machine()
    delivery: dict[str, Any] = {}

    pipelines: dict[str, tuple[Timer, int]] = {
        "aieng run, sync impls": (_sync(aieng_pipeline("sync")), args.runs),
        "aieng run, async impls": (_sync(aieng_pipeline("async")), args.runs),
        "aieng run, async impls, no timeouts": (
            _sync(aieng_pipeline("async", timeout=None)), args.runs),
        "aieng run, async impls, +1 callback subscriber": (
            _sync(aieng_pipeline("async", subscriber=delivery)), args.runs),
        "langchain ainvoke, async lambdas": (_sync(langchain_ainvoke(True)), args.runs),
        "langchain ainvoke, sync lambdas (thread each)": (
            _sync(langchain_ainvoke(False)), max(args.runs // 4, 100)),
        "langchain invoke, sync lambdas": (langchain_invoke, args.runs),
        # Half as many (one at least: `--runs 1` divided by 0 runs).
        "haystack run_async": (_sync(haystack_run_async), max(args.runs // 2, 1)),
        "haystack run": (haystack_run, max(args.runs // 2, 1)),
    }
    calls: dict[str, tuple[Timer, int]] = {
        "pluggy hook call, sync impl": (pluggy_call, args.calls),
        "Dispatcher.first, sync impl": (_sync(dispatcher_call("sync")), args.calls),
        "Dispatcher.first, async impl (30 s timeout)": (
            _sync(dispatcher_call("async")), args.calls),
        "Dispatcher.first, async impl, no timeout": (
            _sync(dispatcher_call("async", timeout=None)), args.calls),
        "await impl() by hand, async impl": (_sync(_awaited_directly), args.calls),
    }
    print("pipeline runs ...", file=sys.stderr)
    run_samples = _measure(pipelines, args.repeats)
    print("hook calls ...", file=sys.stderr)
    call_samples = _measure(calls, args.repeats)
    cli = None if args.skip_cli else _cli_times(args.cli_runs)
    machine["loadavg_end"] = os.getloadavg()

    runs = {name: _summary(v) for name, v in run_samples.items()}
    hooks = {name: _summary(v) for name, v in call_samples.items()}
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overhead.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "params": {"runs": args.runs, "calls": args.calls, "repeats": args.repeats},
        "revision": _revision(), "machine": machine, "versions": versions, "pipeline_runs": runs, "hook_calls": hooks,
        "delivery": delivery, "cli": cli,
    }
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


# -- the report ---------------------------------------------------------------------------

def render(results: dict[str, Any]) -> str:
    """The results as markdown tables (what docs/benchmarks.md shows)."""
    runs, hooks = results["pipeline_runs"], results["hook_calls"]
    lc_async = runs["langchain ainvoke, async lambdas"]["median_us"]
    lc_sync = runs["langchain invoke, sync lambdas"]["median_us"]
    hs = runs["haystack run"]["median_us"]
    hs_async = runs["haystack run_async"]["median_us"]
    lines = ["### Pipeline run: retrieve → rerank → generate, no-op components", "",
             ("| variant | median µs/run | min | max | ÷ LC ainvoke | ÷ LC invoke "
             "| ÷ haystack run_async | ÷ haystack run |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in runs.items():
        m = s["median_us"]
        lines.append(f"| {name} | {m:.1f} | {s['min_us']:.1f} | {s['max_us']:.1f} "
                     f"| {m / lc_async:.2f}× | {m / lc_sync:.2f}× | {m / hs_async:.2f}× "
                     f"| {m / hs:.2f}× |")
    pluggy_us = hooks["pluggy hook call, sync impl"]["median_us"]
    lines += ["", "### One hook call, one impl of `aieng_generate`", "",
              "| variant | median µs/call | min | max | ÷ pluggy |", "|---|---:|---:|---:|---:|"]
    for name, s in hooks.items():
        m = s["median_us"]
        lines.append(f"| {name} | {m:.2f} | {s['min_us']:.2f} | {s['max_us']:.2f} "
                     f"| {m / pluggy_us:.1f}× |")
    ours = runs["aieng run, async impls"]["median_us"]
    ours_sync = runs["aieng run, sync impls"]["median_us"]
    first_sync = hooks["Dispatcher.first, sync impl"]["median_us"] / pluggy_us
    first_async = hooks["Dispatcher.first, async impl (30 s timeout)"]["median_us"] / pluggy_us
    lines += ["", "### Goals of issue 2", "",
              "| goal | measured | met |", "|---|---|---|",
              (f"| run ≤ 0.3× LangChain `ainvoke` | async impls {ours / lc_async:.2f}×, sync impls "
              f"{ours_sync / lc_async:.2f}× | {_yes(max(ours, ours_sync) / lc_async <= 0.3)} |"),
              (f"| run < 50 µs | async impls {ours:.1f} µs, sync impls {ours_sync:.1f} µs "
              f"| {_yes(max(ours, ours_sync) < 50)} |"),
              (f"| Dispatcher.first ≤ 3× pluggy | sync impl {first_sync:.1f}×, async impl "
              f"{first_async:.1f}× | {_yes(max(first_sync, first_async) <= 3)} |")]
    reps = results["delivery"].get("repeats", [])
    if reps:
        total = {key: sum(r[key] for r in reps)
                 for key in ("published", "delivered_during_loop", "dropped", "failed")}
        drained = sum(r.get("delivered_after_drain", 0) for r in reps)
        lines += ["", "### Event delivery during the hot loop (one sync callback subscriber)", "",
                  ("| samples × runs | events/run | published | delivered by the end of the loop "
                   "| delivered after drain | dropped | failed | max backlog after a run |"),
                  "|---|---:|---:|---:|---:|---:|---:|---:|",
                  (f"| {len(reps)} × {reps[0]['runs']} | {reps[0]['events_per_run']} "
                   f"| {total['published']} | {total['delivered_during_loop']} | {drained} "
                   f"| {total['dropped']} | {total['failed']} "
                   f"| {max(r['max_backlog'] for r in reps)} |")]
    cli = results.get("cli")
    if cli:
        lines += ["", f"### CLI wall time ({cli['tool']})", "",
                  "| command | median ms | min | max | runs |", "|---|---:|---:|---:|---:|"]
        for label, s in cli.items():
            if label != "tool":
                lines.append(f"| `{label}` | {s['median_ms']:.0f} | {s['min_ms']:.0f} "
                             f"| {s['max_ms']:.0f} | {s['runs']} |")
    m = results["machine"]
    lines += ["", (f"Machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}, "
              f"load average {m['loadavg_start'][0]:.2f} → {m['loadavg_end'][0]:.2f}."),
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
              (f"Date: {results['date']}. Revision: {results['revision']}. "
              f"Command: `{results['command'].strip()}`.")]
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


if __name__ == "__main__":
    sys.exit(main())
