"""structlog set-up: JSON lines when stderr is not a terminal, console rendering otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging"]


def configure_logging(*, level: str = "WARNING", stream: TextIO | None = None,
                      json: bool | None = None) -> None:
    """Configure structlog for the ``aieng`` CLI (libraries never call this themselves).

    :param level: the lowest level written.
    :param stream: where to write (stderr by default).
    :param json: force JSON (``True``) or console (``False``) output; by default JSON unless
        the stream is a terminal.
    """
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
