"""The monitor in a host program that has its own Prometheus metrics: it never touches
``prometheus_client``'s default registry, and the host can expose one or several monitors
through a registry of its own, beside its own metrics, under asyncio and trio."""

from __future__ import annotations

import re
from typing import Any

import prometheus_client
import pytest
from aieng_monitoring import Monitor, MonitorCollector, MonitorOptions, format_float
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aieng_core.testing import ScriptedBackend, isolated_kernel, settle


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def _runs(monitor: Monitor) -> int:
    return sum(monitor.snapshot()["runs"].values())


async def _serve(kernel: Any, name: str, runs: int) -> Monitor:
    monitor = Monitor(MonitorOptions(log_runs=False))
    pipe = kernel.compose({"llm": ScriptedBackend(lambda request: "an answer"),
                           "monitor": monitor}, name=name)
    for _ in range(runs):
        await pipe.run("q")
    await settle(lambda: _runs(monitor) == runs)
    await pipe.aclose()
    return monitor


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_pipelines_with_monitors_leave_the_default_registry_alone() -> None:
    """Two pipelines with a monitor each, one closed and rebuilt under the same name, in a
    process whose host already registered a metric called ``aieng_runs_total`` in the
    default registry: nothing is added to the default registry (no ``Duplicated
    timeseries`` error, the host's metric unchanged)."""
    registry = prometheus_client.REGISTRY
    host = Counter("aieng_runs", "The host's own metric of the same name.")
    try:
        host.inc(7)
        before = set(registry._names_to_collectors)
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            for name in ("a", "b", "a"):
                await _serve(kernel, name, 2)
        assert set(registry._names_to_collectors) == before
        assert registry.get_sample_value("aieng_runs_total") == 7
    finally:
        registry.unregister(host)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_host_registry_exposes_several_monitors_beside_its_own_metrics() -> None:
    """``MonitorCollector(a, b)`` registered in the host's registry: one exposition with
    the host's metric and both pipelines' series, each family once; a rebuilt pipeline's
    monitor added next to the closed one's keeps the counter going up (2 + 3 runs)."""
    registry = CollectorRegistry()
    host = Counter("host_requests", "The host's own metric.", registry=registry)
    host.inc()
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        first_a = await _serve(kernel, "a", 2)
        collector = MonitorCollector(first_a, await _serve(kernel, "b", 1))
        registry.register(collector)
        samples = _samples(registry)
        assert samples[("host_requests_total", ())] == 1
        assert samples[("aieng_runs_total", (("pipeline", "a"), ("status", "ok")))] == 2
        assert samples[("aieng_runs_total", (("pipeline", "b"), ("status", "ok")))] == 1
        collector.add(await _serve(kernel, "a", 3))  # "a" closed and rebuilt
        samples = _samples(registry)
        assert samples[("aieng_runs_total", (("pipeline", "a"), ("status", "ok")))] == 5
        assert samples[("aieng_run_duration_seconds_count", (("pipeline", "a"),))] == 5
        assert samples[("aieng_error_ratio", (("pipeline", "a"),))] == 0
        collector.remove(first_a)
        samples = _samples(registry)
        assert samples[("aieng_runs_total", (("pipeline", "a"), ("status", "ok")))] == 3


def test_one_monitor_is_a_collector_and_clashes_are_the_registry_s_to_refuse() -> None:
    """``registry.register(monitor)`` works (the monitor is a custom collector); a second
    monitor registered in the same registry is refused there, at registration, naming the
    clash (not a scrape Prometheus rejects), ``auto_describe`` or not."""
    for auto in (False, True):
        registry = CollectorRegistry(auto_describe=auto)
        registry.register(Monitor())
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(Monitor())
        assert ("aieng_runs_total" in generate_latest(registry).decode())


def test_large_counter_values_read_back_exactly() -> None:
    """Values from 1e15 up are written as Python's shortest repr (``1e+16``,
    ``1000000000000000.0``): a float literal both Go's ParseFloat (Prometheus) and
    ``prometheus_client``'s parser read back as the same value, never cut to an integer
    string that would lose its exponent."""
    for value in (1e15, 1e15 + 2, float(2**53), 1e16, 123456789012345678.0, 1.5e300):
        text = f"# TYPE big_total counter\nbig_total {format_float(value)}\n"
        (family,) = text_string_to_metric_families(text)
        assert family.samples[0].value == value
        assert re.fullmatch(r"-?\d+(\.\d+)?(e[+-]\d+)?", format_float(value))
