"""Role ``tool``: tools that agents and models can call."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import ToolCall, ToolResult, ToolSpec

__all__ = ["aieng_call_tool", "aieng_tools"]


@role_spec(CallMode.GATHER, role="tool")
def aieng_tools() -> list[ToolSpec] | None:
    """List the tools a component offers.

    :called: when a pipeline or agent renders a request with tools, once per run.
    :mode: gather: the lists of all tool components are concatenated; names must be unique.
    :none: "no tools right now".
    :async: may be ``async def``.
    :returns: the tool specifications.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.FIRST, role="tool")
def aieng_call_tool(call: ToolCall) -> ToolResult | None:
    """Run one tool call.

    :called: by the agent runner for each tool call a model asked for.
    :mode: first: the component that owns ``call.name`` answers.
    :none: "not my tool": the next component is asked; when none answers, the model gets an
        error result naming the unknown tool.
    :async: may be ``async def``; blocking tools must be ``@blocking`` or use a thread.
    :param call: the tool name and decoded arguments.
    :returns: the result; failures are results with ``is_error=True``, not exceptions.

    .. versionadded:: 0.1.0
    """
