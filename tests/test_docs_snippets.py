"""Every code block of the README and the guides is run by a test, or left out in a list below
with its reason: a block added to a page that no test runs and no list names fails here.

tests/test_examples.py runs the complete Python programs, loads the pipeline files and
builds the plugin authors' guide's plugin; this file runs the shell commands as a user
pastes them (in a scratch folder holding copies of ``docs/`` and the example pipelines,
with the repository's ``.venv``), the fragments that await ``pipeline.run`` on a pipeline
built elsewhere, and the guide's ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The pages whose blocks are accounted for here. Left out: docs/agents.md (its program is
#: run by tests/test_agent_props.py), docs/benchmarks.md (its commands are the benchmarks,
#: minutes each) and docs/hooks/ (generated, checked by ``python -m aieng_core._hookdoc``).
PAGES = [ROOT / "README.md", *(DOCS / name for name in (
    "index.md", "user-guide.md", "production.md", "evaluation.md", "plugin-authors.md",
    "decisions.md", "precision.md"))]

#: Shell commands of the pages that are not run here (a regular expression on the command,
#: as the page writes it, and the reason). Each must match a command of some page.
COMMANDS_LEFT_OUT = {
    r"^make (demo|test)\b": "installs the virtualenv and runs the models or the whole suite",
    r"aieng (index|ask|chat|agent|redteam|serve) examples/pipelines/"
    r"(rag|production|agent)\.toml": "loads MiniLM and SmolLM2: tens of CPU seconds each",
    r"^KEY=\$\(aieng keys create": "writes the user's key database; the gateway's tests "
                                   "(plugins/gateway/tests) create keys and serve",
    r"^curl |curl -sf .*/healthz": "needs `aieng serve` running (plugins/gateway/tests "
                                   "start it)",
    r"aieng bench retrieval .* \.\./shared/data/cranfield": "a collection outside the "
    "repository (tests/test_cli_rag.py benchmarks a small BEIR folder)",
    r"^aieng eval examples/pipelines/eval-docs-qa\.toml": "tests/test_examples.py runs it",
    r"^aieng eval compare .*docs-qa-smollm2": "needs an evaluation run of SmolLM2 (minutes)",
    r"^aieng eval calc-agent\.toml": "needs the OpenAI-compatible server the page names",
    r"^aieng plugin new|^cd aieng-my-boost|^pip install -e \.": "tests/test_cli_scaffold.py "
    "generates, tests and installs a package per role",
    r"^\.venv/bin/pip (un)?install": "changes the installed environment",
    r"^\.venv/bin/aieng run examples/pipelines/rerank-demo\.toml|^AIENG_DISABLE_PLUGINS=example":
        "needs the example plugin installed (tests/test_discovery.py runs it so)",
    r"^\.venv/bin/python -m pytest examples/aieng-example-plugin/tests":
        "the suite's testpaths hold examples/*/tests",
}

#: Python blocks run by neither file (a text the block contains, and the reason).
PYTHON_LEFT_OUT: dict[str, str] = {}


# ---------------------------------------------------------------------------- the blocks


def _blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of a page, in order, indented ones included."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"^ *```(\w*)\n(.*?)^ *```", text, re.DOTALL | re.MULTILINE)
    return [(language, textwrap.dedent(code)) for language, code in found]


def _commands(language: str, code: str) -> list[str]:
    """The commands of a shell block: ``console`` lines after ``$ ``, ``sh`` lines whole
    (continuations and quotes spanning lines joined, trailing comments dropped); output
    lines are not commands."""
    lines = code.replace("\\\n", " ").splitlines()
    if language == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    commands: list[str] = []
    pending = ""
    for line in lines:
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        command = re.sub(r"\s+#[^'\"]*$", "", pending).strip()
        pending = ""
        if command:
            commands.append(command)
    assert not pending, f"an unclosed quote: {pending!r}"
    return commands


def _all_commands() -> list[tuple[str, str]]:
    return [(path.name, command) for path in PAGES for language, code in _blocks(path)
            if language in ("sh", "console") for command in _commands(language, code)]


def _left_out(command: str) -> str | None:
    for pattern, reason in COMMANDS_LEFT_OUT.items():
        if re.search(pattern, command):
            return reason
    return None


COMMANDS = [pytest.param(command, id=f"{page}-{n}")
            for n, (page, command) in enumerate(_all_commands()) if _left_out(command) is None]


def test_every_block_of_the_pages_is_run_or_left_out_with_a_reason() -> None:
    """Each block is of a language some test runs, each left-out entry still matches a
    command (a stale entry would hide nothing), and some commands are run."""
    languages = {language for path in PAGES for language, _ in _blocks(path)}
    # "" is sample output (no language), "text" an error message quoted.
    assert languages <= {"python", "toml", "sh", "console", "", "text"}, languages
    commands = [command for _, command in _all_commands()]
    for pattern in COMMANDS_LEFT_OUT:
        assert any(re.search(pattern, command) for command in commands), pattern
    assert len(COMMANDS) >= 8


def _python_blocks() -> list[tuple[Path, str]]:
    return [(path, code) for path in PAGES for language, code in _blocks(path)
            if language == "python"]


def test_every_python_block_is_run_somewhere() -> None:
    """A Python block is a complete program (run by tests/test_examples.py), a fragment
    run below, one of the plugin guide's or evaluation guide's modules and tests (built
    and run by tests/test_examples.py), or listed in PYTHON_LEFT_OUT."""
    examples = (ROOT / "tests" / "test_examples.py").read_text(encoding="utf-8")
    markers = re.findall(r'_block\([A-Z_ /."a-z-]+, "python", [\'"](.+?)[\'"]\)', examples)
    assert markers, "tests/test_examples.py's markers moved"
    for path, code in _python_blocks():
        covered = ("anyio.run(main)" in code and path.name in ("README.md", "user-guide.md")
                   or code in FRAGMENTS
                   or any(marker in code for marker in markers)
                   or path.name == "plugin-authors.md" and ("def test_" in code
                                                            or "class Test" in code)
                   or any(text in code for text in PYTHON_LEFT_OUT))
        assert covered, f"{path.name}: no test runs the block\n{code[:300]}"


def test_every_toml_block_is_loaded_somewhere() -> None:
    """A TOML block is a pipeline file of the README, the user guide or the evaluation
    guide (loaded by tests/test_examples.py), the plugin guide's ``guarded.toml`` (run
    there with the guide's plugin) or its ``pyproject.toml`` (loaded below)."""
    for path in PAGES:
        for language, code in _blocks(path):
            if language != "toml":
                continue
            tomllib.loads(code)
            covered = ("[pipeline]" in code and path.name in (
                "README.md", "user-guide.md", "evaluation.md")
                or path.name == "plugin-authors.md" and ('use = "blocklist"' in code
                                                         or "[build-system]" in code))
            assert covered, f"{path.name}: no test loads the block\n{code[:300]}"


