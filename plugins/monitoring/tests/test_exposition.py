"""The Prometheus text: parsed back by prometheus_client's own parser, escaping included."""

from __future__ import annotations

import math

import pytest
from aieng_hookspecs.types import FirstToken, Message, ModelCall, RunFinished, StageFinished, Usage
from aieng_monitoring import Monitor, MonitorOptions, Series, escape_label, percentile
from aieng_monitoring._exposition import metric_family
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _fed(pipeline: str = "p", model: str = "m") -> Monitor:
    monitor = Monitor(MonitorOptions(log_runs=False, prices={model: {"input_per_1k": 1.0}}))
    for i, duration in enumerate([0.003, 0.2, 0.7, 3.0, 500.0]):
        run = str(i)
        monitor.aieng_on_event(FirstToken(run_id=run, pipeline=pipeline, component="llm",
                                          ttft_s=duration / 4))
        monitor.aieng_on_event(ModelCall(run_id=run, pipeline=pipeline, component="llm",
                                         messages=(Message("user", "x"),),
                                         parameters={"model": model}, usage=Usage(3, 4),
                                         duration_s=duration, streamed=True))
        monitor.aieng_on_event(StageFinished(run_id=run, pipeline=pipeline, stage="generate",
                                             status="ok", duration_s=duration))
        monitor.aieng_on_event(RunFinished(run_id=run, pipeline=pipeline, status="ok",
                                           duration_s=duration))
    return monitor


def test_text_parses_with_prometheus_client() -> None:
    """Every family parses; histograms are cumulative and end at +Inf == count."""
    text = _fed().prometheus_text()
    families = _families(text)
    hist = families["aieng_run_duration_seconds"]
    assert hist.type == "histogram"  # type: ignore[attr-defined]
    buckets = [(s.labels["le"], s.value) for s in hist.samples  # type: ignore[attr-defined]
               if s.name.endswith("_bucket")]
    values = [v for _, v in buckets]
    assert values == sorted(values)
    assert buckets[-1] == ("+Inf", 5.0)
    le_01 = dict(buckets)["0.25"]
    assert le_01 == 2.0  # 0.003 and 0.2
    count = [s.value for s in hist.samples if s.name.endswith("_count")]  # type: ignore[attr-defined]
    assert count == [5.0]
    tokens = families["aieng_tokens"]
    assert tokens.type == "counter"  # type: ignore[attr-defined]
    assert {(s.labels["direction"], s.value) for s in tokens.samples} == {  # type: ignore[attr-defined]
        ("input", 15.0), ("output", 20.0)}
    recent = families["aieng_run_duration_seconds_recent"]
    p99 = [s.value for s in recent.samples if s.labels["quantile"] == "0.99"]  # type: ignore[attr-defined]
    assert p99 == [500.0]
    assert "# HELP aieng_ttft_seconds " in text and "# TYPE aieng_tpot_seconds histogram" in text


def test_every_line_is_help_type_or_sample() -> None:
    """A strict own check: each line is HELP, TYPE or ``name{labels} value``."""
    import re
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*"'
                        r',?)*\})? (NaN|[+-]Inf|-?[0-9.e+-]+)$')
    for line in _fed().prometheus_text().splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line), line


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_label_values_round_trip(pipeline: str, model: str) -> None:
    """Any pipeline or model name (quotes, backslashes, newlines, unicode) survives the
    exposition: the parser reads back exactly the same label values."""
    text = _fed(pipeline, model).prometheus_text()
    families = _families(text)
    labels = {s.labels["model"] for s in families["aieng_tokens"].samples}  # type: ignore[attr-defined]
    assert labels == {model}
    pipes = {s.labels["pipeline"] for s in families["aieng_runs"].samples}  # type: ignore[attr-defined]
    assert pipes == {pipeline}


def test_escaping_and_names() -> None:
    """Label values escape backslash, quote and newline; bad names are refused."""
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_label("x\ud800y") == "x\ufffdy"  # no UTF-8 text holds a lone surrogate
    escape_label("pipe\udfff").encode("utf-8")
    with pytest.raises(ValueError, match="metric name"):
        metric_family("bad-name", "counter", "x", [])
    with pytest.raises(ValueError, match="label name"):
        metric_family("ok", "counter", "x", [("", {"bad-label": "v"}, 1.0)])


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=200),
       st.floats(min_value=0.01, max_value=1.0))
def test_percentile_is_an_observed_value_within_range(values: list[float], q: float) -> None:
    """The nearest-rank quantile is one of the values, monotone in q."""
    p = percentile(values, q)
    assert p in values
    assert min(values) <= p <= max(values)
    assert percentile(values, min(1.0, q + 0.1)) >= p


@pytest.mark.parametrize(("q", "n"), [(0.07, 100), (0.28, 25), (0.55, 100), (0.56, 50),
                                      (0.5, 4), (0.9, 10), (0.99, 100)])
def test_percentile_is_the_nearest_rank_by_hand(q: float, n: int) -> None:
    """On 1..n the q-quantile is ceil(q * n) exactly, also where q * n in floats lands a
    hair above a whole number (0.07 * 100 == 7.000000000000001)."""
    expected = -(-round(q * 1000) * n // 1000)  # ceil(q * n) in integers
    assert percentile(list(range(1, n + 1)), q) == expected


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=100))
def test_series_buckets_add_up(values: list[float]) -> None:
    """Bucket counts add up to the count; non-finite or negative values are ignored."""
    series = Series((0.1, 1.0, 10.0), window=16)
    for value in values:
        series.observe(value)
    kept = [v for v in values if math.isfinite(v) and v >= 0]
    assert sum(series.counts) == series.count == len(kept)
    assert len(series.recent) == min(16, len(kept))
    assert series.counts[0] == sum(1 for v in kept if v <= 0.1)
