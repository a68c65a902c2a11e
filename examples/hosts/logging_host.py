"""A host with its own logging: aieng's log lines join the host's.

aieng logs through structlog. A host that configures structlog before it creates its first
``Kernel`` keeps its own set-up, and aieng's loggers follow it. Here the host sends
structlog to the standard library's ``logging`` (``structlog.stdlib.LoggerFactory``), so
aieng's lines go through the host's handlers, levels and format, under logger names that
start with ``aieng`` (``aieng_core.bus``, ``aieng_gateway._app`` ...). While a run is in
progress its ``run_id`` and ``pipeline`` are bound to structlog's context variables: the
host's own lines written during the run (here, from the streaming callback) carry them too.

Run it from the repository root (it reads ``docs/``)::

    .venv/bin/python examples/hosts/logging_host.py
"""

from __future__ import annotations

import logging

import anyio
import structlog
from aieng_hookspecs.types import Delta, Event

from aieng_core import Kernel


def configure_host_logging() -> None:
    """The host's own logging set-up: stdlib handlers, structlog rendered through them."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aieng_core").setLevel(logging.WARNING)  # the host's choice
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.format_exc_info,
                    structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True)],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


log = structlog.get_logger("host")


async def main() -> None:
    async with Kernel() as kernel:
        def audit(event: Event) -> None:  # the host's subscriber, failing on purpose
            raise RuntimeError("audit store unavailable")

        kernel.bus.add_callback(audit, name="audit", pattern="run.finished")
        pipeline = kernel.load_pipeline("examples/pipelines/docs-qa.toml")
        pieces: list[str] = []

        def on_delta(delta: Delta) -> None:
            if not pieces:  # the host's line, written during the run: it has the run's id
                log.info("host.first_piece", chars=len(delta.text))
            pieces.append(delta.text)

        result = await pipeline.run("What is reciprocal rank fusion?", on_delta=on_delta)
        log.info("host.answered", run_id=result.run_id, pieces=len(pieces))
    # aieng has logged the failing subscriber (bus.subscriber_failed, with the run's id)
    # through the host's set-up by now: the kernel drains its subscribers as it exits. The
    # run itself never saw the error.


if __name__ == "__main__":
    configure_host_logging()
    anyio.run(main)
