"""What the CLI shows in a host's environment: paths typed under an ASCII locale, and the
scores of any scorer (a cross-encoder's logits, a probability, a raw dot product)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Hit, Query
from click.testing import CliRunner

from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.cli._present import plugins_table, score_text, visible
from aieng_core.registry import PluginInfo
from aieng_core.testing import kernel_with

#: The real console script, as a script starts it.
AIENG = str(Path(sys.executable).with_name("aieng"))
#: An ASCII locale: Python hands the UTF-8 bytes of an argument on as lone surrogates.
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
            "AIENG_PLUGINS": "builtin", "OMP_NUM_THREADS": "1"}


def test_visible_shows_undecoded_utf8_bytes_as_their_letters() -> None:
    """A run of surrogate escapes that is UTF-8 (``d\\udcc3\\udcbcr``, "dür" typed under
    LC_ALL=C) was shown as those escapes; it is the letters now. A byte no UTF-8 sequence
    holds, a cut sequence and other lone surrogates stay as they were, and a control
    character the bytes decode to (U+009B, the C1 CSI) is still an escape."""
    assert visible("/tmp/d\udcc3\udcbcr/p.toml") == "/tmp/dür/p.toml"
    assert visible("\udcf0\udc9f\udc8d\udcae pie") == "\U0001f36e pie"
    assert visible("caf\udce9") == "caf\udce9"  # Latin-1 "é": no UTF-8
    assert visible("x\udcc3 \udcc3\udcbc") == "x\udcc3 ü"  # a cut sequence, then a whole one
    assert visible("half \ud83d emoji") == "half \ud83d emoji"  # not an undecoded byte
    assert visible("\udcc2\udc9b2J\x1b[0m\r\nok") == "\\x9b2J\\x1b[0m\nok"


def _c_locale(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([AIENG, *args], cwd=cwd, capture_output=True, timeout=60,
                          check=False, env={**os.environ, **C_LOCALE})


def test_a_path_typed_under_the_c_locale_is_shown_as_typed(tmp_path: Path) -> None:
    """Under LC_ALL=C (Python's UTF-8 mode off) `aieng run "dür/p.toml"` said
    ``aieng: error: d\\udcc3\\udcbcr/p.toml: file not found`` and `aieng index` a usage
    error with the same escapes: both name the path as the user typed it."""
    folder = tmp_path / "dür"
    folder.mkdir()
    done = _c_locale(tmp_path, "run", "dür/p.toml", "hi")
    assert done.returncode == 2
    assert "dür/p.toml" in done.stderr.decode("utf-8"), done.stderr
    assert b"\\udc" not in done.stderr
    (folder / "p.toml").write_text('[pipeline]\nname = "p"\n[components.docs]\n'
                                   'use = "memory"\n', encoding="utf-8")
    done = _c_locale(tmp_path, "index", "dür/p.toml", "dür/missing.md")
    assert done.returncode == 2
    assert "dür/missing.md does not exist" in done.stderr.decode("utf-8"), done.stderr
    assert b"\\udc" not in done.stderr


def test_a_usage_error_escapes_the_control_characters_of_a_path(tmp_path: Path) -> None:
    """A usage error naming a path the user gave (``PATHS: X does not exist``) wrote its
    control characters to the terminal as they were (a file name can hold ESC): they are
    escapes now, as in every other message."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n[components.docs]\nuse = "memory"\n')
    result = CliRunner().invoke(cli, ["index", str(pipeline), "x\x1b]52;c;aGk=\x07.md"],
                                env={"AIENG_PLUGINS": "builtin"})
    assert result.exit_code == 2
    assert "x\\x1b]52;c;aGk=\\x07.md does not exist" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_aieng_plugins_escapes_a_broken_plugins_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`aieng plugins` wrote a broken plugin's error as rich's Text leaves it: BEL dropped
    but ESC kept, so an error holding a path could open an escape sequence (OSC 52 sets
    the clipboard). The error is :func:`visible` now, an undecoded UTF-8 path as typed."""
    error = "ImportError: /tmp/d\udcc3\udcbcr/x\x1b]52;c;aGk=\x07.py"
    plugins_table([PluginInfo(name="bad\x1b[2J", status="broken", error=error),
                   PluginInfo(name="odd", warning="made for \x1b[31mred")])
    out = capsys.readouterr().out
    assert "\x1b" not in out, out
    assert "/tmp/dür/x\\x1b]52;c;aGk=\\x07.py" in out and "made for \\x1b[31mred" in out


@pytest.mark.parametrize(("score", "shown"), [
    (0.8123456, "0.8123"), (12.345678, "12.35"), (-12.345678, "-12.35"), (1.0, "1.000"),
    (0.001, "0.001000"), (1234.5, "1234"), (1e-5, "1.000e-05"), (-0.0004, "-4.000e-04"),
    (3.2e7, "3.200e+07"), (0.0, "0"),
])
def test_score_text_keeps_four_significant_digits(score: float, shown: str) -> None:
    """A score keeps four significant digits and its sign at any size (``:.3f`` showed
    1e-5 as 0.000 and -0.0004 as -0.000), in plain decimals from 0.001 to 9999."""
    assert score_text(score) == shown


#: The scores a reranker double gives the hits, best first.
ODD_SCORES = (3.2e7, 1e-5, -12.345678)


class OddScores:
    """A reranker double: the same order, the scores of :data:`ODD_SCORES`."""

    @hookimpl
    def aieng_rerank(self, query: Query, hits: list[Hit], k: int) -> list[Hit]:
        return [attrs.evolve(h, score=s) for h, s in zip(hits, ODD_SCORES)][:k]


def _reranked_pipeline(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a", "b", "c"):
        (docs / f"{name}.md").write_text(f"# {name}\n\npluggy is a plugin system {name}\n")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f'[pipeline]\nname = "t"\n[components.docs]\nuse = "memory"\n'
                        f'documents = "{docs}"\n[components.rerank]\nuse = "odd"\n'
                        '[components.prompt]\nuse = "prompt"\n'
                        '[components.llm]\nuse = "extractive"\n')
    return pipeline


@pytest.mark.parametrize("command", ["ask", "run"])
def test_run_and_ask_show_any_score_with_its_size_and_sign(
        tmp_path: Path, command: str) -> None:
    """`aieng ask` and `aieng run` showed a cross-encoder's 1e-5 as 0.000 and -12.345678
    as -12.346 beside 32000000.000: each keeps its size now, and --json the exact
    floats."""
    pipeline = _reranked_pipeline(tmp_path)

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, [command, str(pipeline), "what is pluggy", *args],
                                    obj={"kernel": kernel_with({"odd": OddScores})})
        assert result.exit_code == 0, result.output
        return result.stdout

    out = invoke()
    shown = [line for line in out.splitlines() if "3.200e+07" in line or "1.000e-05" in line
             or "-12.35" in line]
    assert len(shown) == 3, out
    assert "0.000)" not in out and "-12.346" not in out
    data = json.loads(invoke("--json"))
    assert [h["score"] for h in data["hits"]] == list(ODD_SCORES)
