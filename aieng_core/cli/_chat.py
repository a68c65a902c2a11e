"""``aieng chat``: a conversation with a pipeline in the terminal, one line a turn."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click
from aieng_hookspecs import replace_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, a history file is not locked
    fcntl = None  # type: ignore[assignment]

from ._app import cli, kernel_of, utf8_text
from ._window import Conversation

if TYPE_CHECKING:
    from aieng_hookspecs.types import Message

    from ..pipeline import Pipeline

__all__ = ["chat", "message_from_json", "message_to_json"]

_HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D)"
#: The permissions of a history file chat creates: it holds the conversation, so its owner
#: alone reads it (as a shell's history); an existing file keeps its own.
PRIVATE = 0o600
#: The keys of a history line.
_KEYS = frozenset({"role", "content", "name", "tool_call_id", "tool_calls"})


class _Unknown(ValueError):
    """A history line this version cannot read that a newer one may have written: an
    unknown key or role."""


def message_to_json(message: Message) -> dict[str, Any]:
    """A message as one line of a history file."""
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        data["name"] = message.name
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        data["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments}
                              for c in message.tool_calls]
    return data


def message_from_json(data: Any) -> Message:
    """A history file's line as a message.

    :raises ValueError: when it is not one (the message says what is wrong).
    """
    from aieng_hookspecs.types import Message, ToolCall

    if not isinstance(data, dict):  # one error type for any bad line
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")  # noqa: TRY004
    unknown = set(data) - _KEYS
    if unknown:
        raise _Unknown(f"unknown keys {sorted(unknown)}")
    roles = attrs.fields(Message).role.validator.options  # type: ignore[union-attr]
    if isinstance(data.get("role"), str) and data["role"] not in roles:
        raise _Unknown(f"unknown role {data['role']!r} (this version knows "
                       f"{', '.join(roles)})")
    try:
        calls = tuple(ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments", {}))
                      for c in data.get("tool_calls") or ())
        return Message(data["role"], data["content"], name=data.get("name"),
                       tool_call_id=data.get("tool_call_id"), tool_calls=calls)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a message: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # an attrs validator's: its first argument is the message
        raise ValueError(f"not a message: {exc.args[0] if exc.args else exc}") from None


def _read_history(path: Path, conversation: Conversation) -> Conversation:
    """The file's messages added to ``conversation``, read a line at a time: a chat under
    ``--context-chars`` holds a window of them, whatever the file's size."""
    if path.exists() and not path.is_file():  # /dev/zero would be read for ever
        raise click.BadParameter(f"{str(path)!r} is not a regular file (a device, a FIFO): "
                                 "name a file, or leave --history out to keep no history",
                                 param_hint="--history")
    number = 0
    try:
        # Only a line end ends a line (newline="": "\n", "\r\n" or "\r", as they are):
        # ``str.splitlines`` also cut at U+2028, U+0085 and the like, which a turn's text
        # holds as they are (json.dumps leaves them).
        with path.open(encoding="utf-8", newline="") as lines:
            line = next(lines, None)
            while line is not None:
                number += 1
                following = next(lines, None)  # to know the last line
                if line.strip():
                    conversation.extend([_message(path, line.rstrip("\r\n"), number,
                                                  last=following is None)])
                line = following
    except FileNotFoundError:
        return conversation
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {str(path)!r}: {exc}",
                                 param_hint="--history") from None
    return conversation


def _message(path: Path, line: str, number: int, *, last: bool) -> Message:
    try:
        return message_from_json(_loads(line))
    except ValueError as exc:  # json's errors included
        if isinstance(exc, _Unknown):
            hint = ("written by a newer version of aieng? Use that version, or name "
                    "another --history file")
        elif last and isinstance(exc, json.JSONDecodeError):
            hint = ("the last line is cut short (a chat stopped while writing it?): "
                    "remove it to go on, or name another --history file")
        else:
            hint = "fix or remove the line, or name another --history file"
        raise click.BadParameter(f"{str(path)!r} line {number}: {exc}; {hint} (the "
                                 "file is left as it is)", param_hint="--history") from None


