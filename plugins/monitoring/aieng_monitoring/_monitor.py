"""The ``monitor`` component: an ``aieng_on_event`` subscriber turning a pipeline's events
into latency, token, cost, error and cache metrics, as Prometheus text and as a snapshot."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentFinished,
    AgentStepped,
    CacheHit,
    ErrorEvent,
    Event,
    FirstToken,
    ModelCall,
    RunFinished,
    RunStarted,
    StageFinished,
    TokenEvent,
)

from ._collector import MonitorCollector, families
from ._exposition import histogram_samples, metric_family, utf8_value
from ._options import MonitorOptions
from ._stats import Series

__all__ = ["MAX_LABEL_CHARS", "OTHER", "UNATTRIBUTED", "Monitor"]

log = structlog.get_logger(__name__)

QUANTILES = (0.5, 0.9, 0.99)
#: Runs whose ``run.finished`` never came (a lost event) are forgotten beyond this many.
MAX_OPEN_RUNS = 10_000
#: The label value of every value past a label's ``max_label_values`` distinct ones.
OTHER = "other"
#: A longer label value (a client's model name) is cut to this many characters, ending "…".
MAX_LABEL_CHARS = 200
#: The ``tool`` label of tool errors of a step that called several different tools and got
#: errors from some of them: ``agent.step`` counts a step's errors, not which calls failed.
UNATTRIBUTED = "unattributed"

Labels = tuple[tuple[str, str], ...]


@attrs.define
class _RunTally:
    """What one run has accumulated so far (dropped when it finishes)."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    ttft: float | None = None
    pieces: Counter[str] = attrs.field(factory=Counter)  # streamed pieces per component
    first_token: dict[str, float] = attrs.field(factory=dict)  # ttft per component
    models: dict[str, str] = attrs.field(factory=dict)  # the requested model per component
    calls: int = 0
    cache_hit: bool = False
    errors: int = 0


