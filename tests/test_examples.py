"""The example pipelines load with the installed plugins, and the evaluation example runs
end to end through ``aieng eval`` (the extractive backend: no model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aieng_core import Kernel

ROOT = Path(__file__).resolve().parents[1]
# rerank-demo needs the example plugin installed (tests/test_discovery.py runs it so).
PIPELINES = sorted(p for p in (ROOT / "examples" / "pipelines").glob("*.toml")
                   if p.stem != "rerank-demo")

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
async def test_every_example_pipeline_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every component of every example resolves to an installed plugin with valid options
    (loading builds the components; models and indexes open lazily, on the first run)."""
    monkeypatch.chdir(ROOT)  # the examples name paths from the repository's root, as documented
    async with Kernel() as kernel:
        pipeline = kernel.load_pipeline(path)
        assert pipeline.components
        assert not [p for p in kernel.registry.plugins if p.status == "broken"]


def test_the_evaluation_example_runs(tmp_path: Path) -> None:
    """``aieng eval`` on the example dataset writes results, a lockfile and both reports,
    and every item is scored by the three judges of the pipeline."""
    out = tmp_path / "run"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aieng"), "eval",
         str(ROOT / "examples" / "pipelines" / "eval-docs-qa.toml"),
         str(ROOT / "examples" / "datasets" / "docs-qa.jsonl"),
         "--out", str(out), "--quiet", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 10
    for name in ("lock.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    metrics = {name for item in results for name in item["scores"]}
    assert {"token_f1", "rouge1", "instruction.words"} <= metrics
