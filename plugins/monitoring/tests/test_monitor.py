"""The ``monitor`` subscriber: latency, TTFT/TPOT under streaming, tokens, cost, rates."""

from __future__ import annotations

import math
from typing import Any

import aieng_monitoring
import pytest
import structlog
from aieng_hookspecs.types import (
    CacheHit,
    ErrorEvent,
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

from aieng_core.kernel import Kernel
from aieng_core.testing import ScriptedBackend, isolated_kernel

pytestmark = pytest.mark.anyio

MSG = (Message("user", "hi"),)


def _call(run: str, *, model: str | None = "m1", streamed: bool = False, duration: float = 1.0,
          ttft: float | None = None, prompt: int = 10, completion: int = 5) -> ModelCall:
    return ModelCall(run_id=run, pipeline="p", component="llm", messages=MSG,
                     parameters={"model": model}, usage=Usage(prompt, completion),
                     duration_s=duration, ttft_s=ttft, streamed=streamed)


def test_streamed_call_gives_ttft_and_tpot() -> None:
    """TTFT comes from the stream; TPOT = (duration - TTFT) / (output tokens - 1)."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(RunStarted(run_id="r", pipeline="p"))
    monitor.aieng_on_event(FirstToken(run_id="r", pipeline="p", component="llm", ttft_s=0.2))
    for i in range(5):
        monitor.aieng_on_event(TokenEvent(run_id="r", pipeline="p", component="llm",
                                          text="x", index=i))
    monitor.aieng_on_event(_call("r", streamed=True, duration=1.0, ttft=0.2))
    monitor.aieng_on_event(RunFinished(run_id="r", pipeline="p", status="ok", duration_s=1.1))
    snap = monitor.snapshot()
    key = "pipeline=p,model=m1"
    assert snap["ttft"][key]["p50"] == pytest.approx(0.2)
    assert snap["tpot"][key]["p50"] == pytest.approx(0.8 / 4)
    assert snap["tokens"][f"{key},direction=input"] == 10
    assert snap["tokens"][f"{key},direction=output"] == 5
    assert snap["run_latency"]["pipeline=p"]["count"] == 1


def test_stream_without_usage_counts_token_events() -> None:
    """A backend that reports no usage still gets its output tokens from backend.token."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(FirstToken(run_id="r", pipeline="p", component="llm", ttft_s=0.1))
    for i in range(3):
        monitor.aieng_on_event(TokenEvent(run_id="r", pipeline="p", component="llm",
                                          text="x", index=i))
    monitor.aieng_on_event(_call("r", streamed=True, duration=0.5, ttft=None, completion=0,
                                 prompt=0))
    snap = monitor.snapshot()
    assert snap["tokens"]["pipeline=p,model=m1,direction=output"] == 3
    assert snap["tpot"]["pipeline=p,model=m1"]["p50"] == pytest.approx(0.4 / 2)


def test_cut_stream_still_counts() -> None:
    """A stream cancelled before its backend.call (client gone) counts TTFT and tokens."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(FirstToken(run_id="r", pipeline="p", component="llm", ttft_s=0.3))
    monitor.aieng_on_event(TokenEvent(run_id="r", pipeline="p", component="llm", text="a",
                                      index=0))
    monitor.aieng_on_event(RunFinished(run_id="r", pipeline="p", status="cancelled",
                                       duration_s=0.4))
    snap = monitor.snapshot()
    assert snap["ttft"]["pipeline=p,model=llm"]["count"] == 1
    assert snap["tokens"]["pipeline=p,model=llm,direction=output"] == 1
    assert snap["runs"]["pipeline=p,status=cancelled"] == 1


def test_cut_stream_counts_in_the_run_summary() -> None:
    """The run.summary line counts a cut stream as aieng_model_calls_total does: one
    model call, with its model, TTFT and output tokens."""
    monitor = Monitor(MonitorOptions())
    with structlog.testing.capture_logs() as logs:
        monitor.aieng_on_event(FirstToken(run_id="r", pipeline="p", component="llm",
                                          ttft_s=0.3))
        for i in range(2):
            monitor.aieng_on_event(TokenEvent(run_id="r", pipeline="p", component="llm",
                                              text="a", index=i))
        monitor.aieng_on_event(RunFinished(run_id="r", pipeline="p", status="cancelled",
                                           duration_s=0.4))
    [summary] = [e for e in logs if e["event"] == "run.summary"]
    assert monitor.snapshot()["model_calls"] == {"pipeline=p,model=llm,streamed=true": 1}
    assert (summary["model_calls"], summary["model"], summary["ttft_s"],
            summary["completion_tokens"]) == (1, "llm", 0.3, 2)

def test_non_streamed_call_has_no_ttft() -> None:
    """A non-streamed call counts latency and tokens but no TTFT/TPOT."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(_call("r"))
    snap = monitor.snapshot()
    assert snap["ttft"] == {} and snap["tpot"] == {}
    assert snap["call_latency"]["pipeline=p,model=m1"]["count"] == 1


def test_cost_from_price_table_and_unpriced_models() -> None:
    """Cost = tokens x price per 1k by model; a model without a price is counted as such."""
    monitor = Monitor(MonitorOptions(prices={"m1": {"input_per_1k": 1.0, "output_per_1k": 2.0}},
                                     log_runs=False))
    monitor.aieng_on_event(_call("a", prompt=1000, completion=500))
    monitor.aieng_on_event(_call("b", model="m2"))
    snap = monitor.snapshot()
    assert snap["cost_usd"]["pipeline=p,model=m1"] == pytest.approx(1.0 + 1.0)
    assert snap["unpriced_calls"] == {"pipeline=p,model=m2": 1}


def test_model_falls_back_to_component_name() -> None:
    """A request naming no model is counted under the backend component's name."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(_call("r", model=None))
    assert "pipeline=p,model=llm" in monitor.snapshot()["call_latency"]


def test_error_and_cache_hit_rates() -> None:
    """Error rate = runs in error / runs; cache-hit rate = cache hits / runs; per pipeline."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    for i, status in enumerate(["ok", "ok", "error", "ok"]):
        if i == 1:
            monitor.aieng_on_event(CacheHit(run_id=str(i), pipeline="p", component="cache"))
        if status == "error":
            monitor.aieng_on_event(ErrorEvent(run_id=str(i), pipeline="p", stage="generate",
                                              plugin="llm", error_type="OSError",
                                              message="down"))
        monitor.aieng_on_event(RunFinished(run_id=str(i), pipeline="p", status=status,
                                           duration_s=0.1))
    snap = monitor.snapshot()
    assert snap["error_rate"] == {"p": 0.25}
    assert snap["cache_hit_rate"] == {"p": 0.25}
    assert snap["errors"] == {"pipeline=p,stage=generate,plugin=llm,policy=fail": 1}


def test_cache_hit_rate_counts_finished_runs_only() -> None:
    """A run a cache answered counts once it finishes, as the runs it is a share of do:
    scraped while another cache-hit run is still in flight, the rate stays a share (it
    read 2.0) and the counter agrees with aieng_runs_total."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    for run in ("a", "b"):
        monitor.aieng_on_event(RunStarted(run_id=run, pipeline="p"))
        monitor.aieng_on_event(CacheHit(run_id=run, pipeline="p", component="cache"))
    monitor.aieng_on_event(RunFinished(run_id="a", pipeline="p", status="ok", duration_s=0.1))
    assert monitor.snapshot()["cache_hit_rate"] == {"p": 1.0}
    assert 'aieng_cache_hits_total{pipeline="p"} 1\n' in monitor.prometheus_text()
    monitor.aieng_on_event(RunFinished(run_id="b", pipeline="p", status="ok", duration_s=0.1))
    monitor.aieng_on_event(RunFinished(run_id="c", pipeline="p", status="ok", duration_s=0.1))
    assert monitor.snapshot()["cache_hit_rate"] == {"p": pytest.approx(2 / 3)}

def test_stage_metrics_per_stage() -> None:
    """Stage latency and status counts are kept per stage."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    monitor.aieng_on_event(StageFinished(run_id="r", pipeline="p", stage="retrieve",
                                         status="ok", duration_s=0.02))
    monitor.aieng_on_event(StageFinished(run_id="r", pipeline="p", stage="generate",
                                         status="error", duration_s=0.5))
    snap = monitor.snapshot()
    assert snap["stages"] == {"pipeline=p,stage=retrieve,status=ok": 1,
                              "pipeline=p,stage=generate,status=error": 1}
    assert snap["stage_latency"]["pipeline=p,stage=generate"]["p99"] == 0.5


