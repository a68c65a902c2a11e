"""The run in progress, carried through a contextvar so concurrent runs never mix events."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable
from contextvars import ContextVar

import attrs
import structlog
from aieng_hookspecs.types import Event

__all__ = ["CURRENT_RUN", "RunIds", "RunScope"]

log = structlog.get_logger(__name__)


@attrs.define
class RunScope:
    """Where one run's events go: its own trace, and the bus."""

    run_id: str
    pipeline: str
    #: publishes an event with its source (the pipeline object): the kernel's ``publish``.
    publish: Callable[[Event, object | None], None]
    trace: list[Event] = attrs.field(factory=list)
    #: the stage running now (components' context calls follow its policy).
    stage: str = ""
    #: the run this one is a step of (an agent run's id for its model calls), or "".
    parent: str = ""

    #: the run returned or raised: no event is recorded or published for it any more.
    ended: bool = False
    #: the pipeline object running (its subscribers get the run's events, not those of
    #: another open pipeline of the same name).
    source: object | None = None

    #: events emitted after the run ended, dropped.
    late: int = 0

    def emit(self, event: Event) -> None:
        """Record the event in the run's trace and publish it; once the run has ended,
        drop it (a worker thread or a task the run left behind, still going after the
        host's deadline or a timeout: its events would tell of a run already finished)."""
        if self.ended:
            self.late += 1
            if self.late == 1:
                log.debug("run.event_after_end", run_id=self.run_id, pipeline=self.pipeline,
                          event_name=event.name)
            return
        self.trace.append(event)
        self.publish(event, self.source)

    def end(self) -> None:
        """The run returned or raised: release its trace (the result holds a copy), and
        publish nothing more for it. The scope itself can outlive the run: asyncio keeps a
        cancelled deadline timer, with the context it was armed in, until it prunes them
        (about a hundred), so the scope lets go of the pipeline object and the kernel too:
        a closed pipeline's components (an index, a model) are not kept alive by it."""
        self.ended, self.trace = True, []
        self.source, self.publish = None, _ended


def _ended(event: Event, source: object | None) -> None:
    """The ``publish`` of a scope whose run has ended (never called: it drops events)."""


CURRENT_RUN: ContextVar[RunScope | None] = ContextVar("aieng_current_run", default=None)


class RunIds:
    """A pipeline's run ids: a random prefix plus a counter (unique, and cheaper than uuid4).

    The prefix is the process's: a child forked from the process that built the pipeline
    (a pool's workers, gunicorn ``--preload``) draws its own, so that two workers' runs
    never share an id (their feedback, traces and logs are joined by it).
    """

    def __init__(self) -> None:
        self._pid = 0
        self._prefix = ""
        self._counter = itertools.count(1)

    def next(self) -> str:
        if self._pid != os.getpid():
            self._pid, self._prefix = os.getpid(), uuid.uuid4().hex[:10]
            self._counter = itertools.count(1)
        return f"{self._prefix}-{next(self._counter):x}"
