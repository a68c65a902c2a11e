"""What an agent run returns: its status, its answer, every step and the transcript."""

from __future__ import annotations

from typing import Any, Literal

import attrs
from aieng_hookspecs import valid_utf8
from aieng_hookspecs.types import (
    AgentAction,
    Delta,
    Event,
    MemoryItem,
    Message,
    ToolCall,
    ToolResult,
    Usage,
)

from ..pipeline import event_to_json, finite_json, to_jsonable

__all__ = ["PURPOSES", "STATUSES", "AgentDelta", "AgentResult", "AgentStep", "Purpose"]

#: Every status an agent run ends with (``AgentResult.status``).
STATUSES: tuple[str, ...] = (
    "answered", "stopped", "max_steps", "budget", "timeout", "loop", "stalled", "blocked",
)

#: What a model call of an agent run is for: the plan (``AgentOptions.plan``), a decision
#: (the tools offered: tool calls or an answer), the review of an answer
#: (``AgentOptions.reflect``), the accepted answer again in the request's required format.
Purpose = Literal["plan", "decide", "review", "format"]
PURPOSES: tuple[Purpose, ...] = ("plan", "decide", "review", "format")


@attrs.frozen
class AgentDelta:
    """One streamed piece of a model call's text during an agent run (``on_delta``).

    Which text is the answer is known only once the call has ended: a decision's text
    precedes its tool calls when it makes some (the model's words before it acts), and is
    the answer when it makes none, unless a review rejects it (the step's ``review``) or the
    request's format asks for it again (a ``format`` call follows). So a display shows the
    ``decide`` and ``format`` pieces as they come and the steps as they end;
    :attr:`AgentResult.answer` is the answer.

    :param step: the step the call belongs to, from 1.
    :param purpose: what the call is for (:data:`Purpose`).
    :param delta: the piece, as the pipeline streamed it (its ``text``, and on the last
        piece the ``finish_reason`` and the tool calls).
    """

    step: int
    purpose: Purpose
    delta: Delta

    @property
    def text(self) -> str:
        """The piece's text."""
        return self.delta.text


@attrs.frozen
class AgentStep:
    """One step of an agent run.

    :param index: the step's number, from 1.
    :param source: what decided the action: ``model``, or the policy component's name.
    :param action: the decision (tool calls, an answer, or stop).
    :param results: the tool calls' results, in the order of ``action.tool_calls`` (empty
        when no tool ran: an answer, a stop, or a step cut short by a budget or a loop).
    :param usage: the tokens the step's model calls used.
    :param cost: their price (``AgentOptions`` prices).
    :param duration_s: the step's wall-clock seconds: all it did, from its memory recall
        to its memory store, both included.
    :param recalled: the memory items put before the conversation for this step.
    :param run_id: the pipeline run that asked the model (empty when a policy decided).
    :param note: what the runner told the model after the step (a repetition, or what a
        review found wrong with the step's answer), if anything.
    :param plan: the plan made before this step (the first step of a run with
        ``AgentOptions.plan``, or a revision with ``AgentOptions.replan``; its model call is
        in this step's usage).
    :param review: the review of this step's answer (``AgentOptions.reflect``): ``OK`` or
        what it found wrong; in the latter case the answer was not accepted and the run went
        on. Its model call is in this step's usage.
    """

    index: int
    source: str
    action: AgentAction
    results: tuple[ToolResult, ...] = ()
    usage: Usage = attrs.field(factory=Usage)
    cost: float = 0.0
    duration_s: float = 0.0
    recalled: tuple[MemoryItem, ...] = ()
    run_id: str = ""
    note: str = ""
    plan: str = ""
    review: str = ""

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls the step asked for."""
        return self.action.tool_calls


@attrs.frozen
class AgentResult:
    """The outcome of :meth:`Agent.run`.

    :param run_id: the agent run's id (its events carry it).
    :param pipeline: the pipeline's name.
    :param status: one of :data:`STATUSES`: ``answered`` (an answer), ``stopped`` (a
        ``stop`` action), ``max_steps``, ``budget`` (tokens or cost), ``timeout``, ``loop``
        (the same tool call kept coming after a note), ``stalled`` (steps with only failed or
        no new observations), ``blocked`` (a guardrail blocked a model call).
    :param answer: the final answer (for ``stopped``: the policy's text, if any).
    :param reason: why the run ended, in words.
    :param steps: every step, in order.
    :param messages: the transcript: the conversation with every assistant turn, its tool
        calls, one ``tool`` message per result and the runner's notes.
    :param usage: the tokens of every model call that finished in the run: all steps',
        and those a step cut short by the end of the run had finished.
    :param cost: their price.
    :param duration_s: the run's wall-clock seconds.
    :param events: the events of the agent run (its steps, the end, errors of its hook
        calls and model calls made by policies); each model call's pipeline run has its
        own ``run_id`` (``AgentStep.run_id``).
    """

    run_id: str
    pipeline: str
    status: str
    answer: str
    reason: str
    steps: tuple[AgentStep, ...]
    messages: tuple[Message, ...]
    usage: Usage = attrs.field(factory=Usage)
    cost: float = 0.0
    duration_s: float = 0.0
    events: tuple[Event, ...] = ()

    @property
    def answered(self) -> bool:
        """Whether the run ended with an answer."""
        return self.status == "answered"

    @property
    def plan(self) -> str:
        """The plan made before the first step (``AgentOptions.plan``), or ``""``."""
        return self.steps[0].plan if self.steps else ""

    @property
    def plans(self) -> tuple[str, ...]:
        """Every plan of the run in order: the first, then each revision
        (``AgentOptions.replan``); the last is the one the run ended with."""
        return tuple(step.plan for step in self.steps if step.plan)

    @property
    def tokens(self) -> int:
        """Total tokens used (prompt plus completion)."""
        return self.usage.total_tokens

    def to_json(self) -> dict[str, Any]:
        """A dict of everything, as values strict JSON holds (``aieng agent --json``): a
        number that is not finite (a model may write ``NaN`` in its tool arguments) is the
        string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, and a lone surrogate in a text
        is U+FFFD."""
        data: dict[str, Any] = to_jsonable(self)
        data["tokens"] = self.tokens
        data["events"] = [event_to_json(e) for e in self.events]
        strict: dict[str, Any] = _strict(data)
        return strict


def _strict(value: Any) -> Any:
    """:func:`finite_json`, with each text made valid UTF-8."""
    if isinstance(value, str):
        return valid_utf8(value)
    if isinstance(value, dict):
        return {_strict(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return finite_json(value)
