"""Label cardinality: values that come from requests (a client names the model) are
bounded, so neither the monitor's memory nor the scrape grows with the traffic. Past
``max_label_values`` distinct values of one label, later ones are counted under ``other``
(one warning), with the totals unchanged."""

from __future__ import annotations

from collections import Counter

import pytest
import structlog
from aieng_hookspecs.types import (
    CacheHit,
    ErrorEvent,
    FirstToken,
    Message,
    ModelCall,
    RunFinished,
    StageFinished,
    TokenEvent,
    Usage,
)
from aieng_monitoring import Monitor, MonitorOptions, Price
from aieng_monitoring._monitor import MAX_LABEL_CHARS, OTHER
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

MSG = (Message("user", "q"),)


def _call(run: str, model: str, *, pipeline: str = "p", prompt: int = 2,
          completion: int = 3) -> ModelCall:
    return ModelCall(run_id=run, pipeline=pipeline, component="llm", messages=MSG,
                     parameters={"model": model}, usage=Usage(prompt, completion),
                     duration_s=0.5)


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def test_client_model_names_fold_into_other_past_the_limit() -> None:
    """250 client-chosen model names under the default limit of 100: 100 series of their
    own plus ``other``; tokens, calls and runs still add up to what was fed; one warning."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    assert monitor.options.max_label_values == 100
    with structlog.testing.capture_logs() as logs:
        for i in range(250):
            monitor.aieng_on_event(_call(str(i), f"model-{i}", prompt=i, completion=1))
            monitor.aieng_on_event(RunFinished(run_id=str(i), pipeline="p", status="ok",
                                               duration_s=0.1))
    samples = _samples(monitor.prometheus_text())
    models = {labels["model"] for _, labels, _ in samples if "model" in labels}
    assert len(models) == 101 and OTHER in models
    assert {f"model-{i}" for i in range(100)} <= models
    tokens = {labels["direction"]: value for name, labels, value in samples
              if name == "aieng_tokens_total" and labels["model"] == OTHER}
    assert tokens == {"input": float(sum(range(100, 250))), "output": 150.0}
    snap = monitor.snapshot()
    assert sum(n for k, n in snap["tokens"].items() if k.endswith("input")) == sum(range(250))
    assert sum(snap["model_calls"].values()) == 250
    assert snap["call_latency"][f"pipeline=p,model={OTHER}"]["count"] == 150
    assert snap["unpriced_calls"][f"pipeline=p,model={OTHER}"] == 150
    warnings = [e for e in logs if e["event"] == "monitor.label_values_folded"]
    assert [(w["label"], w["limit"], w["log_level"]) for w in warnings] == [
        ("model", 100, "warning")]


def test_a_priced_model_keeps_its_series_and_price_past_the_limit() -> None:
    """A model of the price table is the operator's, not a client's: it keeps its own
    series and its price even after the limit folded the clients' names."""
    monitor = Monitor(MonitorOptions(log_runs=False, max_label_values=3,
                                     prices={"gpt-x": Price(1.0, 2.0)}))
    for i in range(5):
        monitor.aieng_on_event(_call(str(i), f"junk{i}"))
    monitor.aieng_on_event(_call("priced", "gpt-x", prompt=1000, completion=1000))
    snap = monitor.snapshot()
    assert snap["cost_usd"] == {"pipeline=p,model=gpt-x": pytest.approx(3.0)}
    assert snap["model_calls"] == {"pipeline=p,model=junk0,streamed=false": 1,
                                   "pipeline=p,model=junk1,streamed=false": 1,
                                   "pipeline=p,model=junk2,streamed=false": 1,
                                   f"pipeline=p,model={OTHER},streamed=false": 2,
                                   "pipeline=p,model=gpt-x,streamed=false": 1}


def test_a_cut_stream_past_the_limit_is_folded_and_priced() -> None:
    """A stream cut short is named by the model its request asked for: folded like a
    finished call, priced by its real name."""
    monitor = Monitor(MonitorOptions(log_runs=False, max_label_values=1,
                                     prices={"m": Price(0.0, 1000.0)}))
    monitor.aieng_on_event(_call("a", "first"))
    monitor.aieng_on_event(FirstToken(run_id="b", pipeline="p", component="llm", ttft_s=0.1,
                                      model="second"))
    monitor.aieng_on_event(TokenEvent(run_id="b", pipeline="p", component="llm", text="t",
                                      index=0))
    monitor.aieng_on_event(FirstToken(run_id="b", pipeline="p", component="llm2", ttft_s=0.1,
                                      model="m"))
    monitor.aieng_on_event(TokenEvent(run_id="b", pipeline="p", component="llm2", text="t",
                                      index=0))
    monitor.aieng_on_event(RunFinished(run_id="b", pipeline="p", status="cancelled",
                                       duration_s=0.2))
    snap = monitor.snapshot()
    assert snap["tokens"][f"pipeline=p,model={OTHER},direction=output"] == 1
    assert snap["cost_usd"] == {"pipeline=p,model=m": pytest.approx(1.0)}


