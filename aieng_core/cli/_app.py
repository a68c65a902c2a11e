"""The root command group; plugins add sub-commands through ``aieng_register_commands``."""

from __future__ import annotations

import codecs
import contextlib
import errno
import math
import os
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import click
import structlog

from .._durations import seconds_written
from .._errors import AiengError
from ..kernel import Kernel
from ..logs import configure_logging
from ..registry import run_registration

__all__ = ["Seconds", "cli", "main", "text_streams"]

log = structlog.get_logger(__name__)
#: An argument's text, or an option's that may be absent.
_Text = TypeVar("_Text", str, str | None)
#: What click itself handles: usage errors, --help / --version exits, end of input.
_CLICK_FLOW = (click.ClickException, click.exceptions.Exit, click.Abort, EOFError)
#: The exit status of a command stopped by Ctrl-C: 128 + SIGINT, as shells report it
#: (click's own is 1, which a script cannot tell from a failure).
INTERRUPTED = 130
#: The exit status of a command whose standard output's reader went away (``| head -1``):
#: 128 + SIGPIPE, as shells report it for a program a broken pipe stopped (click's own is
#: 1, which a script cannot tell from a failure).
BROKEN_PIPE = 141


class _Root(click.Group):
    """Loads plugins once, lets them add commands, and turns our errors into clean exits."""

    _plugins_added = False
    #: the commands plugins added (for :meth:`forget_plugins`), by name
    _plugin_commands: dict[str, click.Command] | None = None

    def forget_plugins(self) -> None:
        """Remove the commands plugins added; the next use adds those of its kernel's
        plugins. One process runs one ``aieng`` command; tests run many, each on a kernel
        of its own (the kit's pytest plugin calls this after every test)."""
        for name, command in (self._plugin_commands or {}).items():
            if self.commands.get(name) is command:
                del self.commands[name]
        self._plugin_commands = None
        self._plugins_added = False

    def _add_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        builtin = dict(self.commands)
        kernel = _kernel(ctx)
        pm = kernel.registry.plugin_manager
        owners = dict.fromkeys(self.commands, "aieng")  # command name -> who added it
        for impl in pm.hook.aieng_register_commands.get_hookimpls():
            before = dict(self.commands)
            try:
                run_registration(impl.function, "aieng_register_commands",
                                 [self for _ in impl.argnames])
            except Exception as exc:  # a plugin's CLI error must not break the CLI
                click.echo(f"aieng: plugin {impl.plugin_name!r} failed to add commands: "
                           f"{type(exc).__name__}: {exc}", err=True)
            for name, command in list(self.commands.items()):
                if name in before and before[name] is not command:
                    # The first one stays: `aieng NAME` runs it (looked up before plugins
                    # load), so --help must not describe another.
                    self.commands[name] = before[name]
                    click.echo(f"aieng: plugin {impl.plugin_name!r} adds a command "
                               f"{name!r} that {owners[name]!r} already has; ignored",
                               err=True)
                owners.setdefault(name, impl.plugin_name)
        self._plugin_commands = {name: command for name, command in self.commands.items()
                                 if builtin.get(name) is not command}

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._add_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:  # parsing loads plugins too (--help lists their commands)
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            _show_visibly(exc)
            raise
        except KeyboardInterrupt:
            raise _interrupted() from None
        except OSError as exc:  # --help, --version printed to a closed pipe
            if exc.errno != errno.EPIPE:
                raise
            raise _broken_pipe() from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _interrupted() from None
        except AiengError as exc:  # its text may hold a file's name, a model's output
            click.echo(f"aieng: error: {_visible(str(exc))}", err=True)
            ctx.exit(2 if exc.__class__.__name__ == "ConfigError" else 1)
        except click.ClickException as exc:  # a usage error may name a path the user typed
            _show_visibly(exc)
            raise
        except _CLICK_FLOW:
            raise
        except Exception as exc:  # a plugin command's own failure: a message, no traceback
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise _broken_pipe() from None  # stdout's reader went away (| head)
            log.debug("cli.failed", command=ctx.invoked_subcommand, exc_info=exc)
            click.echo(f"aieng: error: {type(exc).__name__}: {_visible(str(exc))}\n"
                       "  (--log-level DEBUG shows the traceback)", err=True)
            ctx.exit(1)