@attrs.define
class _AgentTally:
    """The tokens and cost one agent run's ``agent.step`` events counted so far."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


class Monitor:
    """Metrics of the runs of the pipeline it belongs to (or of every pipeline, when a
    plugin module subscribes it to the whole kernel).

    Streaming is measured from the events the kernel emits while a stream is consumed:
    TTFT from ``backend.first_token``; TPOT = (call duration - TTFT) / (output tokens - 1),
    the output tokens being the usage's ``completion_tokens`` or, when the backend reports
    none, the ``backend.token`` pieces counted. A stream cut short (the client went away)
    still counts its TTFT and the tokens that were produced. Non-streamed calls count in
    the latency, token and cost metrics but have no TTFT / TPOT (there is no first token
    to time).

    :param options: prices, histogram buckets, percentile window.
    """

    def __init__(self, options: MonitorOptions | None = None) -> None:
        self.options = options or MonitorOptions()
        self._runs: Counter[Labels] = Counter()          # pipeline, status
        self._run_latency: dict[Labels, Series] = {}     # pipeline
        self._stages: Counter[Labels] = Counter()        # pipeline, stage, status
        self._stage_latency: dict[Labels, Series] = {}   # pipeline, stage
        self._calls: Counter[Labels] = Counter()         # pipeline, model, streamed
        self._tokens: Counter[Labels] = Counter()        # pipeline, model, direction
        self._cost: defaultdict[Labels, float] = defaultdict(float)  # pipeline, model
        self._unpriced: Counter[Labels] = Counter()      # pipeline, model
        self._call_latency: dict[Labels, Series] = {}    # pipeline, model
        self._ttft: dict[Labels, Series] = {}            # pipeline, model
        self._tpot: dict[Labels, Series] = {}            # pipeline, model
        self._errors: Counter[Labels] = Counter()        # pipeline, stage, plugin, policy
        self._cache_hits: Counter[Labels] = Counter()    # pipeline
        self._open: dict[str, _RunTally] = {}
        self._agent_runs: Counter[Labels] = Counter()    # pipeline, status
        self._agent_steps: dict[Labels, Series] = {}     # pipeline (steps per run)
        self._agent_duration: dict[Labels, Series] = {}  # pipeline
        self._tool_calls: Counter[Labels] = Counter()    # pipeline, tool
        self._tool_errors: Counter[Labels] = Counter()   # pipeline, tool
        self._agent_tokens: Counter[Labels] = Counter()  # pipeline, direction
        self._agent_cost: defaultdict[Labels, float] = defaultdict(float)  # pipeline
        self._open_agents: dict[str, _AgentTally] = {}
        self._label_values: defaultdict[str, set[str]] = defaultdict(set)  # label -> seen

    # -- the subscriber --------------------------------------------------------------------

    @hookimpl
    def aieng_on_event(self, event: Event) -> None:
        """Fold one event into the metrics (cheap and synchronous: no I/O)."""
        if isinstance(event, TokenEvent):  # the hottest event first
            self._tally(event).pieces[event.component] += 1
        elif isinstance(event, FirstToken):
            tally = self._tally(event)
            tally.first_token[event.component] = event.ttft_s
            if event.model:
                tally.models[event.component] = event.model
            if tally.ttft is None:
                tally.ttft = event.ttft_s
        elif isinstance(event, ModelCall):
            self._model_call(event)
        elif isinstance(event, StageFinished):
            key = (self._label("pipeline", event.pipeline), self._label("stage", event.stage))
            self._stages[(*key, self._label("status", event.status))] += 1
            self._series(self._stage_latency, key, latency=True).observe(event.duration_s)
        elif isinstance(event, RunStarted):
            self._tally(event)
        elif isinstance(event, RunFinished):
            self._run_finished(event)
        elif isinstance(event, CacheHit):
            # Counted when the run finishes, as aieng_runs_total is: the hit rate is a share.
            self._tally(event).cache_hit = True
        elif isinstance(event, ErrorEvent):
            self._errors[(self._label("pipeline", event.pipeline),
                          self._label("stage", event.stage), self._label("plugin", event.plugin),
                          self._label("policy", event.policy))] += 1
            self._tally(event).errors += 1
        elif isinstance(event, AgentStepped):
            self._agent_step(event)
        elif isinstance(event, AgentFinished):
            self._agent_finished(event)

    def _tally(self, event: Event) -> _RunTally:
        tally = self._open.get(event.run_id)
        if tally is None:
            if len(self._open) >= MAX_OPEN_RUNS:  # forget the oldest: bounded memory
                self._open.pop(next(iter(self._open)))
            tally = self._open[event.run_id] = _RunTally()
        return tally

    def _label(self, name: str, value: str) -> tuple[str, str]:
        """``(name, value)`` as a bounded label: lone surrogates as U+FFFD (as the exposition
        shows them: names shown alike are one series), cut to :data:`MAX_LABEL_CHARS`, and
        :data:`OTHER` past the label's first ``max_label_values`` distinct values (a model of
        the price table always keeps its own)."""
        seen = self._label_values[name]
        if value in seen:  # the hot path: seen values are already shown as they are
            return name, value
        value = utf8_value(value)
        if len(value) > MAX_LABEL_CHARS:
            value = value[:MAX_LABEL_CHARS - 1] + "\u2026"
        if value in seen or (name == "model" and value in self.options.prices):
            return name, value
        limit = self.options.max_label_values
        if len(seen) < limit:
            seen.add(value)
            return name, value
        if OTHER not in seen:  # the first value folded: say so once per label
            seen.add(OTHER)
            log.warning("monitor.label_values_folded", label=name, limit=limit,
                        hint=f"label {name!r} had {limit} distinct values already: later "
                             f"ones are counted as {OTHER!r} (raise max_label_values)")
        return name, OTHER

    def _series(self, table: dict[Labels, Series], key: Labels, *, latency: bool,
                bounds: tuple[float, ...] | None = None) -> Series:
        series = table.get(key)
        if series is None:
            if bounds is None:
                bounds = self.options.latency_buckets if latency else self.options.tpot_buckets
            series = table[key] = Series(bounds, self.options.window)
        return series

    # -- agents ----------------------------------------------------------------------------

    def _agent_step(self, event: AgentStepped) -> None:
        """Count one agent step: its tool calls and errors by tool, its tokens and cost."""
        pipeline = (self._label("pipeline", event.pipeline),)
        tools = [self._label("tool", name) for name in event.tools]
        for tool in tools:
            self._tool_calls[(*pipeline, tool)] += 1
        # agent.step says how many results were errors, not which: attributed by tool when
        # that is certain (every call failed, or all called one tool), else "unattributed".
        errors = min(event.errors, len(tools))
        if errors == len(tools):
            for tool in tools:
                self._tool_errors[(*pipeline, tool)] += 1
        elif errors and len(set(tools)) == 1:
            self._tool_errors[(*pipeline, tools[0])] += errors
        elif errors:
            self._tool_errors[(*pipeline, ("tool", UNATTRIBUTED))] += errors
        tally = self._agent_tally(event.run_id)
        self._agent_usage(pipeline, event.usage.prompt_tokens, event.usage.completion_tokens,
                          event.cost)
        tally.prompt_tokens += event.usage.prompt_tokens
        tally.completion_tokens += event.usage.completion_tokens
        tally.cost += event.cost

    def _agent_finished(self, event: AgentFinished) -> None:
        """Count one agent run, and the tokens and cost its steps did not report (a step
        cut short by a timeout or a cancellation used tokens but published no step)."""
        pipeline = (self._label("pipeline", event.pipeline),)
        self._agent_runs[(*pipeline, self._label("status", event.status))] += 1
        self._series(self._agent_steps, pipeline, latency=False,
                     bounds=self.options.step_buckets).observe(event.steps)
        self._series(self._agent_duration, pipeline, latency=True).observe(event.duration_s)
        tally = self._open_agents.pop(event.run_id, None) or _AgentTally()
        self._agent_usage(pipeline, max(0, event.usage.prompt_tokens - tally.prompt_tokens),
                          max(0, event.usage.completion_tokens - tally.completion_tokens),
                          max(0.0, event.cost - tally.cost))
        # The agent run's own id keys the tallies of its error events and of the model calls
        # its policies make: no run.finished comes for it, so drop them here.
        self._open.pop(event.run_id, None)

    def _agent_tally(self, run_id: str) -> _AgentTally:
        tally = self._open_agents.get(run_id)
        if tally is None:
            if len(self._open_agents) >= MAX_OPEN_RUNS:  # forget the oldest: bounded memory
                self._open_agents.pop(next(iter(self._open_agents)))
            tally = self._open_agents[run_id] = _AgentTally()
        return tally

    def _agent_usage(self, pipeline: Labels, prompt: int, completion: int,
                     cost: float) -> None:
        self._agent_tokens[(*pipeline, ("direction", "input"))] += prompt
        self._agent_tokens[(*pipeline, ("direction", "output"))] += completion
        self._agent_cost[pipeline] += cost

    def _model_call(self, event: ModelCall) -> None:
        tally = self._tally(event)
        # A client names the model: one with a lone surrogate is shown (and so counted
        # and priced) as the exposition can hold it, with U+FFFD.
        model = utf8_value(str(event.parameters.get("model") or event.component))
        key = (self._label("pipeline", event.pipeline), self._label("model", model))
        usage = event.usage
        pieces = tally.pieces.pop(event.component, 0)
        ttft = event.ttft_s if event.ttft_s is not None \
            else tally.first_token.pop(event.component, None)
        tally.first_token.pop(event.component, None)
        tally.models.pop(event.component, None)
        output = usage.completion_tokens or pieces
        self._calls[(*key, ("streamed", "true" if event.streamed else "false"))] += 1
        self._count_tokens(key, model, tally, usage.prompt_tokens, output)
        self._series(self._call_latency, key, latency=True).observe(event.duration_s)
        if event.streamed and ttft is not None:
            self._series(self._ttft, key, latency=True).observe(ttft)
            if output > 1:
                self._series(self._tpot, key, latency=False).observe(
                    (event.duration_s - ttft) / (output - 1))
        tally.model = model
        tally.calls += 1

    def _count_tokens(self, key: Labels, model: str, tally: _RunTally, prompt: int,
                      output: int) -> None:
        self._tokens[(*key, ("direction", "input"))] += prompt
        self._tokens[(*key, ("direction", "output"))] += output
        price = self.options.prices.get(model)  # the whole name, not the label it shows as
        if price is None:
            self._unpriced[key] += 1
        else:
            cost = price.cost(prompt, output)
            self._cost[key] += cost
            tally.cost += cost
        tally.prompt_tokens += prompt
        tally.completion_tokens += output

    def _run_finished(self, event: RunFinished) -> None:
        tally = self._open.pop(event.run_id, None) or _RunTally()
        pipeline = (self._label("pipeline", event.pipeline),)
        self._runs[(*pipeline, self._label("status", event.status))] += 1
        if tally.cache_hit:
            self._cache_hits[pipeline] += 1
        self._series(self._run_latency, pipeline, latency=True).observe(event.duration_s)
        # A stream cut short never produced a backend.call: count what it did produce.
        for component, pieces in tally.pieces.items():
            # Named as its backend.call would have named it, so its price applies.
            model = utf8_value(tally.models.get(component) or component)
            key = (*pipeline, self._label("model", model))
            self._calls[(*key, ("streamed", "true"))] += 1
            self._count_tokens(key, model, tally, 0, pieces)
            first = tally.first_token.get(component)
            if first is not None:
                self._series(self._ttft, key, latency=True).observe(first)
            tally.model = tally.model or model
            tally.calls += 1
        if self.options.log_runs:
            log.info("run.summary", run_id=event.run_id, pipeline=event.pipeline,
                     status=event.status, duration_s=round(event.duration_s, 6),
                     model=tally.model or None, model_calls=tally.calls,
                     prompt_tokens=tally.prompt_tokens,
                     completion_tokens=tally.completion_tokens, cost_usd=tally.cost,
                     ttft_s=tally.ttft, cache_hit=tally.cache_hit, errors=tally.errors)

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every metric as plain data, percentiles included (for tests and JSON)."""

        def quantiles(table: dict[Labels, Series]) -> dict[str, dict[str, float]]:
            return {_key(k): {f"p{round(q * 100)}": s.quantile(q) for q in QUANTILES}
                    | {"count": s.count, "sum": s.total} for k, s in table.items()}

        error_rate, cache_hit_rate = self._ratios()
        return {
            "runs": {_key(k): n for k, n in self._runs.items()},
            "run_latency": quantiles(self._run_latency),
            "stages": {_key(k): n for k, n in self._stages.items()},
            "stage_latency": quantiles(self._stage_latency),
            "model_calls": {_key(k): n for k, n in self._calls.items()},
            "tokens": {_key(k): n for k, n in self._tokens.items()},
            "cost_usd": {_key(k): c for k, c in self._cost.items()},
            "unpriced_calls": {_key(k): n for k, n in self._unpriced.items()},
            "call_latency": quantiles(self._call_latency),
            "ttft": quantiles(self._ttft),
            "tpot": quantiles(self._tpot),
            "errors": {_key(k): n for k, n in self._errors.items()},
            "error_rate": error_rate,
            "cache_hit_rate": cache_hit_rate,
            "agent_runs": {_key(k): n for k, n in self._agent_runs.items()},
            "agent_steps": quantiles(self._agent_steps),
            "agent_duration": quantiles(self._agent_duration),
            "agent_tool_calls": {_key(k): n for k, n in self._tool_calls.items()},
            "agent_tool_errors": {_key(k): n for k, n in self._tool_errors.items()},
            "agent_tokens": {_key(k): n for k, n in self._agent_tokens.items()},
            "agent_cost": {_key(k): c for k, c in self._agent_cost.items()},
        }

    def _ratios(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per pipeline: the share of runs that ended in error, and of runs a cache
        answered."""
        runs_by_pipeline: Counter[str] = Counter()
        errors_by_pipeline: Counter[str] = Counter()
        # A copy (atomic under the GIL): a host's registry may collect from its HTTP
        # server's thread while runs finish on the loop (a new key mid-loop would raise).
        for labels, n in list(self._runs.items()):
            pipeline = dict(labels)["pipeline"]
            runs_by_pipeline[pipeline] += n
            if dict(labels)["status"] == "error":
                errors_by_pipeline[pipeline] += n
        return ({p: errors_by_pipeline[p] / n for p, n in runs_by_pipeline.items()},
                {p: self._cache_hits[(("pipeline", p),)] / n
                 for p, n in runs_by_pipeline.items()})

    def collect(self) -> Iterator[Any]:
        """This monitor's metric families as ``prometheus_client`` objects: the monitor is
        a custom collector, so ``registry.register(monitor)`` exposes its metrics through
        a host's own registry and ``/metrics`` (the default ``REGISTRY`` is never touched
        unless the host registers it there). Several monitors: :class:`MonitorCollector`.

        :raises ImportError: without ``prometheus_client`` (``aieng-monitoring[prometheus]``).
        """
        return iter(families([self.prometheus_text()]))

    def describe(self) -> Iterator[Any]:
        """The families' names and types, which a registry checks for clashes when the
        monitor is registered."""
        return MonitorCollector().describe()

    def prometheus_text(self) -> str:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def counter(name: str, help_text: str, table: Mapping[Labels, float]) -> None:
            # The text format names a counter's family with its _total suffix.
            lines.extend(metric_family(f"{name}_total", "counter", help_text,
                                       [("", dict(k), float(v))
                                        for k, v in sorted(table.items())]))

        def histogram(name: str, help_text: str, table: dict[Labels, Series]) -> None:
            samples = []
            for k, s in sorted(table.items()):
                samples.extend(histogram_samples(dict(k), s.bounds, s.counts, s.total, s.count))
            lines.extend(metric_family(name, "histogram", help_text, samples))
            quantile_samples = [("", {**dict(k), "quantile": str(q)}, s.quantile(q))
                                for k, s in sorted(table.items()) if s.count for q in QUANTILES]
            lines.extend(metric_family(
                f"{name}_recent", "gauge",
                f"{help_text} Nearest-rank quantile over the last {self.options.window} "
                "observations.", quantile_samples))

        counter("aieng_runs", "Finished pipeline runs by status.", self._runs)
        histogram("aieng_run_duration_seconds", "End-to-end run latency.", self._run_latency)
        counter("aieng_stages", "Finished stages by status.", self._stages)
        histogram("aieng_stage_duration_seconds", "Stage latency.", self._stage_latency)
        counter("aieng_model_calls", "Model calls by model and streaming.", self._calls)
        counter("aieng_tokens", "Tokens by model and direction (input, output).", self._tokens)
        counter("aieng_cost_usd", "Cost in USD from the price table, by model.", self._cost)
        counter("aieng_unpriced_calls", "Model calls whose model has no price.", self._unpriced)
        histogram("aieng_model_call_duration_seconds", "Model call latency.",
                  self._call_latency)
        histogram("aieng_ttft_seconds", "Time to first token of streamed calls.", self._ttft)
        histogram("aieng_tpot_seconds", "Time per output token of streamed calls.",
                  self._tpot)
        counter("aieng_hook_errors", "Hook impl failures by stage, plugin and policy.",
                self._errors)
        counter("aieng_cache_hits", "Runs answered by a cache.", self._cache_hits)
        counter("aieng_agent_runs", "Finished agent runs by status.", self._agent_runs)
        histogram("aieng_agent_steps", "Steps per finished agent run.", self._agent_steps)
        histogram("aieng_agent_run_duration_seconds", "Agent run latency.",
                  self._agent_duration)
        counter("aieng_agent_tool_calls", "Tool calls of agent steps by tool.",
                self._tool_calls)
        counter("aieng_agent_tool_errors", "Tool calls whose result was an error, by tool.",
                self._tool_errors)
        counter("aieng_agent_tokens", "Tokens of agent runs' model calls by direction "
                "(input, output).", self._agent_tokens)
        counter("aieng_agent_cost", "Cost of agent runs, in the unit of the agents' prices "
                "(AgentOptions).", self._agent_cost)
        # Not self.snapshot(): it would sort every latency window again for nothing.
        error_rate, cache_hit_rate = self._ratios()
        lines.extend(metric_family("aieng_error_ratio", "gauge",
                                   "Share of runs that ended in error.",
                                   [("", {"pipeline": p}, r)
                                    for p, r in sorted(error_rate.items())]))
        lines.extend(metric_family("aieng_cache_hit_ratio", "gauge",
                                   "Share of runs answered by a cache.",
                                   [("", {"pipeline": p}, r)
                                    for p, r in sorted(cache_hit_rate.items())]))
        return "\n".join(lines) + "\n"


def _key(labels: Labels) -> str:
    """A label set as ``a=1,b=2`` (the snapshot's keys)."""
    return ",".join(f"{k}={v}" for k, v in labels)
