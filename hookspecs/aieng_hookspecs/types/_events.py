"""Typed events published on the kernel's event bus.

Every event is a frozen attrs class with a stable dotted ``name`` (a class variable) and the
run and pipeline it belongs to. Plugins add their own event types through
``aieng_register_events``; a subscriber filters by name with shell-style patterns
(``"backend.*"``).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import attrs
from attrs import field
from attrs import validators as v

from ._chat import Message, Usage
from ._checks import finite, frozen_tuple, integer, json_mapping, seconds
from ._eval import Finding, Score

__all__ = [
    "AgentFinished",
    "AgentStepped",
    "BusDropped",
    "CacheHit",
    "ErrorEvent",
    "Event",
    "FirstToken",
    "GuardBlocked",
    "HookCalled",
    "JudgeScored",
    "LoopBlocked",
    "ModelCall",
    "RunFinished",
    "RunStarted",
    "StageFinished",
    "StageStarted",
    "TokenEvent",
]

_str = v.instance_of(str)
_seconds = seconds()


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event.

    :param run_id: the run this event belongs to (empty outside a run).
    :param pipeline: the pipeline's name (empty outside a pipeline).
    :param ts: wall-clock time of emission, seconds since the epoch (UTC, whatever the
        local zone). It is for people and stores; a duration is never computed from two
        of them (a wall clock jumps): events that time something carry ``duration_s``,
        measured on the monotonic clock.
    """

    name: ClassVar[str] = "event"

    run_id: str = field(default="", validator=_str)
    pipeline: str = field(default="", validator=_str)
    ts: float = field(factory=time.time, validator=finite())


@attrs.frozen(kw_only=True)
class RunStarted(Event):
    """A pipeline run began; ``input`` is the user input as text; ``parent`` is the run it
    is a step of, when it began inside another (an agent run's id for each of its model
    calls: the agent's task is the input of several runs), else ``""``."""

    name: ClassVar[str] = "run.started"
    input: str = field(default="", validator=_str)
    parent: str = field(default="", validator=_str)


@attrs.frozen(kw_only=True)
class RunFinished(Event):
    """A pipeline run ended with ``status`` (``ok``, ``blocked``, ``error``, ``cancelled``)."""

    name: ClassVar[str] = "run.finished"
    status: str = field(validator=_str)
    duration_s: float = field(validator=_seconds)


@attrs.frozen(kw_only=True)
class StageStarted(Event):
    """A stage of a run began."""

    name: ClassVar[str] = "stage.started"
    stage: str = field(validator=_str)


@attrs.frozen(kw_only=True)
class StageFinished(Event):
    """A stage ended with ``status`` (``ok``, ``skipped``, ``error``, ``blocked``, ``hit``;
    ``cancelled`` when the run was cancelled during it)."""

    name: ClassVar[str] = "stage.finished"
    stage: str = field(validator=_str)
    status: str = field(validator=_str)
    duration_s: float = field(validator=_seconds)


@attrs.frozen(kw_only=True)
class HookCalled(Event):
    """One hook impl was awaited; ``outcome`` is ``ok``, ``none``, ``error`` or ``timeout``."""

    name: ClassVar[str] = "hook.called"
    hook: str = field(validator=_str)
    plugin: str = field(validator=_str)
    stage: str = field(default="", validator=_str)
    outcome: str = field(default="ok", validator=_str)
    duration_s: float = field(validator=_seconds)


@attrs.frozen(kw_only=True)
class ModelCall(Event):
    """A model call finished: the exact rendered messages, the parameters and the raw output."""

    name: ClassVar[str] = "backend.call"
    component: str = field(validator=_str)
    messages: tuple[Message, ...] = field(
        converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(Message))
    )
    parameters: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)
    raw_output: str = field(default="", validator=_str)
    usage: Usage = field(factory=Usage, validator=v.instance_of(Usage))
    duration_s: float = field(default=0.0, validator=_seconds)
    ttft_s: float | None = field(default=None, validator=v.optional(_seconds))
    streamed: bool = field(default=False, validator=v.instance_of(bool))


