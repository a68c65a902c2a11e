"""structlog set-up: JSON lines when stderr is not a terminal, console rendering otherwise;
through the standard library's ``logging`` for a program that configured only that."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO, cast

import structlog
from aieng_hookspecs import redacted

__all__ = ["configure_logging", "configure_stdlib_logging", "escape_controls", "escaped",
           "logging_configured", "redact_secrets"]

#: Control characters (C0 but tab, DEL, C1): written as they are, a ``\n`` in user text
#: starts a forged log line and an escape sequence (``\x1b[2J``, OSC 52) drives the terminal.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: The same, newlines left alone: a traceback's lines are its own.
_CONTROLS_BUT_NL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(char: re.Match[str]) -> str:
    code = ord(char[0])
    return {"\n": "\\n", "\r": "\\r"}.get(char[0], f"\\x{code:02x}")


def escaped(text: str, *, lines: bool = False) -> str:
    r"""``text`` with its control characters but tab written as escapes (``\n``, ``\r``,
    ``\x1b``), line feeds kept when ``lines``: user text can neither forge a line nor
    drive a terminal."""
    return (_CONTROLS_BUT_NL if lines else _CONTROLS).sub(_escape, text)


def escape_controls(logger: object, method: str, event: structlog.typing.EventDict
                    ) -> structlog.typing.EventDict:
    r"""A processor writing the control characters of an event's texts (its message and
    string values) as escapes (``\n``, ``\x1b``): a line of the console renderer is one
    record whatever a prompt, a file name or a model's output holds. An ``exception``
    (a traceback) keeps its line ends."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = escaped(value, lines=key == "exception")
    return event


def redact_secrets(logger: object, method: str, event: structlog.typing.EventDict
                   ) -> structlog.typing.EventDict:
    """A processor replacing with ``***`` the values of credential keys (``api_key``,
    ``password``, ``token``, ``secret``, ``Authorization``, ``Cookie``, and names ending
    ``_api_key``, ``_token`` ...) and the passwords of URLs, in the event and in the
    mappings and lists it holds (``aieng_hookspecs.redacted``)."""
    return cast(structlog.typing.EventDict, redacted(event))


class _Stderr:
    """Standard error as it is when a line is written, not when logging was configured:
    a program (a test runner, ``contextlib.redirect_stderr``) may replace ``sys.stderr``
    for one in-process ``aieng`` invocation and put it back after; nowhere while it is
    ``None`` (a program started with it closed)."""

    def write(self, text: str) -> int:
        stream = sys.stderr
        return len(text) if stream is None else stream.write(text)

    def flush(self) -> None:
        stream = sys.stderr
        if stream is not None:
            stream.flush()

    def isatty(self) -> bool:
        stream = sys.stderr
        return stream is not None and stream.isatty()


def configure_logging(*, level: str = "WARNING", stream: TextIO | None = None,
                      json: bool | None = None, default: bool = False) -> None:
    r"""Configure structlog for the ``aieng`` CLI (libraries never call this themselves).

    :param level: the lowest level written (a standard level name, any case).
    :raises ValueError: for an unknown level name.
    :param stream: where to write (by default ``sys.stderr`` as it is when a line is
        written; nowhere while it is ``None``, a program started with it closed).
    :param json: force JSON (``True``) or console (``False``) output; by default JSON unless
        the stream is a terminal. Console lines are coloured unless ``$NO_COLOR`` is set
        to a non-empty value; the control characters of their texts are written as
        escapes (``\n``, ``\x1b``), so user text cannot forge a line or drive the
        terminal. Either way, the values of credential keys (``api_key``, ``password``,
        ``token``, ``Authorization`` ...; see :func:`redact_secrets`) are written ``***``.
    :param default: the set-up the kernel gives a program that configured nothing: the
        level is filtered by a processor rather than by the bound logger, so that
        ``structlog.testing.capture_logs`` (which replaces the processors) still sees
        every level.
    """
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}: expected one of "
                         "DEBUG, INFO, WARNING, ERROR, CRITICAL")
    out: TextIO | _Stderr = _Stderr() if stream is None else stream
    if json is None:
        json = not out.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json
        # NO_COLOR (https://no-color.org): any value but "" turns colours off.
        else structlog.dev.ConsoleRenderer(colors=not os.environ.get("NO_COLOR"))
    )
    wrapper = structlog.make_filtering_bound_logger(logging.NOTSET if default else number)
    # A class of its own (structlog caches one per level): a host's NOTSET one is not it.
    wrapper = type("DefaultBoundLogger", (wrapper,), {})

    def below(logger: object, method: str, event: structlog.typing.EventDict
              ) -> structlog.typing.EventDict:
        # A host that sets its own level after the kernel's set-up
        # (``structlog.configure(wrapper_class=make_filtering_bound_logger(INFO))`` keeps
        # the processors) chose its level: this filter steps aside, not to drop its lines.
        if structlog.get_config()["wrapper_class"] is not wrapper:
            return event
        if logging.getLevelNamesMapping().get(method.upper(), logging.CRITICAL) < number:
            raise structlog.DropEvent
        return event

    structlog.configure(
        processors=[
            *([below] if default else []),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            # JSON escapes them itself: a record is one line.
            *([] if json else [escape_controls]),
            renderer,
        ],
        wrapper_class=wrapper,
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )


def logging_configured() -> bool:
    """Whether the program configured the standard library's ``logging``: a handler on the
    root logger (``logging.basicConfig``, ``dictConfig``, a framework's set-up)."""
    return bool(logging.getLogger().handlers)


def _to_logging(logger: object, method: str, event: structlog.typing.EventDict
                ) -> tuple[tuple[str], dict[str, object]]:
    """The last processor of :func:`configure_stdlib_logging`: the record's message is the
    event's name then its fields, sorted, as ``key=repr(value)`` (a text's line ends and
    escapes written as such: one record, one line); the fields also go to the record as
    its ``aieng`` attribute (a JSON formatter writes them), and an exception to its
    ``exc_info`` (the host's formatter writes the traceback)."""
    name = str(event.pop("event", ""))
    exc_info = event.pop("exc_info", None)
    fields = dict(sorted(event.items()))
    message = " ".join([name, *(f"{key}={value!r}" for key, value in fields.items())])
    keywords: dict[str, object] = {"extra": {"aieng": fields}}
    if exc_info:
        keywords["exc_info"] = exc_info
    return (message,), keywords


def configure_stdlib_logging() -> None:
    """Send structlog's lines to the standard library's ``logging``, under the logger name
    each module asked for (``aieng_core.dispatch``, ``aieng_gateway._app``): the host's
    handlers, levels (``logging.getLogger("aieng_core").setLevel(...)``), filters and
    format apply, and its formatter's time (``%(asctime)s``) is the record's. The kernel
    does this for a program that configured ``logging`` and not structlog; the values of
    credential keys are written ``***`` as in :func:`configure_logging`."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            redact_secrets,
            _to_logging,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
