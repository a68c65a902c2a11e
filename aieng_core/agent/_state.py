"""The mutable state of one agent run (:class:`~aieng_core.agent.Agent`): its conversation,
its steps and their totals, and how it ended."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from aieng_hookspecs.types import Message, Request, ToolSpec, Usage

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

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    @property
    def task_message(self) -> Message | None:
        """The caller's latest message, which ``fit`` never leaves out (``None``: none)."""
        return self.template.messages[-1] if self.template.messages else None

    def finish(self, status: str, reason: str, answer: str = "") -> None:
        self.status, self.reason, self.answer = status, reason, answer
