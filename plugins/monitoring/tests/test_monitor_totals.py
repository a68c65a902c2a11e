"""The monitor against totals computed by hand: interleaved runs of several pipelines, fed
in any order that keeps each run's own order, sum to exactly what was fed; the exposition
says the same as the snapshot."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Any

from aieng_hookspecs.types import (
    CacheHit,
    ErrorEvent,
    Event,
    FirstToken,
    Message,
    ModelCall,
    RunFinished,
    RunStarted,
    StageFinished,
    TokenEvent,
    Usage,
)
from aieng_monitoring import Monitor, MonitorOptions, Price
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

PRICES = {"m1": Price(1.0, 2.0), "m2": Price(0.5, 0.0)}
MSG = (Message("user", "q"),)

CALL = st.fixed_dictionaries({
    "model": st.sampled_from(["m1", "m2", "m3", None]),
    "streamed": st.booleans(),
    "prompt": st.integers(0, 500),
    "completion": st.integers(0, 300),
    "pieces": st.integers(0, 5),
    "duration": st.floats(0.001, 50.0),
    "ttft": st.floats(0.0, 1.0),
    "cut": st.booleans(),  # a stream cut short: no backend.call
})
RUN = st.fixed_dictionaries({
    "pipeline": st.sampled_from(["alpha", "beta", 'we"ird\\name\n']),
    "status": st.sampled_from(["ok", "ok", "error", "cancelled", "blocked"]),
    "duration": st.floats(0.0, 200.0),
    "cache_hit": st.booleans(),
    "errors": st.integers(0, 2),
    "calls": st.lists(CALL, max_size=3),
})


def _events(run_id: str, run: dict[str, Any]) -> list[Event]:
    """One run's events in the order the kernel emits them (one component per call, so
    that pieces of two calls are never mixed, as within one run they are not)."""
    p = run["pipeline"]
    events: list[Event] = [RunStarted(run_id=run_id, pipeline=p)]
    if run["cache_hit"]:
        events.append(CacheHit(run_id=run_id, pipeline=p, component="cache"))
    for i, call in enumerate(run["calls"]):
        component = f"llm{i}"
        streamed = call["streamed"] or call["cut"]
        if streamed and call["pieces"]:
            events.append(FirstToken(run_id=run_id, pipeline=p, component=component,
                                     ttft_s=call["ttft"], model=call["model"] or ""))
            events += [TokenEvent(run_id=run_id, pipeline=p, component=component, text="t",
                                  index=k) for k in range(call["pieces"])]
        if not call["cut"]:
            events.append(ModelCall(run_id=run_id, pipeline=p, component=component,
                                    messages=MSG, parameters={"model": call["model"]},
                                    usage=Usage(call["prompt"], call["completion"]),
                                    duration_s=call["duration"], streamed=streamed))
    for _ in range(run["errors"]):
        events.append(ErrorEvent(run_id=run_id, pipeline=p, stage="generate", plugin="llm0",
                                 error_type="OSError", message="x"))
    events.append(StageFinished(run_id=run_id, pipeline=p, stage="generate",
                                status=run["status"], duration_s=run["duration"]))
    events.append(RunFinished(run_id=run_id, pipeline=p, status=run["status"],
                              duration_s=run["duration"]))
    return events


def _interleaved(streams: list[list[Event]], seed: int) -> list[Event]:
    """The runs' events merged in a random order that keeps each run's own order."""
    rng = random.Random(seed)
    queues = [list(reversed(s)) for s in streams if s]
    merged: list[Event] = []
    while queues:
        queue = rng.choice(queues)
        merged.append(queue.pop())
        if not queue:
            queues.remove(queue)
    return merged


@settings(max_examples=60, deadline=None)
@given(st.lists(RUN, max_size=8), st.integers(0, 2**32))
def test_totals_equal_what_was_fed(runs: list[dict[str, Any]], seed: int) -> None:
    """Runs, calls, tokens, cost, TTFT counts, errors and rates equal the hand-computed
    totals, whatever the interleaving."""
    monitor = Monitor(MonitorOptions(log_runs=False, prices=PRICES))
    for event in _interleaved([_events(f"r{i}", r) for i, r in enumerate(runs)], seed):
        monitor.aieng_on_event(event)

    runs_by: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    cost: defaultdict[str, float] = defaultdict(float)
    ttft: Counter[str] = Counter()
    errors = 0
    per_pipeline: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for i, run in enumerate(runs):
        p = run["pipeline"]
        runs_by[f"pipeline={p},status={run['status']}"] += 1
        per_pipeline[p] += 1
        failed[p] += run["status"] == "error"
        hits[p] += run["cache_hit"]
        errors += run["errors"]
        for k, call in enumerate(run["calls"]):
            model = call["model"] or f"llm{k}"
            streamed = call["streamed"] or call["cut"]
            if call["cut"] and not call["pieces"]:
                continue  # nothing was produced: nothing to count
            key = f"pipeline={p},model={model}"
            calls[f"{key},streamed={'true' if streamed else 'false'}"] += 1
            prompt = 0 if call["cut"] else call["prompt"]
            output = call["pieces"] if call["cut"] else (call["completion"] or (
                call["pieces"] if streamed else 0))
            tokens[f"{key},direction=input"] += prompt
            tokens[f"{key},direction=output"] += output
            if model in PRICES:
                cost[key] += PRICES[model].cost(prompt, output)
            if streamed and call["pieces"]:
                ttft[key] += 1

    snap = monitor.snapshot()
    assert snap["runs"] == dict(runs_by)
    assert snap["model_calls"] == dict(calls)
    assert snap["tokens"] == dict(tokens)
    assert snap["cost_usd"].keys() == cost.keys()
    for key, usd in cost.items():
        assert math.isclose(snap["cost_usd"][key], usd, rel_tol=1e-9, abs_tol=1e-12)
    assert {k: v["count"] for k, v in snap["ttft"].items()} == dict(ttft)
    assert sum(snap["errors"].values()) == errors
    assert sum(v["count"] for v in snap["run_latency"].values()) == len(runs)
    assert snap["error_rate"] == {p: failed[p] / n for p, n in per_pipeline.items()}
    assert snap["cache_hit_rate"] == {p: hits[p] / n for p, n in per_pipeline.items()}
    assert monitor._open == {}  # every run finished: nothing is kept

    # The exposition says the same, parsed back by prometheus_client.
    families = {f.name: f for f in text_string_to_metric_families(monitor.prometheus_text())}
    exposed = {",".join(f"{k}={v}" for k, v in s.labels.items()): s.value
               for s in families["aieng_tokens"].samples}
    assert exposed == {k: float(v) for k, v in tokens.items()}
    exposed_runs = {(s.labels["pipeline"], s.labels["status"]): s.value
                    for s in families["aieng_runs"].samples}
    assert sum(exposed_runs.values()) == len(runs)


def test_percentiles_cover_the_last_window_only() -> None:
    """With ``window = 10``, p50 / p90 / p99 are the nearest-rank values of the last ten
    run durations (91 … 100 s), while the histogram's count and sum keep every run; the
    ``_recent`` gauges expose the same numbers."""
    monitor = Monitor(MonitorOptions(log_runs=False, window=10))
    for i in range(1, 101):
        monitor.aieng_on_event(RunFinished(run_id=str(i), pipeline="p", status="ok",
                                           duration_s=float(i)))
    latency = monitor.snapshot()["run_latency"]["pipeline=p"]
    assert (latency["p50"], latency["p90"], latency["p99"]) == (95.0, 99.0, 100.0)
    assert (latency["count"], latency["sum"]) == (100, 5050.0)
    families = {f.name: f for f in text_string_to_metric_families(monitor.prometheus_text())}
    recent = {s.labels["quantile"]: s.value
              for s in families["aieng_run_duration_seconds_recent"].samples}
    assert recent == {"0.5": 95.0, "0.9": 99.0, "0.99": 100.0}
    buckets = {s.labels["le"]: s.value for s in families["aieng_run_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    assert (buckets["60.0"], buckets["120.0"], buckets["+Inf"]) == (60.0, 100.0, 100.0)
