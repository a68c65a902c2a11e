"""The aieng command line: run, plugins, hooks; errors as clean messages and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aieng_core.cli import cli
from aieng_core.cli import _commands  # noqa: F401  (registers the commands)

DOCS = Path(__file__).parent / "fixtures" / "docs"

PIPELINE = """
[pipeline]
name = "cli-test"

[components.docs]
use = "memory"
documents = "{docs}"

[components.prompt]
use = "prompt"

[components.llm]
use = "extractive"
"""


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fusion.md").write_text(
        "# Fusion\n\nReciprocal rank fusion merges ranked lists from several retrievers. "
        "Each document scores one over k plus its rank.\n\n# Bus\n\nThe event bus delivers "
        "typed events to subscribers.\n", encoding="utf-8")
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.format(docs=docs), encoding="utf-8")
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, list(args), env={"AIENG_PLUGINS": "builtin"})
    return result.exit_code, result.stdout, result.stderr


def test_run_prints_answer_and_sources(pipeline_file: Path) -> None:
    """`aieng run` prints the extractive answer with its cited sources."""
    code, out, _ = invoke("run", str(pipeline_file), "how does rank fusion merge lists")
    assert code == 0, out
    assert "Reciprocal rank fusion merges ranked lists" in out and "[1]" in out
    assert "sources" in out and "fusion.md#0" in out


def test_run_json_has_every_artifact(pipeline_file: Path) -> None:
    """`aieng run --json` prints the RunResult: answer, hits, stages and events."""
    code, out, _ = invoke("run", str(pipeline_file), "event bus subscribers", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "ok" and data["answer"].startswith("The event bus")
    assert data["hits"][0]["document"]["title"] == "Bus"
    assert [s["name"] for s in data["stages"]] == ["retrieve", "context", "generate"]
    assert data["events"][0]["name"] == "run.started"
    call = next(e for e in data["events"] if e["name"] == "backend.call")
    assert call["messages"][0]["role"] == "system" and call["raw_output"] == data["answer"]


def test_run_explain_shows_prompt_raw_output_and_timings(pipeline_file: Path) -> None:
    """`--explain` shows the rendered prompt, the raw output and per-stage timings."""
    code, out, _ = invoke("run", str(pipeline_file), "rank fusion", "--explain")
    assert code == 0
    assert "prompt to llm" in out and "<system>" in out and "untrusted" in out
    assert "raw output" in out and "stages" in out and "retrieve" in out


def test_run_with_a_bad_file_exits_2_with_the_key(tmp_path: Path) -> None:
    """A malformed pipeline file exits 2 with file, key path and choices, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nname="x"\n[components.a]\nuse="nope"\n')
    code, out, err = invoke("run", str(bad), "hi")
    assert code == 2
    assert "components.a.use" in err and "valid choices" in err and "Traceback" not in err


def test_plugins_json_lists_the_builtin(pipeline_file: Path) -> None:
    """`aieng plugins --json` lists objects with the documented keys."""
    code, out, _ = invoke("plugins", "--json")
    assert code == 0
    rows = json.loads(out)
    builtin = next(r for r in rows if r["name"] == "builtin")
    assert set(builtin) == {"name", "distribution", "version", "components", "hooks", "status",
                            "error", "warning"}
    assert builtin["status"] == "loaded" and "memory" in builtin["components"]
    assert "aieng_retrieve" in builtin["hooks"]


def test_plugins_table() -> None:
    """`aieng plugins` renders a table with the built-in plugin."""
    code, out, _ = invoke("plugins")
    assert code == 0 and "builtin" in out and "loaded" in out


def test_plugins_table_shows_a_plugins_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """A loaded plugin made for another contract is listed with its warning, in full."""
    from aieng_core.cli import _present
    from aieng_core.registry import PluginInfo

    warning = "aieng-old 0.3 was made for aieng-hookspecs<0.1 and aieng-hookspecs 0.1.0 is"
    _present.plugins_table([PluginInfo("old", "aieng-old", "0.3", warning=warning),
                            PluginInfo("fine", "aieng-fine", "1.0")])
    out = " ".join(capsys.readouterr().out.split())
    assert f"old: {warning}" in out and "fine:" not in out


def test_hooks_lists_every_spec() -> None:
    """`aieng hooks --json` lists each hook with its role and call mode."""
    code, out, _ = invoke("hooks", "--json")
    rows = {r["hook"]: r for r in json.loads(out)}
    assert rows["aieng_retrieve"]["mode"] == "gather"
    assert rows["aieng_rerank"]["mode"] == "chain"
    assert rows["aieng_generate"]["role"] == "backend"


def test_hooks_table_keeps_bracketed_types() -> None:
    """`aieng hooks` shows the signatures' types whole (Rich markup ate "[str]")."""
    code, out, _ = invoke("hooks")
    assert code == 0
    assert "Sequence[str]" in "".join(out.split())


