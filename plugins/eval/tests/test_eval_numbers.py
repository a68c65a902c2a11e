"""The numbers of a run and of a comparison are the same in every process: a run and a
``compare`` made in two processes with different string hash seeds (``PYTHONHASHSEED``:
the order of sets, and any ``hash()`` of a text) write the same results, summary, reports
and comparison, bit for bit (times and durations aside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import _evalkit as kit

_SCRIPT = """
import sys
import anyio
sys.path.insert(0, {tests!r})
import _evalkit as kit
from aieng_eval import run_eval, compare_runs, write_comparison
from pathlib import Path
out = Path({out!r})
for name, pipeline in (("a", {first!r}), ("b", {second!r})):
    anyio.run(lambda: run_eval(pipeline, {dataset!r}, out=out / name, concurrency=4, seed=3,
                               bootstrap_samples=200, kernel=kit.make_kernel(),
                               hash_cache=None))
write_comparison(compare_runs([out / "a", out / "b"], samples=50, seed=3), out / "cmp")
"""


def _run(tmp: Path, folder: str, hash_seed: str, first: Path, second: Path,
         dataset: Path) -> Path:
    out = tmp / folder
    script = _SCRIPT.format(tests=str(Path(__file__).parent), out=str(out), first=str(first),
                            second=str(second), dataset=str(dataset))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": hash_seed,
           "AIENG_CACHE_DIR": str(tmp / f"cache-{folder}")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _records(path: Path) -> list[dict[str, Any]]:
    """The results in file order less each item's ``duration_s`` (a time)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted(({k: v for k, v in row.items() if k != "duration_s"} for row in rows),
                  key=lambda row: row["id"])


def _page(path: Path) -> str:
    """A report without its environment section (times, paths of the run)."""
    text = path.read_text(encoding="utf-8")
    return text.split("## Environment")[0].split("<h2>Environment</h2>")[0]


def test_runs_and_comparisons_are_equal_across_hash_seeds(tmp_path: Path) -> None:
    """Two processes, hash seeds 1 and 2: results (sorted by id: concurrency decides the
    file's order), summary.json, report.md and report.html (less the environment), and
    comparison.json, compare.md and the comparison page are equal; texts of many scripts
    in ids, slices and labels (whose hashes differ between the seeds)."""
    rows = [{"id": f"é{i}-ключ", "input": f"w{i} {'日本' if i % 3 else 'ünï'}",
             "reference": f"w{i} 日本" if i % 4 else "other",
             "metadata": {"lang": ["fr", "de", "日本語", "ελ"][i % 4], "n": i % 3,
                          "flag": i % 2 == 0},
             "label": float(i % 2)} for i in range(24)]
    dataset = tmp_path / "ds.jsonl"
    dataset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
    first = kit.pipeline_file(tmp_path, name="first")
    second = kit.pipeline_file(tmp_path, mode="first", name="second")
    one = _run(tmp_path, "one", "1", first, second, dataset)
    two = _run(tmp_path, "two", "2", first, second, dataset)
    for run in ("a", "b"):
        assert _records(one / run / "results.jsonl") == _records(two / run / "results.jsonl")
        summaries = [json.loads((d / run / "summary.json").read_text(encoding="utf-8"))
                     for d in (one, two)]
        assert summaries[0] == summaries[1]
        assert summaries[0]["slices"]["lang"] and summaries[0]["agreement"]
        for page in ("report.md", "report.html"):
            assert _page(one / run / page) == _page(two / run / page)
    comparisons = [json.loads((d / "cmp" / "comparison.json").read_text(encoding="utf-8"))
                   for d in (one, two)]
    for comparison in comparisons:  # the run folders' paths differ: the rest must not
        for run in comparison["runs"]:
            run.pop("path")
    assert comparisons[0] == comparisons[1]
    assert comparisons[0]["ranking"]["games"] > 0
    assert _page(one / "cmp" / "compare.md") == _page(two / "cmp" / "compare.md")
    pages = [(d / "cmp" / "report.html").read_text(encoding="utf-8").replace(str(d), "RUN")
             for d in (one, two)]
    assert pages[0] == pages[1]
