"""A run whose process is killed outright (SIGKILL, mid-run) resumes in the same run
directory and gives the summary an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _evalkit as kit
import anyio
import pytest
from aieng_eval import read_results, run_eval

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

_SCRIPT = """
import sys
import anyio
sys.path.insert(0, {tests!r})
import _evalkit as kit
from aieng_eval import run_eval
anyio.run(lambda: run_eval({pipeline!r}, {dataset!r}, out={out!r}, concurrency=3, seed=7,
                           kernel=kit.make_kernel(), hash_cache=None))
"""


def run(pipeline: Path, dataset: Path, out: Path, concurrency: int):  # type: ignore[no-untyped-def]
    return anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                      concurrency=concurrency, seed=7,
                                      hash_cache=out.parent / "hashes.json"))


def test_a_run_killed_mid_run_resumes_to_the_same_summary(tmp_path: Path) -> None:
    """The child is killed (SIGKILL) once some records are written and while items are in
    flight; the resume runs only the items without a record, and summary.json and
    report.md's numbers equal those of an uninterrupted run."""
    rows = [{"id": f"é{i}", "input": f"w{i} ünï 😀", "reference": f"w{i} ünï 😀"
             if i % 3 else "other", "metadata": {"lang": "fr" if i % 2 else "de"}}
            for i in range(40)]
    dataset = tmp_path / "ds.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pipeline = kit.pipeline_file(tmp_path)
    whole = run(pipeline, dataset, tmp_path / "whole", 8)
    killed = tmp_path / "killed"
    script = _SCRIPT.format(tests=str(Path(__file__).parent), pipeline=str(pipeline),
                            dataset=str(dataset), out=str(killed))
    # The child holds every answer past its 6th (an event never set): it cannot finish
    # before it is killed, however fast or slow the machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AIENG_CACHE_DIR": str(tmp_path / "c"),
           "EVALKIT_HOLD_AFTER": "6"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    results = killed / "results.jsonl"
    try:
        while child.poll() is None and not (
                results.exists() and results.read_bytes().count(b"\n") >= 4):
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    before = len(read_results(results))
    assert 4 <= before < 40
    resumed = run(pipeline, dataset, killed, 2)
    assert (resumed.ran, resumed.skipped) == (40 - before, before)
    sessions = json.loads((killed / "lock.json").read_text(encoding="utf-8"))["sessions"]
    assert [s["items"] for s in sessions] == [before, 40 - before]
    assert sessions[0]["finished_at"] is None
    assert [r.id for r in resumed.results] == [r.id for r in whole.results]
    summaries = [json.loads((d / "summary.json").read_text(encoding="utf-8"))
                 for d in (tmp_path / "whole", killed)]
    assert summaries[0] == summaries[1]
    assert summaries[0]["counts"] == {"total": 40, "ok": 40, "blocked": 0, "error": 0}
    reports = [(d / "report.md").read_text(encoding="utf-8").split("## Environment")[0]
               for d in (tmp_path / "whole", killed)]
    assert reports[0] == reports[1]