def test_broken_plugin_errors_are_shown_as_they_are(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    """A broken plugin's error with brackets in it is printed whole, not read as markup
    (``[/]`` crashed the listing)."""
    from aieng_core.cli._present import plugins_table
    from aieng_core.registry import PluginInfo

    plugins_table([PluginInfo("odd[x]", status="broken",
                              error="ValueError: bad [/] value [bold]here")])
    out = "".join(capsys.readouterr().out.split())
    assert "ValueError:bad[/]value[bold]here" in out and "odd[x]" in out


def test_console_script_runs_and_logs_json_to_a_pipe(tmp_path: Path) -> None:
    """The installed `aieng` runs a pipeline; its warnings reach a non-terminal stderr as
    JSON lines (here: a disabled-by-allowlist run that cannot find its component)."""
    exe = Path(sys.executable).with_name("aieng")
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname = "x"\n[components.llm]\nuse = "extractive"\n')
    proc = subprocess.run([str(exe), "run", str(path), "hello", "--json"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"


def test_stream_and_json_together_is_a_usage_error(pipeline_file: Path) -> None:
    """--stream with --json is refused: tokens would corrupt the JSON document."""
    code, _, err = invoke("run", str(pipeline_file), "x", "--stream", "--json")
    assert code == 2 and "cannot be combined" in err


@pytest.mark.parametrize("level", ["bogus", "CRITICAL"])
def test_a_bad_log_level_in_the_environment_is_a_usage_error(tmp_path: Path,
                                                              level: str) -> None:
    """An invalid $AIENG_LOG_LEVEL exits 2 with click's message naming the valid levels,
    not a KeyError traceback from the logging set-up (which read it before click did)."""
    exe = Path(sys.executable).with_name("aieng")
    env = {**os.environ, "AIENG_LOG_LEVEL": level}
    proc = subprocess.run([str(exe), "hooks", "--json"], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "AIENG_LOG_LEVEL" in proc.stderr and "warning" in proc.stderr.lower()


def test_an_empty_log_level_in_the_environment_means_the_default() -> None:
    """AIENG_LOG_LEVEL set to the empty string is taken as unset (WARNING), as shells
    leave it after ``export AIENG_LOG_LEVEL=``."""
    exe = Path(sys.executable).with_name("aieng")
    env = {**os.environ, "AIENG_LOG_LEVEL": ""}
    proc = subprocess.run([str(exe), "hooks", "--json"], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)


def test_configure_logging_rejects_an_unknown_level() -> None:
    """configure_logging names the valid levels for an unknown one (it raised KeyError)."""
    from aieng_core.logs import configure_logging

    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR"):
        configure_logging(level="verbose")


@pytest.mark.parametrize("args", [("--log-level", "ERROR", "--help"),
                                  ("--log-level", "ERROR", "no-such-command")])
def test_log_level_applies_to_plugin_loading(args: tuple[str, ...]) -> None:
    """--log-level holds for what plugins log while they load: click loads them to list or
    look up their commands, before the root callback ran (which set the level too late)."""
    exe = Path(sys.executable).with_name("aieng")
    env = {**os.environ, "AIENG_PLUGINS": "builtin,no-such-plugin"}
    env.pop("AIENG_LOG_LEVEL", None)
    quiet = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60,
                           check=False, env=env)
    loud = subprocess.run([str(exe), *args[2:]], capture_output=True, text=True, timeout=60,
                          check=False, env=env)
    assert "plugins.unknown_entries" in loud.stderr  # the warning the level must silence
    assert "plugins.unknown_entries" not in quiet.stderr, quiet.stderr


@pytest.fixture
def failing_command() -> Iterator[str]:
    """A sub-command, as a plugin adds one, that fails with a plugin's own exception (here a
    chat template refusing a system role, as jinja2 raises it)."""
    import jinja2

    @click.command("fails-in-plugin")
    def fails() -> None:
        raise jinja2.TemplateError("System role not supported")

    cli.add_command(fails)
    try:
        yield "fails-in-plugin"
    finally:
        cli.commands.pop("fails-in-plugin", None)


def test_a_plugin_commands_runtime_error_is_a_clean_message(failing_command: str) -> None:
    """A plugin command's exception (not an AiengError) exits 1 with one line naming it,
    not a traceback; --log-level DEBUG logs the traceback."""
    result = CliRunner().invoke(cli, [failing_command], env={"AIENG_PLUGINS": "builtin"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "aieng: error: TemplateError: System role not supported" in result.stderr
    assert "Traceback" not in result.stderr
    debug = CliRunner().invoke(cli, ["--log-level", "DEBUG", failing_command],
                               env={"AIENG_PLUGINS": "builtin"})
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


def test_click_errors_keep_their_exit_codes(failing_command: str) -> None:
    """Usage errors still exit 2 and --help 0 under the catch-all for plugin errors."""
    assert invoke(failing_command, "--bogus")[0] == 2
    assert invoke(failing_command, "--help")[0] == 0


SENTENCE = ("Set the key to a:b:c with :smile: intact, and keep this sentence long enough to pass "
            "the eighty columns a console wraps at.")


def test_run_prints_the_answer_as_it_is(tmp_path: Path) -> None:
    """The answer reaches stdout unchanged: Rich turned ":b:" and ":smile:" into emoji and
    broke long lines at 80 columns, altering the text a script reads."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keys.md").write_text(f"# Keys\n\n{SENTENCE}\n", encoding="utf-8")
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.format(docs=docs), encoding="utf-8")
    code, out, err = invoke("run", str(path), "key smile intact")
    assert code == 0, err
    assert out.splitlines()[0] == f"{SENTENCE} [1]"
    assert f"{docs / 'keys.md'}#0 Keys" in out


def test_a_plugin_command_cannot_shadow_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin adding a command a built-in (or an earlier plugin) has is refused with a
    message: `aieng run` runs the built-in (looked up before plugins load), so --help
    describing the plugin's would lie; its other commands are added."""
    from aieng_hookspecs import hookimpl

    from aieng_core import Kernel
    from aieng_core.cli._app import _Root

    class Clash:
        @hookimpl
        def aieng_register_commands(self, cli: click.Group) -> None:
            cli.add_command(click.Command("run", help="the plugin's run"))
            cli.add_command(click.Command("clash-own", help="the plugin's own"))

    kernel = Kernel(env={}, entry_points=[]).load()
    kernel.registry.plugin_manager.register(Clash(), name="clash")
    # Add plugin commands again (for this kernel); afterwards the flag is as it was, so
    # later tests in this process are not left with this kernel's commands only.
    assert isinstance(cli, _Root)
    monkeypatch.setattr(cli, "_plugins_added", False, raising=False)
    builtin_run = cli.commands["run"]
    try:
        result = CliRunner().invoke(cli, ["--help"], obj={"kernel": kernel})
        assert result.exit_code == 0, result.output
        assert "plugin 'clash' adds a command 'run' that 'aieng' already has" in result.stderr
        assert cli.commands["run"] is builtin_run
        assert "clash-own" in result.stdout
    finally:
        cli.commands["run"] = builtin_run
        cli.commands.pop("clash-own", None)



#: Runs a command with Ctrl-C as at a terminal: a shell's background job (as CI may run the
#: tests in) hands its children SIGINT ignored.
SIGINT_AS_AT_A_TERMINAL = [sys.executable, "-c", ("import os, signal, sys; "
                                                  "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                                  "os.execv(sys.argv[1], sys.argv[1:])")]


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops a running command with status 130, as shells report an
    interrupted program (click's 1 reads as an ordinary failure to a script), after
    "Aborted!" and no traceback."""
    import signal
    import socket

    exe = Path(sys.executable).with_name("aieng")
    # A model server that accepts the call and never answers: the run waits on it.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        path = tmp_path / "p.toml"
        path.write_text('[pipeline]\nname = "waits"\n[components.llm]\nuse = "openai"\n'
                        f'base_url = "http://127.0.0.1:{listener.getsockname()[1]}/v1"\n'
                        'model = "m"\nmax_retries = 0\n')
        proc = subprocess.Popen([*SIGINT_AS_AT_A_TERMINAL, str(exe), "run", str(path), "hi"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            connection, _ = listener.accept()  # the run is under way
            with connection:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert b"Aborted!" in err and b"Traceback" not in err and out == b""


def test_the_group_forgets_plugin_commands_for_the_next_kernel() -> None:
    """One process runs one command; tests run many on kernels with other plugins: after
    ``forget_plugins`` (the kit calls it after every test) the next kernel's plugins add
    their commands, and the commands the last ones added are gone."""
    from aieng_hookspecs import hookimpl

    from aieng_core import Kernel
    from aieng_core.cli._app import _Root

    assert isinstance(cli, _Root)

    class Adds:
        @hookimpl
        def aieng_register_commands(self, cli: click.Group) -> None:
            cli.add_command(click.Command("only-here", callback=lambda: click.echo("here")))

    bare = Kernel(env={}, entry_points=[]).load()
    assert CliRunner().invoke(cli, ["only-here"], obj={"kernel": bare}).exit_code == 2
    cli.forget_plugins()
    adding = Kernel(env={}, entry_points=[]).load()
    adding.registry.plugin_manager.register(Adds(), name="adds")
    result = CliRunner().invoke(cli, ["only-here"], obj={"kernel": adding})
    assert result.exit_code == 0 and result.stdout == "here\n"
    cli.forget_plugins()
    assert "only-here" not in cli.commands and "run" in cli.commands
