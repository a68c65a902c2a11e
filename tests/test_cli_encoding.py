"""``--json`` on a terminal whose encoding is not UTF-8 (Latin-1, cp1252): an emoji the
stream cannot hold was written as the backslash escape ``\\U0001f600``, which is not valid
JSON. Every ``--json`` printer writes JSON escapes (``\\ud83c\\udf6e``) there instead, and
its output on a UTF-8 stream is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aieng_core.cli import _agent, _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.testing import ScriptedBackend, kernel_with

#: The real console script, as a user starts it.
AIENG = str(Path(sys.executable).with_name("aieng"))
DOC = "# Café\n\nThe café sells crème brûlée 🍮 in Zürich.\n"
RAG = ('[pipeline]\nname = "p"\nstages = ["retrieve", "context", "generate"]\n'
       '[components.docs]\nuse = "memory"\ndocuments = "docs"\n'
       '[components.prompt]\nuse = "prompt"\n[components.answer]\nuse = "extractive"\n')
AGENT = '[pipeline]\nname = "a"\n[components.llm]\nuse = "extractive"\n'
#: What differs from one run to the next: ids, clock times and durations.
VOLATILE = frozenset({"run_id", "ts", "duration_s", "stages_ms", "ttft_ms", "tpot_ms"})


def steady(data: Any) -> Any:
    """``data`` without the values that change from run to run."""
    if isinstance(data, dict):
        return {k: steady(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [steady(v) for v in data]
    return data


def aieng(tmp_path: Path, encoding: str, *args: str) -> bytes:
    """The standard output of ``aieng ARGS`` run with ``PYTHONIOENCODING=encoding``."""
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "cafe.md").write_text(DOC, encoding="utf-8")
    (tmp_path / "p.toml").write_text(RAG, encoding="utf-8")
    (tmp_path / "a.toml").write_text(AGENT, encoding="utf-8")
    done = subprocess.run([AIENG, *args], capture_output=True, cwd=tmp_path, timeout=60,
                          check=False, env={**os.environ, "AIENG_PLUGINS": "builtin",
                                            "PYTHONIOENCODING": encoding})
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    return done.stdout


@pytest.mark.parametrize("args", [("run", "p.toml", "crème"), ("ask", "p.toml", "crème"),
                                  ("agent", "a.toml", "crème brûlée 🍮")],
                         ids=["run", "ask", "agent"])
def test_json_on_a_latin1_stdout_is_valid_json_equal_to_the_utf8_one(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    latin1 = aieng(tmp_path, "latin-1", *args, "--json")
    utf8 = aieng(tmp_path, "utf-8", *args, "--json")
    assert latin1.isascii()  # every non-ASCII character a JSON escape
    assert "🍮".encode() in utf8  # unchanged on UTF-8: the text as it is
    data = json.loads(latin1.decode("latin-1"))
    assert steady(data) == steady(json.loads(utf8.decode("utf-8")))
    assert "🍮" in json.dumps(data, ensure_ascii=False)


def scripted_run(tmp_path: Path, charset: str, answer: str) -> str:
    """``aieng run --json`` in process on a stdout of ``charset`` (strict, as click's
    runner makes it), its backend answering ``answer``."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n[components.llm]\nuse = "s"\n',
                        encoding="utf-8")
    kernel = kernel_with({"s": lambda: ScriptedBackend([answer])})
    result = CliRunner(charset=charset).invoke(cli, ["run", str(pipeline), "hi", "--json"],
                                               obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("charset", ["latin-1", "cp1252", "iso8859-15"])
def test_json_escapes_what_the_stream_cannot_hold(tmp_path: Path, charset: str) -> None:
    out = scripted_run(tmp_path, charset, "crème 🍮")
    assert out.isascii()
    assert json.loads(out)["answer"] == "crème 🍮"


def test_json_on_utf8_writes_the_text_as_it_is(tmp_path: Path) -> None:
    out = scripted_run(tmp_path, "utf-8", "crème 🍮")
    assert '"answer": "crème 🍮"' in out


def test_ascii_json_printers_stay_ascii() -> None:
    """``plugins``, ``hooks`` and ``bench`` wrote ASCII JSON on any stream already: they
    still do, on UTF-8 too."""
    runner = CliRunner(charset="latin-1")
    kernel = kernel_with({"s": lambda: ScriptedBackend(["x"])})
    for command in (["plugins", "--json"], ["hooks", "--json"]):
        result = runner.invoke(cli, command, obj={"kernel": kernel})
        assert result.exit_code == 0, result.output
        assert result.stdout.isascii()
        assert isinstance(json.loads(result.stdout), list)