def _visible(text: str) -> str:
    from ._present import visible  # rich loads when a command prints, not before

    return visible(text)


def _show_visibly(exc: click.ClickException) -> None:
    """Make a usage error's message :func:`~._present.visible`: a path in it (``PATHS: X
    does not exist``) shows its letters, not the surrogates of an ASCII locale, and its
    control characters as escapes."""
    # click types the attribute Final, but it is a plain one that format_message reads.
    exc.message = _visible(exc.message)  # type: ignore[misc]


def _interrupted() -> click.exceptions.Exit:
    """Ctrl-C: click's message, and the shells' exit status for it."""
    click.echo(err=True)  # ends the line the terminal's ^C echo is on
    click.echo("Aborted!", err=True)
    return click.exceptions.Exit(INTERRUPTED)


def _broken_pipe() -> click.exceptions.Exit:
    """Standard output's reader went away: exit quietly with :data:`BROKEN_PIPE`."""
    return click.exceptions.Exit(BROKEN_PIPE)


def _output_to_null() -> None:
    """Send what is left in standard output's buffer to the null device: the interpreter's
    last flush would hit the broken pipe again, print a traceback and exit 120. Done by the
    console script only, as it exits (a program calling ``cli`` keeps its descriptors)."""
    with contextlib.suppress(AttributeError, ValueError, OSError):  # no descriptor
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def _kernel(ctx: click.Context) -> Kernel:
    root = ctx.find_root()
    root.ensure_object(dict)
    kernel = root.obj.get("kernel")
    if kernel is None:
        kernel = root.obj["kernel"] = Kernel().load()
    return kernel  # type: ignore[no-any-return]


