"""The mutable state of one agent run (:class:`~aieng_core.agent.Agent`): its conversation,
its steps and their totals, and how it ended."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
from aieng_hookspecs.types import Message, ModelCall, Request, ToolSpec, Usage

from .._scope import RunScope
from ._result import AgentStep
from ._tools import Approval, ToolRunner
from ._watch import LoopWatch, StallWatch

if TYPE_CHECKING:
    from ._runner import DeltaCallback

__all__ = ["_Run"]


@attrs.define
class _Run:
    """The mutable state of one agent run."""

    scope: RunScope
    template: Request
    task: str
    messages: list[Message]
    loop: LoopWatch
    stall: StallWatch
    tools: tuple[ToolSpec, ...] = ()
    approve: Approval | None = None
    runner: ToolRunner | None = None
    on_delta: DeltaCallback | None = None
    left_out: tuple[int, int] = (0, 0)  # earlier turns the caller let go of: fit's note
    step: int = 0
    steps: list[AgentStep] = attrs.field(factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    status: str = ""
    answer: str = ""
    reason: str = ""
    reviews: int = 0
    plan: str = ""  # the plan in the system text now
    replans: int = 0
    #: the finished model calls of the step in flight that the totals do not count yet,
    #: and where in the trace its policies' own calls begin (``None``: no policy asked).
    uncounted: list[ModelCall] = attrs.field(factory=list)
    policy_mark: int | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    @property
    def task_message(self) -> Message | None:
        """The caller's latest message, which ``fit`` never leaves out (``None``: none)."""
        return self.template.messages[-1] if self.template.messages else None

    def finish(self, status: str, reason: str, answer: str = "") -> None:
        self.status, self.reason, self.answer = status, reason, answer

    def count(self, calls: Sequence[ModelCall],
              cost_of: Callable[[int, int], float]) -> tuple[Usage, float]:
        """Add model calls to the run's totals; their usage and cost."""
        usage = Usage(sum(c.usage.prompt_tokens for c in calls),
                      sum(c.usage.completion_tokens for c in calls))
        cost = cost_of(usage.prompt_tokens, usage.completion_tokens)
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost += cost
        return usage, cost

    def settle(self, cost_of: Callable[[int, int], float]) -> None:
        """Count the finished model calls of a step that ended the run before it was
        recorded (a timeout, a cancellation, an error): their tokens were spent."""
        calls = list(self.uncounted)
        if self.policy_mark is not None:
            calls += [e for e in self.scope.trace[self.policy_mark:]
                      if isinstance(e, ModelCall)]
        self.uncounted, self.policy_mark = [], None
        self.count(calls, cost_of)
