"""The example pipelines load with the installed plugins, the evaluation example runs
end to end through ``aieng eval`` (the extractive backend: no model needed), and the
snippets of the README and the guides run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import click
import pytest
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Request
from click.testing import CliRunner

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend, registered, settle

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


# ---------------------------------------------------------------------------- doc snippets
# The README and the guides say their snippets run as written; these tests keep them so.

DOCS = ROOT / "docs"
GUIDE = DOCS / "plugin-authors.md"


def _blocks(path: Path, language: str) -> list[str]:
    """The fenced code blocks of one language in a Markdown file, in order (blocks indented
    inside list items are left out)."""
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def _block(path: Path, language: str, marker: str) -> str:
    """The one block of ``path`` containing ``marker``."""
    found = [block for block in _blocks(path, language) if marker in block]
    assert len(found) == 1, f"{path.name}: {len(found)} {language} blocks contain {marker!r}"
    return found[0]


def _module(name: str, code: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``code`` run as the module ``name`` (in ``sys.modules``, so attrs / cattrs resolve
    its annotations), as a user's file would be."""
    module = ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, f"<{name}>", "exec"), module.__dict__)  # noqa: S102
    return module


PROGRAMS = [
    pytest.param(code, id=f"{path.stem}-{n}")
    for path in (ROOT / "README.md", DOCS / "user-guide.md")
    for n, code in enumerate(_blocks(path, "python"))
    if "anyio.run(main)" in code
]
DOC_PIPELINES = [
    pytest.param(code, id=f"{path.stem}-{n}")
    for path in (ROOT / "README.md", DOCS / "user-guide.md", DOCS / "evaluation.md")
    for n, code in enumerate(_blocks(path, "toml"))
    if "[pipeline]" in code
]


def test_the_docs_have_snippets_to_test() -> None:
    """The selections below are not empty (a changed fence would silently test nothing)."""
    assert len(PROGRAMS) >= 7 and len(DOC_PIPELINES) >= 3


@pytest.mark.parametrize("code", PROGRAMS)
def test_every_program_of_the_readme_and_user_guide_runs(
    code: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each complete program (``anyio.run(main)``) runs from the repository root as written
    and prints what it says it prints."""
    monkeypatch.chdir(ROOT)
    exec(compile(code, "<doc snippet>", "exec"), {"__name__": "__doc_snippet__"})  # noqa: S102
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("code", DOC_PIPELINES)
async def test_every_pipeline_file_of_the_docs_loads(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pipeline file shown in the README, the user guide and the evaluation guide loads
    with the installed plugins (unknown components or options would fail here)."""
    monkeypatch.chdir(ROOT)
    async with Kernel() as kernel:
        pipeline = kernel.pipeline(tomllib.loads(code))
        assert pipeline.components


def test_the_plugin_authors_guide_builds_a_plugin_that_passes_its_tests(
    tmp_path: Path,
) -> None:
    """The guide's plugin module, saved as it says, passes the guide's own tests: its unit
    and property tests, the ScriptedBackend example and the guardrail conformance suite."""
    package = tmp_path / "aieng_blocklist"
    package.mkdir()
    (package / "__init__.py").write_text(
        _block(GUIDE, "python", 'registry.add("blocklist"'), encoding="utf-8")
    tests = [code for code in _blocks(GUIDE, "python")
             if "def test_" in code or "class Test" in code]
    assert len(tests) == 3
    for n, code in enumerate(tests):
        (tmp_path / f"test_guide_{n}.py").write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


async def test_the_guides_plugin_blocks_through_its_pipeline_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``guarded.toml`` with the guide's plugin installed blocks the guide's question, its
    input verdict holding the finding; another question is answered."""
    monkeypatch.chdir(ROOT)
    plugin = _module("aieng_blocklist", _block(GUIDE, "python", 'registry.add("blocklist"'),
                     monkeypatch)
    config = tomllib.loads(_block(GUIDE, "toml", 'use = "blocklist"'))
    async with Kernel() as kernel:
        with registered(kernel, plugin, "blocklist") as info:
            assert info.status == "loaded", info.error
            pipeline = kernel.pipeline(config)
        blocked = await pipeline.run("What is the admin password?")
        assert blocked.status == "blocked" and blocked.completion is None
        [verdict] = blocked.input_verdicts
        [finding] = verdict.findings
        assert "What is the admin password?"[finding.start:finding.end] == "password"
        assert (await pipeline.run("What is reciprocal rank fusion?")).answer


async def test_the_guides_registration_snippets_load_beside_every_installed_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guide's event type and CLI command, in a plugin module of their own, load on a
    kernel with every installed plugin: no name clashes with a first-party plugin's."""
    events = _module("aieng_guide_events", _block(GUIDE, "python", "aieng_register_events"),
                     monkeypatch)
    commands = _module("aieng_guide_commands",
                       _block(GUIDE, "python", "aieng_register_commands"), monkeypatch)
    hit = events.BlocklistHit

    class Emitter:
        """Publishes the guide's event from a run, through its context, as the guide says."""

        @hookimpl
        def aieng_pipeline_open(self, context: PipelineContext) -> None:
            self.context = context

        @hookimpl
        def aieng_guard_input(self, request: Request) -> None:
            self.context.emit(hit(word="password"))

    async with Kernel() as kernel:
        for module in (events, commands):
            with registered(kernel, module, module.__name__) as info:
                assert info.status == "loaded", info.error
                if module is events:
                    assert kernel.registry.event_types[hit.name] is hit
                    pipeline = kernel.compose({"emit": Emitter(), "llm": ScriptedBackend()})
                    result = await pipeline.run("the admin password")
                    assert [e for e in result.events if isinstance(e, hit)]
    cli = click.Group()
    commands.aieng_register_commands(cli)
    result = CliRunner().invoke(cli, ["hello"])
    assert result.exit_code == 0 and result.output == "hello from my plugin\n"


async def test_the_guides_components_work_in_a_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's @blocking retriever finds lines of its file, and its event subscriber
    counts the tokens of the pipeline's model calls."""
    grep = _module("aieng_guide_grep", _block(GUIDE, "python", "class FileGrep"), monkeypatch)
    counter = _module("aieng_guide_counter", _block(GUIDE, "python", "class TokenCounter"),
                      monkeypatch)
    notes = tmp_path / "notes.txt"
    notes.write_text("rank fusion\nnothing\nreciprocal rank fusion\n", encoding="utf-8")
    async with Kernel() as kernel:
        tokens = counter.TokenCounter()
        pipeline = kernel.compose({"grep": grep.FileGrep(str(notes)), "tokens": tokens,
                                   "llm": ScriptedBackend(["three words here"])})
        result = await pipeline.run("rank fusion")
        assert [hit.document.text for hit in result.hits] == [
            "rank fusion", "reciprocal rank fusion"]
        await settle(lambda: tokens.tokens > 0)
        assert tokens.tokens == result.completion.usage.total_tokens


async def test_the_evaluation_guides_judge_scores_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge of "Writing a judge" scores the answer's words in the judge stage."""
    judge = _module("aieng_guide_judge",
                    _block(DOCS / "evaluation.md", "python", "class AnswerLength"), monkeypatch)
    async with Kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend(["three words here"]),
                                   "length": judge.AnswerLength()})
        result = await pipeline.run("How long?")
    assert [(score.name, score.value) for score in result.scores] == [("words", 3)]
