"""The benchmark scripts can be rerun as documented: ``--help``, bad options, tiny runs.

Each script runs as a user runs it (``.venv/bin/python benchmarks/NAME.py ...`` from the
repository root) in a subprocess. Only the cheapest scripts run end to end, at a tiny
size and with no timing asserted; the others are checked through ``--help`` and through
argparse refusing values that used to end in a traceback after the slow part of a run.
Scripts whose peers or data are missing are skipped, never installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _needs(*modules: str) -> None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)}")


def test_every_script_is_listed_in_the_readme() -> None:
    readme = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    assert SCRIPTS
    assert [s for s in SCRIPTS if f"`{s}`" not in readme] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    done = _run(f"benchmarks/{script}", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("script", "args", "option"), [
    ("eval_runner.py", ["--delay", "-1"], "--delay"),
    ("eval_runner.py", ["--delay", "nan"], "--delay"),
    ("embed_batching.py", ["--rates", "0"], "--rates"),
    ("embed_batching.py", ["--rates", "-1"], "--rates"),
    ("embed_batching.py", ["--calibrate", "0"], "--calibrate"),
    ("embed_batching.py", ["--batch-size", "0"], "--batch-size"),
    ("embed_batching.py", ["--max-wait-ms", "-5"], "--max-wait-ms"),
    ("bm25_synthetic.py", ["--rank-bm25-queries", "0"], "--rank-bm25-queries"),
    ("dense_search.py", ["--efs", "16,0"], "--efs"),
    ("gateway_latency.py", ["--duration", "0"], "--duration"),
    ("gateway_latency.py", ["--duration", "nan"], "--duration"),
])
def test_bad_values_are_usage_errors(script: str, args: list[str], option: str) -> None:
    """Refused by argparse (status 2, one usage line), not a traceback later in the run."""
    done = _run(f"benchmarks/{script}", *args)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert option in done.stderr.splitlines()[-1]


def test_eval_runner_tiny_json() -> None:
    done = _run("benchmarks/eval_runner.py", "--items", "3", "--delay", "0",
                "--concurrency", "2", "--repeats", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["items"] == 3 and result["repeats"] == 1
    assert result["sequential"]["concurrency"] == 1
    assert result["concurrent"]["concurrency"] == 2
    assert result["ratio"] > 0 and result["ideal_ratio"] == 2.0


def test_metrics_speed_tiny_json() -> None:
    _needs("rouge_score", "sacrebleu")
    done = _run("benchmarks/metrics_speed.py", "--pairs", "3", "--repeats", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["pairs"] == 3 and result["scores_equal"] is True
    assert {r["metric"] for r in result["results"]} >= {"BLEU (sentence)", "BLEU (corpus)"}


def test_metrics_speed_runaway_tiny_json() -> None:
    _needs("rouge_score", "sacrebleu")
    done = _run("benchmarks/metrics_speed.py", "--runaway", "300", "--repeats", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["tokens"] == 300 and result["ours_s"] > 0 and result["peer_s"] > 0


def test_guardrails_tiny_json(tmp_path: Path) -> None:
    out = tmp_path / "guardrails.json"
    done = _run("benchmarks/guardrails.py", "--docs", "2", "--repeats", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ASR" in done.stdout
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"suite", "throughput"} <= set(result)


def test_a_missing_peer_is_one_line_naming_the_package(tmp_path: Path) -> None:
    """``_peers.require`` exits with the pip line, before any work, not with a traceback."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); from _peers import require; "
            "require('json', 'rank_bm25_is_not_installed_here', 'Stemmer')")
    done = _run("-c", code)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "rank_bm25_is_not_installed_here" in line and "pip install" in line
    if importlib.util.find_spec("Stemmer") is None:
        assert "PyStemmer" in line  # the distribution's name, not the import's


def test_eval_runner_warms_up_before_the_timed_runs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The first run of a process pays one-off costs (imports, the hash cache): untimed.

    Without a warm-up it was the first *sequential* sample, so ``--repeats 1`` (or 2: a
    median of two is their mean) overstated the ratio (10x at concurrency 2, ideal 2x).
    """
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import eval_runner

    calls: list[tuple[int, int]] = []
    samples = iter([100.0, 4.0, 2.0])  # 100 s: what a one-off cost would add to a sample

    def fake_once(folder: Path, concurrency: int, delay: float, repeat: int) -> float:
        calls.append((concurrency, repeat))
        return next(samples)

    monkeypatch.setattr(eval_runner, "_once", fake_once)
    monkeypatch.setattr(sys, "argv", ["eval_runner.py", "--items", "4", "--concurrency", "2",
                                      "--repeats", "1", "--json"])
    eval_runner.main()
    result = json.loads(capsys.readouterr().out)
    assert len(calls) == 3 and calls[1:] == [(1, 0), (2, 0)]
    assert result["sequential"]["seconds"] == [4.0]
    assert result["concurrent"]["seconds"] == [2.0]
    assert result["ratio"] == 2.0


def test_judge_agreement_json_is_strict_json_when_a_statistic_is_undefined(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A judge giving every answer the same score has no Spearman ρ (NaN).

    docs/benchmarks.md reports such a run ("undefined (all scores 1)"); its ``--json`` file
    held a bare ``NaN``, which JSON does not allow (``jq`` and browsers refuse the file).
    The undefined statistic is now ``null``. The model is replaced by constant scores.
    """
    pytest.importorskip("aieng_transformers")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import aieng_transformers
    import anyio
    import judge_agreement

    class NoModel:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def load(self) -> None:
            pass

    async def constant(kernel: object, backend: object, items: list[object],
                       rationale: bool) -> tuple[list[float | None], float]:
        return [1.0] * len(items), 0.0

    monkeypatch.setattr(aieng_transformers, "SmolLM2Backend", NoModel)
    monkeypatch.setattr(judge_agreement, "run_rubric", constant)
    out = tmp_path / "judge.json"
    argv = ["--limit", "1", "--skip-pairwise", "--json", str(out)]
    assert anyio.run(judge_agreement.main, argv) == 0

    def refuse(name: str) -> None:
        raise AssertionError(f"not JSON: {name}")

    result = json.loads(out.read_text(encoding="utf-8"), parse_constant=refuse)
    rubric = result["pointwise"][0]
    assert rubric["system"].startswith("rubric") and rubric["spearman"] is None
    assert rubric["kappa_quadratic"] == 0.0
