"""What `aieng run` and `aieng ask` accept as their text: UTF-8, from argv or stdin."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)

PIPELINE = '[pipeline]\nname = "t"\n[components.llm]\nuse = "extractive"\n'


def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin,
                                env={"AIENG_PLUGINS": "builtin"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["run", "ask"])
def test_text_that_is_not_utf8_is_a_usage_error(pipeline: Path, command: str) -> None:
    """An argument typed in a Latin-1 terminal ("caf\\xe9") reaches Python as a lone
    surrogate: echoed by --json it made stdout invalid UTF-8 (jq refuses it). It is a usage
    error naming the argument."""
    code, out, err = invoke(command, str(pipeline), "caf\udce9", "--json")
    assert code == 2 and out == ""
    assert "not valid UTF-8" in err


def test_stdin_that_is_not_utf8_is_a_usage_error(pipeline: Path) -> None:
    """`aieng run PIPELINE -` with Latin-1 bytes on stdin is a usage error, not a
    UnicodeDecodeError (or, under the C locale, bytes smuggled into the JSON output)."""
    code, out, err = invoke("run", str(pipeline), "-", "--json", stdin=b"caf\xe9\n")
    assert code == 2 and out == ""
    assert "standard input" in err and "not valid UTF-8" in err


def test_stdin_text_is_read_as_utf8(pipeline: Path) -> None:
    """UTF-8 on stdin (a byte order mark dropped, as PowerShell pipes write one) is the text."""
    code, out, err = invoke("run", str(pipeline), "-", "--json",
                            stdin="\ufeffcafé ✓".encode())
    assert code == 0, err
    assert json.loads(out)["input"]["messages"][0]["content"] == "café ✓"


def test_every_built_in_option_has_a_help_text() -> None:
    """`aieng COMMAND --help` explains every option (`index --batch-size` had none)."""
    bench = cli.commands["bench"]
    assert isinstance(bench, click.Group)
    commands = [cli.commands[name] for name in ("run", "plugins", "hooks", "index", "ask")]
    for command in [*commands, bench.commands["retrieval"], cli]:
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"{command.name} {param.opts[0]} has no help"
