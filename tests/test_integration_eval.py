"""``aieng eval`` over a small dataset, as a user runs it from a shell: a run killed
outright part-way (SIGKILL of the ``aieng`` process, items in flight) and then run again
in the same directory ends with the same results and summary as a run never interrupted.

The pipeline is a scripted backend double and judges: a judge double (``words``) and the
real ``token-f1`` and ``exact-match`` metrics. The killed run is a real process: a small
launcher runs ``aieng`` (the click group's ``main``) on a kernel that also holds these
doubles, and its backend stops answering after a few items so that the kill finds some
items done, some in flight and some not started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aieng_eval
import anyio
import click
import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Request, Sample, Score
from click.testing import CliRunner

from aieng_core import Kernel
from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.testing import ScriptedBackend

PLUGINS = "builtin,eval,metrics,judge"
#: Set in the environment of a process whose backend hangs after this many answers.
HANG_AFTER = "AIENG_TEST_HANG_AFTER"

PIPELINE = """
[pipeline]
name = "graded"
stages = ["generate", "judge"]

[components.llm]
use = "scripted-answers"

[components.f1]
use = "token-f1"

[components.em]
use = "exact-match"

[components.words]
use = "word-judge"
"""


def answer(request: Request) -> str:
    """The double's answer: the question's last word, repeated by the question's length
    (so answers and scores differ between items)."""
    words = request.prompt.split()
    return " ".join([words[-1]] * (1 + len(words) % 3)) if words else "nothing"


class HangingBackend(ScriptedBackend):
    """Answers with :func:`answer`; with ``$AIENG_TEST_HANG_AFTER=N`` every call after
    the first N hangs (until the process is killed)."""

    def __init__(self) -> None:
        super().__init__(answer, model="scripted-1")
        self.answered = 0

    @hookimpl
    async def aieng_generate(self, request: Request) -> Any:
        limit = os.environ.get(HANG_AFTER)
        if limit is not None and self.answered >= int(limit):
            await anyio.sleep_forever()
        self.answered += 1
        return await super().aieng_generate(request)


class WordJudge:
    """A judge double: ``words``, the answer's word count."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score]:
        return [Score(name="words", value=float(len(sample.output.split())))]


class Doubles:
    """Registers the doubles the pipeline names."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("scripted-answers", HangingBackend)
        registry.add("word-judge", WordJudge)


def kernel() -> Kernel:
    """A kernel with the eval command, the metrics, and the doubles."""
    running = Kernel(env={"AIENG_PLUGINS": PLUGINS}, default_embedder=None,
                     loop_block_threshold=None).load()
    running.registry.register(Doubles(), name="doubles")
    return running


def main(args: list[str]) -> None:
    """What the launcher runs: ``aieng ARGS`` on :func:`kernel`."""
    cli.main(args, obj={"kernel": kernel()}, prog_name="aieng")


LAUNCHER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_integration_eval
test_integration_eval.main(sys.argv[1:])
"""

ITEMS = [
    {"id": "q1", "input": "What is rank fusion", "reference": "fusion"},
    {"id": "q2", "input": "Name the lexical scorer bm25", "reference": "bm25 bm25"},
    {"input": "Ünïcödé question about 東京", "reference": ["東京", "Tokyo"]},
    {"id": 7, "input": "Which cache is exact", "reference": "exact exact exact"},
    {"id": "q5", "input": "délta encoding", "metadata": {"lang": "fr"}},
    {"id": "q6", "input": "A question with no reference at all"},
    {"id": "q7", "input": "What does HNSW build graph", "reference": "graph graph"},
    {"id": "q8", "input": "emoji 🙂", "reference": "🙂", "slice": "emoji"},
    {"id": "q9", "input": "one", "reference": "one one"},
    {"id": "q10", "input": "Which router uses rules", "reference": "rules"},
    {"id": "q11", "input": "Is the answer cached", "reference": "cached cached"},
    {"id": "q12", "input": "last item of the set", "reference": "set"},
]


def records(out: Path) -> dict[str, dict[str, Any]]:
    """The run's results (one record per item id), without what differs between runs
    (timings, run ids)."""
    found = {}
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        found[str(record["id"])] = {key: record.get(key) for key in
                                    ("status", "output", "scores", "error")}
    return found


def metrics(out: Path) -> Any:
    """summary.json's metrics (means, intervals, counts) and item counts."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {key: value for key, value in summary.items()
            if key not in {"created", "duration_s", "started", "finished", "run_dir"}}


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_run_resumed_equals_a_run_never_interrupted(tmp_path: Path,
                                                             stop: signal.Signals) -> None:
    """``aieng eval`` killed (SIGKILL) or interrupted (Ctrl-C: SIGINT) with items done, in
    flight and not started, then run again with the same command: the resumed run only
    runs the unfinished items, and its results and summary are those of an uninterrupted
    run of the same dataset."""
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n"
                               for item in ITEMS), encoding="utf-8")
    pipeline = tmp_path / "graded.toml"
    pipeline.write_text(PIPELINE)
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    args = ["eval", "run", str(pipeline), str(dataset), "--seed", "3", "--samples", "200",
            "--concurrency", "3", "-q", "--json"]

    # In this process the root group's plugin commands are those of whichever kernel
    # first used it (another test's): a group of its own holds the eval commands.
    group = click.Group("aieng")
    aieng_eval.aieng_register_commands(group)
    whole = CliRunner().invoke(group, [*args, "--out", str(tmp_path / "whole")],
                               obj={"kernel": kernel()}, env={"AIENG_PLUGINS": PLUGINS})
    assert whole.exit_code == 0, whole.output

    out = tmp_path / "killed"
    env = {**os.environ, HANG_AFTER: "5", "AIENG_PLUGINS": PLUGINS, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(launcher), *args, "--out", str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        results = out / "results.jsonl"
        while not (results.exists() and len(results.read_text().splitlines()) >= 5):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run recorded nothing"
            time.sleep(0.02)
    finally:
        process.send_signal(stop)
        try:
            _, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == (-9 if stop == signal.SIGKILL else 130), err
    assert len(records(out)) == 5  # three hang in flight, four not started

    env.pop(HANG_AFTER)
    resumed = subprocess.run([sys.executable, str(launcher), *args, "--out", str(out)],
                             env=env, capture_output=True, text=True, timeout=60,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["ran"], summary["skipped"]) == (len(ITEMS) - 5, 5)
    assert records(out) == records(tmp_path / "whole")
    assert metrics(out) == metrics(tmp_path / "whole")