# ---------------------------------------------------------------------------- shell commands


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the repository root for the commands: copies of docs/ and the
    example pipelines and datasets, and the repository's .venv."""
    folder = tmp_path_factory.mktemp("checkout")
    shutil.copytree(DOCS, folder / "docs")
    for name in ("pipelines", "datasets"):
        shutil.copytree(ROOT / "examples" / name, folder / "examples" / name)
    (folder / ".venv").symlink_to(Path(sys.executable).parents[1])
    return folder


#: What a command's output must show besides a zero exit status (a text the command holds,
#: and a check of its stdout).
def _is_json_run(out: str) -> bool:
    data = json.loads(out)
    return data["status"] == "ok" and bool(data["completion"]["text"])


def _plugins_json(out: str) -> bool:
    """The keys the user guide says ``aieng plugins --json`` gives each plugin."""
    keys = {"name", "distribution", "version", "components", "hooks", "status", "error",
            "warning"}
    return all(set(plugin) == keys for plugin in json.loads(out))


def _answer_and_sources(out: str) -> bool:
    """The answer comes first, then its numbered sources (the user guide's first run)."""
    answer, _, sources = out.partition("\nsources\n")
    return "[1]" in answer and "  [1] docs/" in sources


CHECKS = {
    "--json": _is_json_run,
    "plugins --json": _plugins_json,
    "--explain": lambda out: "raw output" in out and "stages" in out,
    "aieng hooks": lambda out: "aieng_retrieve" in out and "gather" in out,
    '"What is reciprocal rank fusion?"': _answer_and_sources,
    "| .venv/bin/aieng run": _answer_and_sources,
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_shell_command_runs_as_written(command: str, scratch: Path) -> None:
    """The command, pasted into a shell at the repository root, exits 0 and prints what the
    page says it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{scratch / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for name in ("AIENG_PLUGINS", "AIENG_DISABLE_PLUGINS", "AIENG_LOG_LEVEL"):
        env.pop(name, None)
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
    checks = [check for text, check in CHECKS.items() if text in command]
    if "--json" in command and "plugins --json" in command:
        checks.remove(_is_json_run)
    for check in checks:
        assert check(done.stdout), done.stdout[-3000:]


# ---------------------------------------------------------------------------- fragments
# The user guide's "Structured output" and "Tool calls" fragments await `pipeline.run` on a
# pipeline with a local model; here the pipeline's backend is a script answering as the
# model would, so the fragments' own code (types, fields, metadata keys) is what is tested.

GUIDE = (DOCS / "user-guide.md").read_text(encoding="utf-8")
FRAGMENTS = [code for language, code in _blocks(DOCS / "user-guide.md")
             if language == "python" and "await pipeline.run" in code
             and "anyio.run(main)" not in code]


def _fragment(marker: str) -> str:
    [code] = [code for code in FRAGMENTS if marker in code]
    return code


async def _run_fragment(code: str, backend: ScriptedBackend,
                        monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run ``code`` as the body of an ``async def`` with ``pipeline`` bound (in a module
    of its own in ``sys.modules``, so pydantic resolves its annotations); its locals."""
    module = ModuleType("__doc_fragment__")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    source = ("async def fragment(pipeline):\n" + textwrap.indent(code, "    ")
              + "    return locals()\n")
    exec(compile(source, "<user-guide fragment>", "exec"), module.__dict__)  # noqa: S102
    async with Kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        found: dict[str, Any] = await module.fragment(pipeline)
    return found


def test_the_user_guide_has_its_two_fragments() -> None:
    assert len(FRAGMENTS) == 2


@pytest.mark.anyio
async def test_the_structured_output_fragment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fragment sends the Pydantic model's schema and validates the answer."""
    backend = ScriptedBackend(['{"name": "Paris", "population": 2102650}'])
    found = await _run_fragment(_fragment("response_schema"), backend, monkeypatch)
    assert found["city"].name == "Paris" and found["city"].population == 2102650
    [request] = backend.requests
    assert request.response_schema == found["City"].model_json_schema()


@pytest.mark.anyio
async def test_the_tool_calls_fragment(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The fragment offers the tool with ``tool_choice`` and prints each validated call."""
    from aieng_hookspecs.types import ToolCall

    backend = ScriptedBackend([[ToolCall(id="c1", name="get_weather",
                                         arguments={"city": "Paris"})]])
    await _run_fragment(_fragment("ToolSpec"), backend, monkeypatch)
    assert "get_weather city='Paris'" in capsys.readouterr().out.splitlines()
    [request] = backend.requests
    assert [tool.name for tool in request.tools] == ["get_weather"]
    assert request.metadata["tool_choice"] == "required"


# ---------------------------------------------------------------------------- pyproject


def test_the_plugin_guides_entry_point_loads_its_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's ``pyproject.toml`` names its module under the group ``aieng``: that
    entry point, for the guide's module saved as it says, loads the plugin ``blocklist``
    offering its component."""
    guide = DOCS / "plugin-authors.md"
    [project] = [tomllib.loads(code) for language, code in _blocks(guide)
                 if language == "toml" and "[build-system]" in code]
    [module] = [code for language, code in _blocks(guide)
                if language == "python" and 'registry.add("blocklist"' in code]
    package = tmp_path / "aieng_blocklist"
    package.mkdir()
    (package / "__init__.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    [(name, value)] = project["project"]["entry-points"]["aieng"].items()
    assert project["project"]["name"] == "aieng-blocklist"
    entry = metadata.EntryPoint(name=name, value=value, group="aieng")
    try:
        kernel = Kernel(env={}, entry_points=[entry])
        kernel.registry.load()
        [plugin] = [p for p in kernel.registry.plugins if p.name == "blocklist"]
        assert plugin.status == "loaded", plugin.error
        assert "blocklist" in kernel.registry.components
    finally:
        sys.modules.pop("aieng_blocklist", None)


# ---------------------------------------------------------------------------- a claim


@pytest.mark.anyio
async def test_concurrent_runs_of_the_first_pipeline_stay_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """"Runs of one pipeline may go on concurrently; each run's events stay apart": the
    user guide's first pipeline, run on many questions at once, gives each run the answer
    it gives alone and a trace holding only its own events."""
    import anyio

    monkeypatch.chdir(ROOT)
    questions = [f"{topic} {n}" for n in range(4) for topic in (
        "What is reciprocal rank fusion?", "Which stage renders the prompt?",
        "How are events delivered to slow subscribers?", "ünïcödé 検索 \u200b?")]
    async with Kernel() as kernel:
        pipeline = kernel.load_pipeline("examples/pipelines/docs-qa.toml")
        alone = {q: (await pipeline.run(q)).answer for q in questions}
        together: dict[str, Any] = {}

        async def ask(question: str) -> None:
            together[question] = await pipeline.run(question)

        async with anyio.create_task_group() as group:
            for question in questions:
                group.start_soon(ask, question)
    assert len({result.run_id for result in together.values()}) == len(questions)
    for question, result in together.items():
        assert result.answer == alone[question]
        assert {event.run_id for event in result.events} == {result.run_id}
        assert [e.name for e in result.events][::len(result.events) - 1] == [
            "run.started", "run.finished"]
