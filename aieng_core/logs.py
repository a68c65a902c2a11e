"""structlog set-up: JSON lines when stderr is not a terminal, console rendering otherwise."""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging"]


class _Nowhere(io.StringIO):
    """A text stream that drops what is written to it."""

    def write(self, text: str) -> int:
        return len(text)


def configure_logging(*, level: str = "WARNING", stream: TextIO | None = None,
                      json: bool | None = None, default: bool = False) -> None:
    """Configure structlog for the ``aieng`` CLI (libraries never call this themselves).

    :param level: the lowest level written (a standard level name, any case).
    :raises ValueError: for an unknown level name.
    :param stream: where to write (stderr by default; nowhere when ``sys.stderr`` is
        ``None``, a program started with it closed).
    :param json: force JSON (``True``) or console (``False``) output; by default JSON unless
        the stream is a terminal. Console lines are coloured unless ``$NO_COLOR`` is set
        to a non-empty value.
    :param default: the set-up the kernel gives a program that configured nothing: the
        level is filtered by a processor rather than by the bound logger, so that
        ``structlog.testing.capture_logs`` (which replaces the processors) still sees
        every level.
    """
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}: expected one of "
                         "DEBUG, INFO, WARNING, ERROR, CRITICAL")
    if stream is None:  # no standard error (started with it closed, pythonw): nowhere
        stream = sys.stderr if sys.stderr is not None else _Nowhere()
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json
        # NO_COLOR (https://no-color.org): any value but "" turns colours off.
        else structlog.dev.ConsoleRenderer(colors=not os.environ.get("NO_COLOR"))
    )
    def below(logger: object, method: str, event: structlog.typing.EventDict
              ) -> structlog.typing.EventDict:
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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET if default
                                                            else number),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
