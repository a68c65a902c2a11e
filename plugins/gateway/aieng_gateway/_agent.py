"""Agent mode (``aieng serve --agent``): a chat completion is an agent run over the pipeline.

``POST /v1/chat/completions`` runs ``Agent(pipeline, options).run(request)``: the
pipeline's tools run on the server, the final answer is the assistant message, ``usage``
the run's totals, ``finish_reason`` its status in OpenAI's terms, and the extra top-level
field ``aieng_agent`` says how the run went. A stream sends each finished step as an SSE
comment (clients skip comments; proxies see bytes while the tools run).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from aieng_hookspecs.types import Completion, ToolResult

from ._protocol import ApiError, ChatCall

if TYPE_CHECKING:
    from aieng_core.agent import AgentResult, AgentStep

__all__ = ["agent_completion", "agent_field", "check_agent_chat", "finish_reason",
           "step_comment"]

#: The finish reasons an agent run ends with.
Finish = Literal["stop", "length", "content_filter"]
#: How each agent status reads as OpenAI's ``finish_reason``: an answer (or a policy's
#: stop) is complete, a guard's block is ``content_filter``, and a run a budget or a
#: detector ended without an answer is incomplete, as a generation cut at ``max_tokens``.
FINISH: dict[str, Finish] = {
    "answered": "stop", "stopped": "stop", "blocked": "content_filter",
    "max_steps": "length", "budget": "length", "timeout": "length", "loop": "length",
    "stalled": "length"}
#: The most characters of a call's arguments, and of its result, in a step comment.
COMMENT_PART = 60


def check_agent_chat(chat: ChatCall) -> None:
    """Refuse what an agent run cannot honour: the client's own ``tools`` (the agent's tools
    are the server's, and it runs them itself), a ``tool_choice`` other than ``auto``, and
    ``logprobs`` (the answer comes out of several model calls).

    :raises ApiError: 422 naming the field.
    """
    request = chat.request
    if request.tools:
        raise ApiError(422, "tools: this server runs an agent with its own tools, which it "
                            "calls itself; send the conversation without tools",
                       param="tools", code="unsupported_value")
    choice = request.metadata.get("tool_choice")
    if choice not in (None, "auto"):
        raise ApiError(422, f"tool_choice: this server runs an agent that chooses its own "
                            f"tools; only \"auto\" is accepted, got {json.dumps(choice)[:80]}",
                       param="tool_choice", code="unsupported_value")
    if chat.logprobs:
        raise ApiError(422, "logprobs: an agent's answer comes out of several model calls; "
                            "ask without logprobs", param="logprobs",
                       code="unsupported_value")


def finish_reason(status: str) -> Finish:
    """OpenAI's ``finish_reason`` for an agent run's status (``length`` for any other)."""
    return FINISH.get(status, "length")


def agent_completion(result: AgentResult) -> Completion:
    """The run as one completion: the answer, the mapped finish reason, the run's usage."""
    return Completion(text=result.answer, finish_reason=finish_reason(result.status),
                      usage=result.usage)


def agent_field(result: AgentResult) -> dict[str, Any]:
    """The ``aieng_agent`` field: ``status``, ``reason``, ``steps`` (their count), ``tools``
    (the names of the tools called, in order) and the agent's ``run_id`` (its events and
    log lines carry it)."""
    return {"status": result.status, "reason": result.reason, "steps": len(result.steps),
            "tools": [call.name for step in result.steps for call in step.tool_calls],
            "run_id": result.run_id}


def step_comment(step: AgentStep, *, detail: bool) -> bytes:
    """A finished step as an SSE comment: ``: step 1 add({"a":40,"b":2}) -> 42``, one
    line whatever the texts hold, each part cut at :data:`COMMENT_PART` characters.

    :param detail: show the calls' arguments and results; without it only the tools' names
        and ``ok`` / ``error`` (behind output guards: a tool result may hold what the guards
        would redact from the answer).
    """
    calls = step.action.tool_calls
    parts: list[str] = []
    if not calls:
        parts.append(step.action.kind)
    else:
        results: list[ToolResult | None] = [*step.results, *[None] * len(calls)]
        for call, result in zip(calls, results, strict=False):
            if result is None:
                outcome = "(not run)"
            elif detail:
                outcome = _cut(result.content)
            else:
                outcome = "error" if result.is_error else "ok"
            arguments = _cut(json.dumps(call.arguments, ensure_ascii=False,
                                        separators=(",", ":"))) if detail else "…"
            parts.append(f"{call.name}({arguments}) -> {outcome}")
    line = f": step {step.index} " + ", ".join(parts)
    # One comment line: a line break would end it, and the next line would be read as a
    # field of an event (a "data:" in a tool result would reach the client as data). Every
    # break str.splitlines knows (U+2028, U+0085, ...): clients that read lines with httpx's
    # iter_lines split there too.
    line = " ".join(line.splitlines())
    return line.encode("utf-8", "replace") + b"\n\n"


def _cut(text: str) -> str:
    return text if len(text) <= COMMENT_PART else text[:COMMENT_PART - 1] + "…"
