"""Running a step's tool calls: arguments checked against their schema, the user asked
(``approve=``), the call dispatched (``aieng_call_tool``), its result cut to size. A failing,
unknown, declined or invalid call is an error result the model sees, never an exception."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs
import structlog
from aieng_hookspecs import valid_utf8
from aieng_hookspecs.types import ToolCall, ToolResult, ToolSpec

from .._errors import HookError
from ..dispatch import expect
from ._arguments import argument_errors, describe_errors
from ._messages import cut_note
from ._options import AgentOptions

if TYPE_CHECKING:
    from ..dispatch import Dispatcher, StagePolicy

__all__ = ["Approval", "ToolRunner"]

log = structlog.get_logger(__name__)

#: Asked before each tool call runs (may be ``async``): ``True`` runs it; ``False``, or a
#: reason (``str``), declines it.
Approval = Callable[[ToolCall], "Awaitable[bool | str] | bool | str"]

_RESULT = expect(ToolResult)


@attrs.frozen
class ToolRunner:
    """Runs one agent run's tool calls over the pipeline's ``aieng_call_tool`` hooks."""

    dispatcher: Dispatcher
    policy: StagePolicy
    options: AgentOptions
    tools: tuple[ToolSpec, ...]
    approve: Approval | None = None

    async def call_all(self, calls: Sequence[ToolCall]) -> tuple[ToolResult, ...]:
        """Run a step's calls (at most ``tool_concurrency`` at once); results in call
        order."""
        if len(calls) <= 1:
            return tuple([await self.call(call) for call in calls])
        results: list[ToolResult | None] = [None] * len(calls)
        limiter = anyio.CapacityLimiter(self.options.tool_concurrency)

        async def one(position: int, call: ToolCall) -> None:
            async with limiter:
                results[position] = await self.call(call)

        async with anyio.create_task_group() as tg:
            for position, call in enumerate(calls):
                tg.start_soon(one, position, call)
        return tuple(r for r in results if r is not None)

    async def call(self, call: ToolCall) -> ToolResult:
        """A call's result as the model gets it: valid UTF-8, cut to ``tool_result_chars``."""
        result = await self._run(call)
        content = valid_utf8(result.content)
        limit = self.options.tool_result_chars
        if len(content) > limit:
            content = content[:limit] + cut_note(len(content) - limit,
                                                 ": the result was too long")
        return result if content == result.content else attrs.evolve(result, content=content)

    async def _run(self, call: ToolCall) -> ToolResult:
        spec = next((t for t in self.tools if t.name == call.name), None)
        if spec is not None and self.options.validate_arguments:
            errors = argument_errors(call.arguments, spec.parameters)
            if errors:
                log.info("agent.tool_arguments_invalid", tool=call.name, errors=errors)
                return ToolResult(call.id, describe_errors(call.name, errors,
                                                           spec.parameters), is_error=True)
        if spec is not None and self.approve is not None:
            verdict = self.approve(call)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is not True:
                why = f": {verdict.strip()}" if isinstance(verdict, str) and verdict.strip() \
                    else ""
                log.info("agent.tool_declined", tool=call.name, reason=why[2:])
                return ToolResult(call.id, f"error: the user declined this call of "
                                  f"{call.name!r}{why}", is_error=True)
        try:
            found = await self.dispatcher.first(
                "aieng_call_tool", {"call": call}, stage="tool", policy=self.policy,
                check=_RESULT)
        except HookError as exc:  # logged and published (an error event) by the dispatcher
            cause = exc.cause if exc.cause is not None else exc
            log.info("agent.tool_failed", tool=call.name, plugin=exc.plugin,
                     error=f"{type(cause).__name__}: {cause}")
            return ToolResult(call.id, f"error: tool {call.name!r} failed: "
                              f"{type(cause).__name__}: {cause}", is_error=True)
        if found is None:
            names = sorted(spec.name for spec in self.tools)
            if call.name in names:  # listed, yet no component took the call
                return ToolResult(call.id, f"error: no component ran tool {call.name!r}",
                                  is_error=True)
            return ToolResult(call.id, f"error: unknown tool {call.name!r}; known tools: "
                              f"{', '.join(names) or 'none'}", is_error=True)
        result: ToolResult = found[0]
        if result.call_id != call.id:  # the tool message must answer this call
            result = attrs.evolve(result, call_id=call.id)
        return result