def test_open_runs_are_bounded() -> None:
    """Runs whose run.finished never comes do not grow memory without bound."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    for i in range(aieng_monitoring._monitor.MAX_OPEN_RUNS + 50):
        monitor.aieng_on_event(RunStarted(run_id=str(i), pipeline="p"))
    assert len(monitor._open) == aieng_monitoring._monitor.MAX_OPEN_RUNS


def test_price_options_are_checked() -> None:
    """A negative price or an unknown key is refused with the key named."""
    with pytest.raises(ValueError, match="input_per_1k"):
        MonitorOptions(prices={"m": {"input_per_1k": -1}})
    with pytest.raises(ValueError, match="unknown key 'per_token'"):
        MonitorOptions(prices={"m": {"per_token": 1}})
    with pytest.raises(ValueError, match="strictly increasing"):
        MonitorOptions(latency_buckets=(1.0, 0.5))
    assert Price(1.0, 2.0).cost(500, 250) == pytest.approx(1.0)


async def test_real_pipeline_streaming_and_run_summary_log() -> None:
    """Through a real kernel and bus: a streamed run yields TTFT, TPOT, tokens and a
    run.summary log line per run."""
    with structlog.testing.capture_logs() as logs:
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            monitor = Monitor(MonitorOptions(prices={"llm": Price(1000.0, 1000.0)}))
            backend = ScriptedBackend(["one two three four"])
            pipe = kernel.compose({"llm": backend, "monitor": monitor}, name="demo")
            pieces: list[Any] = []
            await pipe.run("a b c", on_delta=pieces.append)
            await pipe.run("a b c")
        # the kernel drained the subscribers on exit
    snap = monitor.snapshot()
    assert snap["ttft"]["pipeline=demo,model=llm"]["count"] == 1
    assert snap["tpot"]["pipeline=demo,model=llm"]["count"] == 1
    assert snap["model_calls"] == {"pipeline=demo,model=llm,streamed=true": 1,
                                   "pipeline=demo,model=llm,streamed=false": 1}
    assert snap["tokens"]["pipeline=demo,model=llm,direction=output"] == 8
    assert snap["cost_usd"]["pipeline=demo,model=llm"] == pytest.approx(2 * (3 + 4))
    summaries = [e for e in logs if e["event"] == "run.summary"]
    assert len(summaries) == 2 and summaries[0]["completion_tokens"] == 4
    assert summaries[0]["ttft_s"] is not None and summaries[1]["ttft_s"] is None


async def test_component_from_config_table(aieng_kernel: Kernel) -> None:
    """``use = "monitor"`` with a price table in the pipeline file builds typed options."""
    aieng_kernel.registry.register(aieng_monitoring, name="monitoring")
    pipe = aieng_kernel.pipeline({
        "pipeline": {"name": "cfg"},
        "components": {"monitor": {"use": "monitor", "window": 100, "prices": {
            "gpt-x": {"input_per_1k": 0.5, "output_per_1k": 1.5}}},
            "sink": {"use": "feedback-sqlite", "path": ":memory:"}},
    })
    monitor = pipe.components["monitor"]
    assert isinstance(monitor, Monitor)
    assert monitor.options.prices == {"gpt-x": Price(0.5, 1.5)}
    assert monitor.options.window == 100
    assert math.isnan(aieng_monitoring.percentile([], 0.5))


def test_a_cut_stream_is_priced_by_the_model_it_asked_for() -> None:
    """A stream cut short before its backend.call is counted under the model its request
    named (carried by backend.first_token), as the call would have been, so its price
    applies; it used to be counted under the component's name, unpriced."""
    prices = {"m1": Price(input_per_1k=1.0, output_per_1k=2.0)}
    monitor = Monitor(MonitorOptions(log_runs=False, prices=prices))
    monitor.aieng_on_event(FirstToken(run_id="r", pipeline="p", component="llm", ttft_s=0.3,
                                      model="m1"))
    for i in range(3):
        monitor.aieng_on_event(TokenEvent(run_id="r", pipeline="p", component="llm",
                                          text="a", index=i))
    monitor.aieng_on_event(RunFinished(run_id="r", pipeline="p", status="cancelled",
                                       duration_s=0.4))
    snap = monitor.snapshot()
    assert snap["tokens"]["pipeline=p,model=m1,direction=output"] == 3
    assert snap["model_calls"] == {"pipeline=p,model=m1,streamed=true": 1}
    assert snap["cost_usd"]["pipeline=p,model=m1"] == pytest.approx(3 * 2.0 / 1000)


def test_a_one_token_answer_has_a_ttft_and_no_tpot() -> None:
    """TPOT divides by the output tokens after the first: a one-token answer has none to
    time (no sample: neither a 0 nor a division by zero), but its TTFT and its token
    count; the TPOT histogram's count stays that of the calls with 2 tokens or more."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    for run, tokens in (("one", 1), ("three", 3)):
        monitor.aieng_on_event(RunStarted(run_id=run, pipeline="p"))
        monitor.aieng_on_event(_call(run, streamed=True, duration=0.5, ttft=0.25,
                                     completion=tokens))
        monitor.aieng_on_event(RunFinished(run_id=run, pipeline="p", status="ok",
                                           duration_s=0.5))
    snap = monitor.snapshot()
    key = "pipeline=p,model=m1"
    assert snap["ttft"][key]["count"] == 2
    assert snap["tpot"][key]["count"] == 1
    assert snap["tpot"][key]["p50"] == (0.5 - 0.25) / (3 - 1)
    assert snap["tokens"][f"{key},direction=output"] == 4
