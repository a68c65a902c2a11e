"""The Prometheus text over generated traffic, scraped after every run and read back two
ways (prometheus_client's parser, and a line walk of our own): the format holds, label
values round-trip, counters never go down, and every histogram says what was observed,
computed here by brute force."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from fractions import Fraction
from typing import Any

from aieng_hookspecs.types import (
    AgentFinished,
    AgentStepped,
    Event,
    Message,
    ModelCall,
    RunFinished,
    StageFinished,
    Usage,
)
from aieng_monitoring import Monitor, MonitorOptions, Price
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*")
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
MSG = (Message("user", "q"),)
# A name from a user's TOML or a client's request: the characters the format escapes, the
# ones that look like its syntax, and any other code point (no lone surrogate: st.text
# leaves them out; test_exposition_series covers them).
LABEL = st.text(st.sampled_from('"\\\n\r\t{}=, #é\u2028\x00🙂') | st.characters(),
                min_size=1, max_size=8)
RUN = st.fixed_dictionaries({
    "pipeline": st.integers(0, 2),
    "model": st.integers(0, 2),
    "stage": st.integers(0, 1),
    "status": st.sampled_from(["ok", "error", "cancelled"]),
    "duration": st.floats(0.0, 300.0),
    "call": st.none() | st.fixed_dictionaries({
        "prompt": st.integers(0, 10**6),
        "completion": st.integers(0, 10**6),
        "duration": st.floats(0.0, 200.0),
        "ttft_share": st.none() | st.floats(0.0, 1.0),  # None: not streamed
    }),
    "agent": st.none() | st.fixed_dictionaries({
        "steps": st.integers(0, 120),
        "tools": st.lists(st.integers(0, 2), max_size=3),
        "errors": st.integers(0, 3),
        "prompt": st.integers(0, 1000),
        "cost": st.floats(0.0, 5.0),
    }),
})


def _events(i: int, run: dict[str, Any], names: list[str]) -> list[Event]:
    run_id, pipeline = f"r{i}", names[run["pipeline"]]
    events: list[Event] = []
    if (call := run["call"]) is not None:
        share = call["ttft_share"]
        events.append(ModelCall(
            run_id=run_id, pipeline=pipeline, component="llm", messages=MSG,
            parameters={"model": names[3 + run["model"]]},
            usage=Usage(call["prompt"], call["completion"]), duration_s=call["duration"],
            streamed=share is not None,
            ttft_s=None if share is None else call["duration"] * share))
    events.append(StageFinished(run_id=run_id, pipeline=pipeline,
                                stage=names[6 + run["stage"]], status=run["status"],
                                duration_s=run["duration"]))
    events.append(RunFinished(run_id=run_id, pipeline=pipeline, status=run["status"],
                              duration_s=run["duration"]))
    if (agent := run["agent"]) is not None:
        tools = tuple(names[8 + t] for t in agent["tools"])
        events.append(AgentStepped(run_id=f"a{i}", pipeline=pipeline, step=1, source="model",
                                   kind="tool_calls", tools=tools, errors=agent["errors"],
                                   usage=Usage(agent["prompt"], 1), cost=agent["cost"],
                                   duration_s=0.5))
        events.append(AgentFinished(run_id=f"a{i}", pipeline=pipeline, status="answered",
                                    steps=agent["steps"], usage=Usage(agent["prompt"], 2),
                                    cost=agent["cost"] * 2, duration_s=run["duration"] / 2))
    return events


def _walk(text: str) -> dict[str, str]:
    """Our own reading of the text: each family's HELP then TYPE, once, before its samples
    (named by the family plus a suffix its type allows); returns ``{family: type}``."""
    assert text.endswith("\n") and "\n\n" not in text
    kinds: dict[str, str] = {}
    # Lines end at "\n" only (a label value may hold \r, \x1e or \u2028 unescaped).
    family, lines = "", text[:-1].split("\n")
    for n, line in enumerate(lines):
        if line.startswith("# HELP "):
            family = line.split(" ")[2]
            assert NAME.fullmatch(family) and family not in kinds, line
            typed = lines[n + 1].split(" ")
            assert typed[:3] == ["#", "TYPE", family], (line, lines[n + 1])
            kinds[family] = typed[3]
        elif line.startswith("# TYPE "):
            assert line.split(" ")[2] == family
        else:
            name = NAME.match(line)
            assert name is not None, line
            assert name.group() in {family + s for s in SUFFIXES[kinds[family]]}, line
    return kinds


def _brute_quantile(values: list[float], q: float) -> float:
    """Nearest rank by definition: the smallest value with at least q * n values at or
    below it (q in hundredths, so the rank is exact integer arithmetic)."""
    n, hundredths = len(values), round(q * 100)
    return sorted(values)[-(-hundredths * n // 100) - 1]


@settings(max_examples=40, deadline=None)
@given(st.lists(LABEL, min_size=11, max_size=11, unique=True), st.lists(RUN, max_size=6))
def test_scrapes_of_generated_traffic(names: list[str], runs: list[dict[str, Any]]) -> None:
    """After every run: the text parses both ways, label values round-trip exactly,
    counters never go down or vanish, histograms are cumulative in ascending ``le`` with
    ``+Inf`` == ``_count``, and bucket counts, ``_sum`` (seconds fed in seconds) and the
    ``_recent`` quantiles equal what was observed; tokens and cost equal the hand sums."""
    price = Price(0.25, 1.5)
    monitor = Monitor(MonitorOptions(log_runs=False, prices={names[3]: price}))
    observed: defaultdict[tuple[str, frozenset[tuple[str, str]]], list[float]] = \
        defaultdict(list)
    tokens: defaultdict[frozenset[tuple[str, str]], int] = defaultdict(int)
    cost: defaultdict[frozenset[tuple[str, str]], Fraction] = defaultdict(Fraction)
    previous: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for i, run in enumerate(runs):
        for event in _events(i, run, names):
            monitor.aieng_on_event(event)
        p, stage = names[run["pipeline"]], names[6 + run["stage"]]
        observed["aieng_run_duration_seconds", frozenset({("pipeline", p)})].append(
            run["duration"])
        observed["aieng_stage_duration_seconds",
                 frozenset({("pipeline", p), ("stage", stage)})].append(run["duration"])
        if (call := run["call"]) is not None:
            model = frozenset({("pipeline", p), ("model", names[3 + run["model"]])})
            observed["aieng_model_call_duration_seconds", model].append(call["duration"])
            tokens[model | {("direction", "input")}] += call["prompt"]
            tokens[model | {("direction", "output")}] += call["completion"]
            if run["model"] == 0:
                cost[model] += (Fraction(call["prompt"]) * Fraction(price.input_per_1k)
                                + Fraction(call["completion"])
                                * Fraction(price.output_per_1k)) / 1000
            if call["ttft_share"] is not None:
                ttft = call["duration"] * call["ttft_share"]
                observed["aieng_ttft_seconds", model].append(ttft)
                if call["completion"] > 1:
                    observed["aieng_tpot_seconds", model].append(
                        (call["duration"] - ttft) / (call["completion"] - 1))
        if (agent := run["agent"]) is not None:
            observed["aieng_agent_steps", frozenset({("pipeline", p)})].append(agent["steps"])
            observed["aieng_agent_run_duration_seconds", frozenset({("pipeline", p)})].append(
                run["duration"] / 2)

        text = monitor.prometheus_text()
        kinds = _walk(text)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {(s.name, frozenset(s.labels.items())): s.value
                   for f in families.values() for s in f.samples}
        counters = {k: v for k, v in samples.items() if kinds.get(k[0]) == "counter"}
        assert all(name.endswith("_total") for name, _ in counters)
        for key, value in previous.items():
            assert counters[key] >= value, key
        previous = counters

        buckets: defaultdict[tuple[str, frozenset[tuple[str, str]]], list[tuple[str, float]]] \
            = defaultdict(list)
        for family, kind in kinds.items():
            if kind != "histogram":
                continue
            for s in families[family].samples:
                if s.name.endswith("_bucket"):
                    rest = frozenset((k, v) for k, v in s.labels.items() if k != "le")
                    buckets[family, rest].append((s.labels["le"], s.value))
        assert buckets.keys() == observed.keys()
        for (family, labels), values in observed.items():
            les = buckets[family, labels]
            bounds = [float(le) for le, _ in les]
            assert les[-1][0] == "+Inf" and bounds == sorted(set(bounds))
            assert les[-1][1] == samples[f"{family}_count", labels] == len(values)
            for le, count in les:
                assert count == sum(1 for v in values if v <= float(le)), (family, le)
            assert math.isclose(samples[f"{family}_sum", labels], math.fsum(values),
                                rel_tol=1e-12, abs_tol=1e-12)
            for q in (0.5, 0.9, 0.99):
                recent = samples[f"{family}_recent", labels | {("quantile", str(q))}]
                assert recent == _brute_quantile(values, q)

        exposed_tokens = {k[1]: v for k, v in samples.items() if k[0] == "aieng_tokens_total"}
        assert exposed_tokens == {k: float(v) for k, v in tokens.items()}
        exposed_cost = {k[1]: v for k, v in samples.items() if k[0] == "aieng_cost_usd_total"}
        assert exposed_cost.keys() == cost.keys()
        for labels, usd in cost.items():
            assert math.isclose(exposed_cost[labels], float(usd), rel_tol=1e-12)
        fed = {names[r["pipeline"]] for r in runs[:i + 1]}
        assert {dict(k[1])["pipeline"] for k in samples if k[0] == "aieng_runs_total"} == fed
        assert {dict(k[1])["stage"] for k in samples
                if k[0] == "aieng_stages_total"} == {names[6 + r["stage"]] for r in runs[:i + 1]}