def test_every_label_is_bounded_and_the_rates_stay_shares() -> None:
    """A monitor subscribed to the whole kernel sees any pipeline, stage, status or plugin
    name: each label is bounded alike; error and cache-hit rates of ``other`` are shares
    of the runs folded into it."""
    monitor = Monitor(MonitorOptions(log_runs=False, max_label_values=2))
    for i in range(6):
        run, pipe = str(i), f"pipe{i}"
        if i % 2:
            monitor.aieng_on_event(CacheHit(run_id=run, pipeline=pipe, component="cache"))
        monitor.aieng_on_event(ErrorEvent(run_id=run, pipeline=pipe, stage=f"s{i}",
                                          plugin=f"plug{i}", policy=f"pol{i}",
                                          error_type="OSError", message="x"))
        monitor.aieng_on_event(StageFinished(run_id=run, pipeline=pipe, stage=f"s{i}",
                                             status=f"st{i}", duration_s=0.1))
        monitor.aieng_on_event(RunFinished(run_id=run, pipeline=pipe,
                                           status="error" if i < 3 else f"st{i}",
                                           duration_s=0.1))
    snap = monitor.snapshot()
    assert snap["error_rate"] == {"pipe0": 1.0, "pipe1": 1.0, OTHER: 0.25}
    assert snap["cache_hit_rate"] == {"pipe0": 0.0, "pipe1": 1.0, OTHER: 0.5}
    assert sum(snap["runs"].values()) == 6 and sum(snap["errors"].values()) == 6
    samples = _samples(monitor.prometheus_text())
    for label in ("pipeline", "stage", "status", "plugin", "policy"):
        values = {labels[label] for _, labels, _ in samples if label in labels}
        assert len(values) <= 3 and OTHER in values, (label, values)


def test_label_values_are_bounded_in_length() -> None:
    """A client's 100,000-character model name is no 100,000-character label in every
    line of every scrape: it is cut to MAX_LABEL_CHARS (its price still found by the
    whole name); names alike up to the cut are one series."""
    long_a, long_b = "a" * 100_000, "a" * 100_000 + "b"
    monitor = Monitor(MonitorOptions(log_runs=False, prices={long_b: Price(1000.0, 0.0)}))
    monitor.aieng_on_event(_call("1", long_a))
    monitor.aieng_on_event(_call("2", long_b))
    text = monitor.prometheus_text()
    assert max(len(line) for line in text.splitlines()) < MAX_LABEL_CHARS + 200
    samples = _samples(text)
    series = Counter((name, tuple(sorted(labels.items()))) for name, labels, _ in samples)
    assert [key for key, n in series.items() if n > 1] == []
    [model] = {labels["model"] for _, labels, _ in samples if "model" in labels}
    assert len(model) == MAX_LABEL_CHARS and model.startswith("aaa")
    assert sum(monitor.snapshot()["cost_usd"].values()) == pytest.approx(2.0)


def test_pipeline_and_stage_names_that_escape_alike_are_one_series() -> None:
    """As for models: pipeline or stage names that differ only by lone surrogates are
    shown alike (U+FFFD), so they are counted as one series, not a duplicate Prometheus
    refuses the whole scrape for."""
    monitor = Monitor(MonitorOptions(log_runs=False))
    for run, name in (("a", "x\ud800"), ("b", "x\udc00")):
        monitor.aieng_on_event(StageFinished(run_id=run, pipeline=name, stage=name,
                                             status="ok", duration_s=0.1))
        monitor.aieng_on_event(RunFinished(run_id=run, pipeline=name, status="ok",
                                           duration_s=0.1))
    samples = _samples(monitor.prometheus_text())
    series = Counter((name, tuple(sorted(labels.items()))) for name, labels, _ in samples)
    assert [key for key, n in series.items() if n > 1] == []
    assert monitor.snapshot()["runs"] == {"pipeline=x\ufffd,status=ok": 2}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.integers(0, 50)), max_size=40),
       st.integers(1, 5))
def test_folding_keeps_totals(calls: list[tuple[str, int]], limit: int) -> None:
    """Whatever the names and the limit: at most ``limit`` + 1 model values are exposed,
    and the exposed output tokens add up to what was fed."""
    monitor = Monitor(MonitorOptions(log_runs=False, max_label_values=limit))
    for i, (model, tokens) in enumerate(calls):
        monitor.aieng_on_event(_call(str(i), model or "x", completion=tokens))
    samples = _samples(monitor.prometheus_text())
    output = [(labels["model"], value) for name, labels, value in samples
              if name == "aieng_tokens_total" and labels["direction"] == "output"]
    assert len({model for model, _ in output}) <= limit + 1
    assert sum(value for _, value in output) == sum(tokens for _, tokens in calls)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "100"])
def test_max_label_values_is_checked(bad: object) -> None:
    """The limit is an integer of 1 or more, refused with its name otherwise."""
    with pytest.raises(ValueError, match="max_label_values"):
        MonitorOptions(max_label_values=bad)  # type: ignore[arg-type]
