"""structlog: JSON when not a terminal, console otherwise; run ids bound per run."""

from __future__ import annotations

import io
import json

import anyio
import pytest
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from aieng_core import HookError, Kernel, Pipeline
from aieng_core.logs import configure_logging
from aieng_core.testing._kit import settle
from aieng_core.testing.doubles import ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Event, Hit, Query

pytestmark = pytest.mark.anyio


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_when_not_a_terminal() -> None:
    """A non-terminal stream gets one JSON object per line, with level and timestamp."""
    stream = io.StringIO()
    configure_logging(stream=stream, level="INFO")
    try:
        structlog.get_logger("t").info("thing.happened", count=3)
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue().strip())
    assert line["event"] == "thing.happened" and line["count"] == 3
    assert line["level"] == "info" and "timestamp" in line


def test_console_when_a_terminal_and_level_filtering() -> None:
    """A terminal gets the console renderer; events below the level are dropped."""
    stream = _Tty()
    configure_logging(stream=stream, level="WARNING")
    try:
        log = structlog.get_logger("t")
        log.info("quiet.info")
        log.warning("loud.warning", x=1)
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "loud.warning" in text and "quiet.info" not in text
    assert not text.lstrip().startswith("{")


async def test_run_id_is_bound_for_logs_inside_a_run(aieng_kernel: Kernel) -> None:
    """Anything a component logs during a run carries the run id and pipeline name."""
    class Chatty:
        @hookimpl
        def aieng_retrieve(self, query: Query) -> list[Hit]:
            structlog.get_logger("chatty").info("chatty.searching", text=query.text)
            return []

    pipeline = aieng_kernel.compose({"chatty": Chatty()}, name="logged")
    with capture_logs(processors=[merge_contextvars]) as logs:
        result = await pipeline.run("hello")
    (entry,) = [e for e in logs if e["event"] == "chatty.searching"]
    assert entry["run_id"] == result.run_id and entry["pipeline"] == "logged"


async def test_hook_failure_is_logged_with_the_run_id(aieng_kernel: Kernel) -> None:
    """A failing hook logs a warning naming hook and plugin, bound to the run."""
    class Broken:
        @hookimpl
        def aieng_retrieve(self) -> list[Hit]:
            raise OSError("disk gone")

    pipeline = aieng_kernel.compose({"broken": Broken()}, name="failing")
    with capture_logs(processors=[merge_contextvars]) as logs, pytest.raises(HookError):
        await pipeline.run("hello")
    (entry,) = [e for e in logs if e["event"] == "hook.failed"]
    assert entry["plugin"] == "broken" and entry["hook"] == "aieng_retrieve"
    assert entry["pipeline"] == "failing" and entry["run_id"]
    assert "disk gone" in entry["error"]


async def test_subscriber_logs_do_not_carry_the_context_of_who_built_the_pipeline(
        aieng_kernel: Kernel) -> None:
    """A component subscriber's failure is logged in the kernel's context with the event's
    run id, not in the context of the task that built the pipeline (a server building a
    pipeline per request had every later failure carry that first request's bound ids)."""
    class Failing:
        @hookimpl
        def aieng_on_event(self, event: Event) -> None:
            raise ValueError("monitor bug")

    built: list[Pipeline] = []

    async def build() -> None:
        structlog.contextvars.bind_contextvars(request_id="first")
        built.append(aieng_kernel.compose({"llm": ScriptedBackend(), "monitor": Failing()},
                                          stages=["generate"]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(build)
    with capture_logs(processors=[merge_contextvars]) as logs:
        result = await built[0].run("hi")
        await settle(lambda: sum(e["event"] == "bus.subscriber_failed" for e in logs)
                     == len(result.events))
    failures = [e for e in logs if e["event"] == "bus.subscriber_failed"]
    assert [e.get("request_id") for e in failures] == [None] * len(result.events)
    assert {e["run_id"] for e in failures} == {result.run_id}
    assert {e["subscriber"] for e in failures} == {"composed.monitor"}


_PROGRAM = """
import structlog
{setup}
from aieng_core import Kernel
Kernel()
structlog.get_logger("program").debug("debug.line")
structlog.get_logger("program").warning("warning.line")
"""


@pytest.mark.parametrize("own", [False, True])
def test_a_library_user_gets_warnings_on_stderr_not_debug_on_stdout(own: bool) -> None:
    """A program using the kernel without configuring structlog gets warnings on standard
    error and no debug lines in its standard output (structlog unconfigured prints every
    level there); a program that configured structlog first keeps its own set-up."""
    import os
    import subprocess
    import sys

    setup = ("structlog.configure(logger_factory=structlog.PrintLoggerFactory("
             "file=__import__('sys').stdout))") if own else ""
    env = {k: v for k, v in os.environ.items() if k != "AIENG_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", _PROGRAM.format(setup=setup)],
                          capture_output=True, text=True, timeout=120, check=True, env=env)
    if own:
        assert "debug.line" in proc.stdout and "warning.line" in proc.stdout
    else:
        assert proc.stdout == ""
        assert "warning.line" in proc.stderr and "debug.line" not in proc.stderr


def test_the_default_set_up_leaves_every_level_to_capture_logs() -> None:
    """The set-up a kernel gives an unconfigured program filters levels in a processor,
    so structlog's capture_logs (tests of programs and plugins) still sees info lines."""
    structlog.reset_defaults()
    try:
        Kernel(env={}, entry_points=[])
        assert structlog.is_configured()
        with capture_logs() as logs:
            structlog.get_logger("t").info("info.line")
        assert [entry["event"] for entry in logs] == ["info.line"]
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize(("no_color", "coloured"), [("1", False), ("", True)])
def test_no_color_turns_the_console_colours_off(monkeypatch: pytest.MonkeyPatch,
                                                no_color: str, coloured: bool) -> None:
    """NO_COLOR set to anything but "" (https://no-color.org) gives a terminal plain log
    lines, as rich's output already is; unset or empty, the console lines are coloured."""
    monkeypatch.setenv("NO_COLOR", no_color)
    stream = _Tty()
    configure_logging(stream=stream, level="WARNING")
    try:
        structlog.get_logger("t").warning("loud.warning", x=1)
    finally:
        structlog.reset_defaults()
    assert "loud.warning" in stream.getvalue()
    assert ("\x1b[" in stream.getvalue()) is coloured


def test_no_standard_error_means_no_log_lines(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A program started with standard error closed (`2>&-`, a service, pythonw) has
    ``sys.stderr = None``: ``Kernel()`` and every `aieng` command died on ``None.isatty()``
    (the CLI with status 1 and not a word, having nowhere to write one). Log lines go
    nowhere now, and standard output stays the command's."""
    import json as json_module
    import sys

    from aieng_core.cli import main

    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr(sys, "argv", ["aieng", "hooks", "--json"])
    monkeypatch.delenv("AIENG_LOG_LEVEL", raising=False)
    structlog.reset_defaults()
    try:
        Kernel(env={}, entry_points=[])
        structlog.get_logger("t").warning("nowhere.warning")
        with pytest.raises(SystemExit) as exited:
            main()
        structlog.get_logger("t").warning("nowhere.warning")
    finally:
        structlog.reset_defaults()
    assert exited.value.code == 0
    hooks = json_module.loads(capsys.readouterr().out)
    assert any(row["hook"] == "aieng_generate" for row in hooks)