@attrs.frozen(kw_only=True)
class FirstToken(Event):
    """The first streamed token of a model call arrived ``ttft_s`` after the call began.

    ``model`` is the request's model name (``""`` when it named none), the name a
    ``backend.call`` reports in its parameters: a stream cut short before its
    ``backend.call`` can still be priced by it.
    """

    name: ClassVar[str] = "backend.first_token"
    component: str = field(validator=_str)
    ttft_s: float = field(validator=_seconds)
    model: str = field(default="", validator=_str)


@attrs.frozen(kw_only=True)
class TokenEvent(Event):
    """A streamed piece of text arrived (``index`` counts pieces from 0)."""

    name: ClassVar[str] = "backend.token"
    component: str = field(validator=_str)
    text: str = field(validator=_str)
    index: int = field(validator=integer(0))


@attrs.frozen(kw_only=True)
class CacheHit(Event):
    """A cache answered a request."""

    name: ClassVar[str] = "cache.hit"
    component: str = field(validator=_str)


@attrs.frozen(kw_only=True)
class GuardBlocked(Event):
    """A guardrail blocked input or output (``stage`` says which)."""

    name: ClassVar[str] = "guard.blocked"
    component: str = field(validator=_str)
    stage: str = field(validator=_str)
    findings: tuple[Finding, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(Finding))
    )


@attrs.frozen(kw_only=True)
class JudgeScored(Event):
    """A judge scored a run's output in the ``judge`` stage (one event per judge)."""

    name: ClassVar[str] = "judge.scored"
    component: str = field(validator=_str)
    scores: tuple[Score, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(Score))
    )


@attrs.frozen(kw_only=True)
class ErrorEvent(Event):
    """A hook impl failed; ``policy`` says what the kernel did (``fail``, ``skip``, ``fallback``)."""

    name: ClassVar[str] = "error"
    stage: str = field(default="", validator=_str)
    hook: str = field(default="", validator=_str)
    plugin: str = field(default="", validator=_str)
    error_type: str = field(validator=_str)
    message: str = field(validator=_str)
    policy: str = field(default="fail", validator=_str)


@attrs.frozen(kw_only=True)
class LoopBlocked(Event):
    """The event loop did not run for ``duration_s`` while ``active`` impls were in flight
    (a stall the wait for a CPU of a busy machine explains is not reported)."""

    name: ClassVar[str] = "loop.blocked"
    duration_s: float = field(validator=_seconds)
    active: tuple[str, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(_str)
    )


@attrs.frozen(kw_only=True)
class BusDropped(Event):
    """A subscriber's queue was full and ``dropped`` events were not delivered to it."""

    name: ClassVar[str] = "bus.dropped"
    subscriber: str = field(validator=_str)
    dropped: int = field(validator=integer(1))


_cost = v.and_(finite(), v.ge(0.0))


@attrs.frozen(kw_only=True)
class AgentStepped(Event):
    """An agent finished one step (``step`` counts from 1): what decided it (``source``:
    ``model`` or the policy component's name), the action's ``kind`` (``tool_calls``,
    ``answer`` or ``stop``), the tools it called and how many of their results were errors,
    the step's token usage and cost, and ``note`` when the runner told the model something
    (it repeats itself, or a review found the step's answer wrong: the run goes on)."""

    name: ClassVar[str] = "agent.step"
    step: int = field(validator=integer(1))
    source: str = field(validator=_str)
    kind: str = field(validator=v.in_(("tool_calls", "answer", "stop")))
    tools: tuple[str, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(_str)
    )
    errors: int = field(default=0, validator=integer(0))
    usage: Usage = field(factory=Usage, validator=v.instance_of(Usage))
    cost: float = field(default=0.0, validator=_cost)
    duration_s: float = field(validator=_seconds)
    note: str = field(default="", validator=_str)


@attrs.frozen(kw_only=True)
class AgentFinished(Event):
    """An agent run ended with ``status`` (``answered``, ``stopped``, ``max_steps``,
    ``budget``, ``timeout``, ``loop``, ``stalled``, ``blocked``; ``error`` or ``cancelled``
    when it raised), after ``steps`` steps, with its total usage and cost; ``reason`` says
    why in words."""

    name: ClassVar[str] = "agent.finished"
    status: str = field(validator=_str)
    reason: str = field(default="", validator=_str)
    steps: int = field(default=0, validator=integer(0))
    usage: Usage = field(factory=Usage, validator=v.instance_of(Usage))
    cost: float = field(default=0.0, validator=_cost)
    duration_s: float = field(validator=_seconds)
