"""Agents: a runner that loops decide → tool calls → observations over a pipeline's hooks.

``Agent(pipeline, options)`` runs the pipeline's components as an agent: memory
(``aieng_memory_recall`` / ``aieng_memory_store``), a policy (``aieng_agent_step``) or else
the pipeline's own model (a pipeline run per model call, with every ``aieng_tools`` spec),
and tools (``aieng_call_tool``), under step, token, cost and time budgets with online loop
and stall detection. See docs/agents.md.
"""

from ._closed import AgentClosedError
from ._options import AgentOptions
from ._result import PURPOSES, STATUSES, AgentDelta, AgentResult, AgentStep, Purpose
from ._runner import Agent, Approval, DeltaCallback, StepCallback, TaskInput
from ._watch import signature

__all__ = [
    "PURPOSES",
    "STATUSES",
    "Agent",
    "AgentClosedError",
    "AgentDelta",
    "AgentOptions",
    "AgentResult",
    "AgentStep",
    "Approval",
    "DeltaCallback",
    "Purpose",
    "StepCallback",
    "TaskInput",
    "signature",
]
