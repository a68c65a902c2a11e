"""Role ``agent``: the policy that decides an agent's next step."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import AgentAction, AgentState

__all__ = ["aieng_agent_step"]


@role_spec(CallMode.FIRST, role="agent")
def aieng_agent_step(state: AgentState) -> AgentAction | None:
    """Decide the next action of an agent.

    :called: by the agent runner at every step, until an ``answer`` or ``stop`` action or a
        budget runs out.
    :mode: first: the first policy answering decides.
    :none: "no opinion": the next policy is asked; with none, the runner asks the backend.
    :async: may be ``async def``; a planner awaits its backend.
    :param state: the conversation so far, the step number and the budgets.
    :returns: tool calls to run, an answer, or stop.

    .. versionadded:: 0.1.0
    """
