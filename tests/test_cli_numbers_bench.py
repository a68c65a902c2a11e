"""The benchmark harness's numbers: percentiles by the rule the README states (nearest
rank) against an independent computation, and tiny counts that used to divide by zero or
take a percentile of no samples. No timing is asserted and no benchmark is run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import anyio
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _script(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _by_definition(values: list[float], percent: int) -> float:
    """The smallest sample that at least ``percent`` % of the samples are at or below."""
    n = len(values)
    return min(v for v in values
               if Fraction(sum(x <= v for x in values)) >= Fraction(percent * n, 100))


_SAMPLES = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300)


@given(_SAMPLES, st.integers(1, 100))
def test_nearest_rank_is_the_percentile_by_its_definition(values: list[float],
                                                          percent: int) -> None:
    nearest_rank = _script("_stats").nearest_rank
    found = nearest_rank(values, percent)
    assert found == _by_definition(values, percent)
    assert found == float(np.percentile(values, percent, method="inverted_cdf"))


@given(st.integers(1, 2000), st.sampled_from([50, 90, 95, 99, 99.9]))
def test_nearest_rank_has_no_float_error_at_exact_ranks(n: int, percent: float) -> None:
    """0.99 * n in floats lands a hair off an integer rank for some n: the rank is
    computed exactly (samples 1..n: the percentile is the rank itself)."""
    nearest_rank = _script("_stats").nearest_rank
    rank = -(-Fraction(str(percent)) * n // 100)
    assert nearest_rank([float(i) for i in range(n, 0, -1)], percent) == rank


def test_nearest_rank_refuses_no_samples() -> None:
    nearest_rank = _script("_stats").nearest_rank
    with pytest.raises(ValueError, match="no samples"):
        nearest_rank([], 50)
    with pytest.raises(ValueError, match="percent"):
        nearest_rank([1.0], 0)


def test_cache_bench_percentiles_by_nearest_rank() -> None:
    """p99 of 100 samples was the largest (index int(0.99 * 100) = 99), p50 of an even
    count the upper middle one."""
    percentiles = _script("cache_bench").percentiles
    samples = [float(1000 * i) for i in range(100, 0, -1)]  # 1..100 µs, in ns
    assert percentiles(samples) == (50.0, 99.0)
    assert percentiles([3000.0]) == (3.0, 3.0)


def test_cache_bench_at_fewer_lookups_than_four(tmp_path: Path) -> None:
    """``--lookups 3`` timed ``3 // 4 = 0`` SQLite lookups and whole runs, and their
    percentiles were an IndexError after the memory level was measured."""
    cache_bench = _script("cache_bench")
    result = anyio.run(cache_bench.bench_exact, 3, 1, tmp_path)
    assert set(result) == {"lookup_memory", "lookup_sqlite", "run_cached", "run_backend"}
    assert all(row["p50_us"] > 0 and row["p99_us"] >= row["p50_us"]
               for row in result.values())


def test_overhead_at_one_run_per_repeat() -> None:
    """``--runs 1`` timed haystack over ``1 // 2 = 0`` runs: a ZeroDivisionError after
    the other variants were measured."""
    for module in ("langchain_core", "haystack"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"not installed: {module}")
    done = subprocess.run([sys.executable, "benchmarks/overhead.py", "--runs", "1",
                           "--calls", "1", "--repeats", "1", "--skip-cli"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