def _loads(line: str) -> Any:
    """A history line's JSON; nested too deeply to read (``[[[...]]]``) is a ValueError."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def _lines_of(messages: list[Message]) -> bytes:
    return "".join(json.dumps(message_to_json(m), ensure_ascii=False) + "\n"
                   for m in messages).encode("utf-8")


def _unsaved(path: Path, exc: OSError) -> click.ClickException:
    return click.ClickException(
        f"cannot write the conversation to {str(path)!r}: {exc.strerror or exc}; the file "
        "holds it up to the turn before (the chat goes on from there once it can be written)")


def _rewrite_history(path: Path, messages: list[Message]) -> None:
    """Replace the file whole (a temporary file renamed over it): a full disk or a crash
    leaves the old file, never a half-written one. The new file has the old one's
    permissions (:data:`PRIVATE` when there was none): the conversation is never
    readable by more users than it was."""
    try:
        replace_file(path, _lines_of(messages), mode=PRIVATE)
    except OSError as exc:
        raise _unsaved(path, exc) from exc


def _append_history(path: Path, messages: list[Message]) -> None:
    """Append a turn's messages; a write that fails part-way (a full disk) is cut off
    again, so that the file holds whole lines only."""
    start: int | None = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, PRIVATE)
        with os.fdopen(fd, "ab") as out:
            start = out.tell()
            # A last line with no line end (a file written by hand) is ended first: the
            # turn would be glued to it, and the file no longer read.
            ended = not start or os.pread(fd, 1, start - 1) == b"\n"
            out.write((b"" if ended else b"\n") + _lines_of(messages))
    except OSError as exc:
        if start is not None:
            with contextlib.suppress(OSError):
                os.truncate(path, start)
        raise _unsaved(path, exc) from exc


class _HistoryLock:
    """An exclusive ``flock`` on the history file, held while the chat runs: a second
    chat on the file would interleave its turns with this one's (and a ``/reset`` drop the
    other's), so it is refused at once. The operating system lets go when the process
    ends, killed too. Where there is no ``flock`` (Windows) nothing is locked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        if path.exists() and not path.is_file():
            return  # a device, a FIFO: reading it says what is wrong
        try:
            # Created here (empty, its owner's alone) so that there is a file to lock.
            self._fd = self._locked()
        except OSError as exc:
            if path.exists():
                return  # unreadable: reading it says so
            tilde = (" ('~' is not expanded: a shell expands it unquoted)"
                     if str(path).startswith("~") else "")
            raise click.ClickException(
                f"cannot create the history file {str(path)!r}: {exc.strerror or exc}{tilde}"
                "; name a file in a folder that exists and can be written, or leave "
                "--history out") from None

    def _locked(self) -> int | None:
        if fcntl is None:  # pragma: no cover - Windows
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, PRIVATE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise click.ClickException(
                f"{str(self.path)!r} is in use by another aieng chat (it holds the file "
                "locked): end that chat first, or name another --history file") from None
        except OSError:  # a file system with no locks (some network mounts): none held
            os.close(fd)
            return None
        return fd

    def replaced(self) -> None:
        """Lock the file put in the old one's place (``/reset`` replaces it whole)."""
        if self._fd is None:
            return
        old, self._fd = self._fd, None
        try:
            self._fd = self._locked()
        finally:
            os.close(old)

    def release(self) -> None:
        """Let go of the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--system", default=None, callback=utf8_text,
              help="A system prompt put first in a new conversation.")
@click.option("--history", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A JSON Lines file of the conversation: read when it exists (the chat "
                   "goes on from it, its turns sent to the model as they are), and each turn "
                   "appended to it; created readable by its owner only (0600). A chat holds "
                   "it locked: a second chat on the same file is refused.")
@click.option("--context-chars", type=click.IntRange(min=1), default=None,
              help="The most characters of conversation sent per turn; older turns' texts "
                   "are left out first, then the oldest turns; a turn that cannot fit is "
                   "not sent (default: all). The chat holds the latest turns up to twice "
                   "this in memory, however long it runs.")
@click.option("--agent", "as_agent", is_flag=True,
              help="Answer each turn as an agent: the pipeline's tools, memory and "
                   "budgets (see aieng agent); its steps and a summary line (status, "
                   "steps, tool calls, tokens, seconds) go to stderr each turn.")
@click.option("--max-steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="With --agent: the most steps of one turn.")
@click.pass_context
def chat(ctx: click.Context, pipeline: Path, system: str | None, history: Path | None,
         context_chars: int | None, as_agent: bool, max_steps: int) -> None:
    """Chat with PIPELINE (a TOML file): each line of standard input is a turn.

    The answer streams to standard output; the whole conversation goes to the model at
    each turn. /reset forgets it (and empties --history but for its system prompt), /exit
    (or Ctrl-D) ends the chat.
    """
    if sys.stdin is None:  # started with standard input closed (a script's `<&-`)
        raise click.UsageError("standard input is closed: aieng chat reads each turn "
                               "from it (give it a file or a pipe, or use aieng run)")
    held = _HistoryLock(history) if history is not None else None
    try:
        _chat(ctx, pipeline, system, history, context_chars, as_agent, max_steps, held)
    finally:
        if held is not None:
            held.release()


def _chat(ctx: click.Context, pipeline: Path, system: str | None, history: Path | None,
          context_chars: int | None, as_agent: bool, max_steps: int,
          held: _HistoryLock | None) -> None:
    import anyio
    from aieng_hookspecs.types import Message

    conversation = Conversation(context_chars)
    if history is not None:
        _read_history(history, conversation)
    if system is not None and len(conversation):
        click.echo(f"aieng: --system is left out: the conversation in {str(history)!r} goes "
                   "on with its own (start a new file, or /reset, for a new one)", err=True)
    elif system is not None:
        conversation.extend([Message("system", system)])
        if history is not None:
            _append_history(history, conversation.messages)
    kernel = kernel_of(ctx)
    interactive = sys.stdin.isatty()

    async def turns(built: Pipeline) -> None:
        if interactive:
            click.echo(f"chatting with {built.name}; {_HELP}", err=True)
        while True:
            if interactive:
                click.echo("> ", nl=False, err=True)
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:  # end of input
                return
            text = line.rstrip("\r\n")
            if text.strip() in ("/exit", "/quit"):
                return
            if text.strip() == "/reset":  # the leading system prompt stays
                conversation.reset()
                if history is not None:
                    await anyio.to_thread.run_sync(_rewrite_history, history,
                                                   conversation.messages)
                    if held is not None:
                        held.replaced()
                click.echo("(the conversation is forgotten)", err=True)
                continue
            if not text.strip():
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                click.echo("aieng: that line is not valid UTF-8; it was not sent", err=True)
                continue
            new = await _turn(built, conversation, Message("user", text), as_agent,
                              max_steps)
            if new is None:
                continue
            conversation.extend(new)
            if history is not None:
                await anyio.to_thread.run_sync(_append_history, history, new)

    async def go() -> None:
        async with kernel:
            await turns(kernel.load_pipeline(pipeline))

    anyio.run(go)


async def _turn(built: Pipeline, held: Conversation, user: Message, as_agent: bool,
                max_steps: int) -> list[Message] | None:
    """Answer the user's turn; the messages the turn added (``None``: none kept)."""
    from aieng_hookspecs.types import Message

    from ..agent import Agent, AgentOptions
    from ..agent._messages import ContextLimitError, fit
    from ._agent import LiveAnswer, summary_line
    from ._present import visible

    context_chars = held.limit
    # The turns the window let go are counted in the one note fit writes (left_out).
    conversation, left_out = [*held.messages, user], (held.left, held.left_chars)
    if as_agent:
        options = AgentOptions(max_steps=max_steps, context_chars=context_chars)
        live = LiveAnswer(steps_to_stderr=True)
        try:
            result = await Agent(built, options).run(conversation, on_step=live.step,
                                                     on_delta=live.delta, left_out=left_out)
        except ContextLimitError as exc:
            click.echo(f"aieng: this turn stopped: {exc}; it was not kept", err=True)
            return None
        live.finish(result)
        # The turn's summary, as aieng agent ends with: status, steps, tool calls, tokens,
        # cost, seconds (on stderr: standard output holds the conversation only).
        click.echo(summary_line(result), err=True)
        if result.status != "answered":
            click.echo(f"aieng: no answer: {result.status} ({result.reason})", err=True)
        if result.status == "blocked":
            return None
        return list(result.messages[len(conversation) - 1:])  # the turn and what it added
    streamed: list[str] = []

    def on_delta(delta: object) -> None:
        piece = getattr(delta, "text", "")
        streamed.append(piece)
        click.echo(visible(piece), nl=False)

    try:
        sent = fit(conversation, context_chars, keep=user, left_out=left_out)
    except ContextLimitError as exc:
        click.echo(f"aieng: this turn was not sent: {exc}", err=True)
        return None
    run = await built.run(list(sent), on_delta=on_delta)
    if run.status == "blocked":
        if streamed:
            click.echo()
        click.echo("aieng: a guardrail blocked this turn; it was not kept", err=True)
        return None
    answer = run.answer
    if streamed:
        click.echo()
    else:
        click.echo(visible(answer))
    return [user, Message("assistant", answer)]