def _apply_log_level(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # Eager, at parse time: plugins load while click looks up a plugin's sub-command (or
    # lists them for --help), before the group's callback would run.
    if not ctx.resilient_parsing:
        configure_logging(level=value)
    return value


@click.group(cls=_Root)
@click.option("--log-level", envvar="AIENG_LOG_LEVEL", default="WARNING", show_default=True,
              show_envvar=True, is_eager=True, callback=_apply_log_level,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Lowest log level written to stderr (JSON unless stderr is a terminal).")
@click.version_option(package_name="aieng")
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """aieng: compose AI pipelines from plugins, run them, inspect them."""
    ctx.ensure_object(dict)


def text_streams() -> None:
    """Make standard input, output and error carry any text (called by :func:`main`).

    A stream whose locale says ASCII (the C locale with Python's UTF-8 mode off,
    ``PYTHONIOENCODING=ascii``: a container's usual environment) is made UTF-8, the
    encoding ``click.echo``, and so ``--json``, writes there already: printing an accented
    answer or an emoji was a ``UnicodeEncodeError`` and a line typed to ``aieng chat`` a
    ``UnicodeDecodeError``. A character an output stream's encoding still cannot hold (a
    lone surrogate; an emoji on a Latin-1 terminal) is written as a backslash escape
    (``\\ud800``, a valid JSON escape too; ``--json`` writes JSON escapes itself on a stream
    that is not UTF-8, as ``\\U0001f600`` is not one), and input bytes that do not decode
    become lone surrogates that the commands refuse as not UTF-8, with their own message.
    """
    for name in ("stdin", "stdout", "stderr"):
        stream = getattr(sys, name)
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:  # closed at start (None), or replaced by a caller
            continue
        errors = "surrogateescape" if name == "stdin" else "backslashreplace"
        ascii_only = codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "ascii"
        try:
            if ascii_only:
                reconfigure(encoding="utf-8", errors=errors)
            else:
                reconfigure(errors=errors)
        except (ValueError, OSError):  # already read from (an embedding program's stdin)
            continue


def main() -> None:
    """Console-script entry point."""
    from . import _agent, _chat, _commands, _rag, _scaffold  # noqa: F401  (the built-in commands)

    text_streams()

    # Configure logging before anything can log (--help given before --log-level lists the
    # plugins' commands first); the --log-level option re-applies it as it is parsed.
    try:
        configure_logging(level=os.environ.get("AIENG_LOG_LEVEL") or "WARNING")
    except ValueError:  # the --log-level option reports the bad $AIENG_LOG_LEVEL
        configure_logging(level="WARNING")
    try:
        cli(prog_name="aieng")
    except SystemExit as exc:
        if exc.code == BROKEN_PIPE:
            _output_to_null()
        raise


def utf8_text(ctx: click.Context, param: click.Parameter, value: _Text) -> _Text:
    """A click callback refusing an argument that is not valid UTF-8: Python hands such
    bytes on as lone surrogates, which ``--json`` would write out as invalid UTF-8. An
    option not given (``None``) passes."""
    if value is None:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        with contextlib.suppress(UnicodeError):
            # UTF-8 bytes under an ASCII locale (LC_ALL=C, Python's UTF-8 mode off) reach
            # Python as lone surrogates too: they are the text that was typed.
            return os.fsencode(value).decode("utf-8")
        raise click.BadParameter(f"not valid UTF-8 (character {exc.start}): is the "
                                 "terminal's encoding UTF-8?") from None
    return value


#: The most bytes of a text read from standard input (``aieng run PIPELINE -``, ``aieng
#: agent PIPELINE -``), as ingest's ``MAX_TEXT_BYTES`` for a text file read whole (256 MiB).
#: More is refused, and no more than one byte past it is read (``< /dev/zero`` ends at once).
MAX_STDIN_BYTES = 256 * 2**20


def read_stdin(param_hint: str = "TEXT") -> str:
    r"""Standard input as UTF-8 text: a byte order mark dropped, line ends made ``\n``.

    :param param_hint: the argument ``-`` was given for, named by the error.
    :raises click.BadParameter: for input that is not UTF-8, longer than
        :data:`MAX_STDIN_BYTES`, or none (the program was started with standard input
        closed).
    """
    if sys.stdin is None:
        raise click.BadParameter("standard input is closed", param_hint=param_hint)
    chunks: list[bytes] = []
    got = 0
    while got <= MAX_STDIN_BYTES and (chunk := sys.stdin.buffer.read(
            min(2**20, MAX_STDIN_BYTES + 1 - got))):
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    if got > MAX_STDIN_BYTES:
        raise click.BadParameter(f"standard input is longer than {MAX_STDIN_BYTES:,} bytes "
                                 "(MAX_STDIN_BYTES), the most read as one text",
                                 param_hint=param_hint)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"standard input is not valid UTF-8 (byte {exc.start})",
                                 param_hint=param_hint) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def kernel_of(ctx: click.Context) -> Kernel:
    """The CLI's kernel (plugins loaded once per invocation)."""
    return _kernel(ctx)


if TYPE_CHECKING:  # generic from click 8.2; a plain class in the click 8.1 we allow
    _FloatParam = click.ParamType[float, Any]
else:
    _FloatParam = click.ParamType


class Seconds(_FloatParam):
    """A duration option: a number of seconds above 0, finite (``30``, ``2.5``, ``1e3``).

    click's ``FloatRange(min=0, min_open=True)`` let ``nan`` and ``inf`` through (the
    command then failed with a ``ValueError`` naming no option), and said of ``30s`` only
    that it is "not a valid float range". Here each is a usage error naming the option
    and its unit; a number written with a unit (``30s``, ``2m``, ``500ms``) is refused
    with the number of seconds to give instead, as a unit-less number is read as seconds
    and ``--timeout 2m`` must not mean two seconds or two minutes by guess.
    """

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value)
            try:
                number = float(text)
            except ValueError:
                self.fail(f"{text!r} is not a number of seconds{_unit_hint(text, param)}",
                          param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} is not a number of seconds above 0 and finite (a "
                      "duration in seconds, such as 30 or 2.5; leave the option out for no "
                      "limit)", param, ctx)
        return number


def _unit_hint(text: str, param: click.Parameter | None) -> str:
    """What to give instead of a number written with a unit (``30s``: 30), or a plain
    reminder that the option takes seconds."""
    option = (param.opts[0] if param is not None and param.opts else "the option")
    seconds = seconds_written(text)
    if seconds is None:
        return f": {option} takes seconds as a number, such as 30 or 2.5"
    return (f": {option} takes seconds as a number with no unit; for {text.strip()} give "
            f"{option} {seconds:g}")
