"""Planning and reflection: the requests the runner makes to plan a task before its first
step (and to revise the plan during the run), and to review an answer before accepting
it, and how it reads the replies.

Both requests are single-turn (a system message, then one user message or the
conversation), so chat templates with strict turn rules take them; neither offers tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from aieng_hookspecs.types import Message, ToolCall, ToolResult, ToolSpec

__all__ = ["FORMAT_NOTE", "PLAN_HEADER", "PLAN_PROMPT", "REPLAN_PROMPT", "REVIEW_PROMPT",
           "approved", "plan_messages", "plan_text", "replan_messages", "review_messages",
           "revise_note"]

#: The default instruction of the planning call (``AgentOptions.plan_prompt``).
PLAN_PROMPT = (
    "Before acting on the task below, write a short numbered plan: at most five steps, one "
    "line each, saying which tool to use for what (or that no tool is needed) and how the "
    "results lead to the answer. Write only the plan; do not carry it out and do not "
    "answer yet.")

#: The default instruction of a call that revises the plan (``AgentOptions.replan_prompt``).
REPLAN_PROMPT = (
    "Check your plan against what the tools have returned so far. Write a revised short "
    "numbered plan for the rest of the task: at most five steps, one line each, saying "
    "which tool to use for what. Keep the plan as it is if it still holds. Write only the "
    "plan; do not carry it out and do not answer yet.")

#: The default instruction of the review call (``AgentOptions.review_prompt``).
REVIEW_PROMPT = (
    "You check an assistant's answer before it is given. Read the task, what the tools "
    "returned and the proposed answer. If the answer is correct, complete and consistent "
    "with the tool results, reply with exactly: OK. Otherwise reply in one or two "
    "sentences with what is wrong or missing.")

#: What the model is asked when its answer must be given again in the request's format.
FORMAT_NOTE = ("Give your final answer again, in the required format, with nothing else.")

#: The first line of the system message that holds the plan in the conversation.
PLAN_HEADER = "Your plan for this task (follow it; change course if a result shows it is wrong):"

_APPROVE = re.compile(r"(?:ok|okay|correct|approved?|lgtm)(?:[.!]*)\Z", re.IGNORECASE)
_DECOR = " \t\r\n\"'`*_>#"


def _tool_lines(tools: Sequence[ToolSpec]) -> str:
    if not tools:
        return "Tools: none."
    lines = ["Tools:"]
    for spec in tools:
        lines.append(f"- {spec.name}: {' '.join(spec.description.split()) or '(no description)'}")
    return "\n".join(lines)


def plan_messages(messages: Sequence[Message], tools: Sequence[ToolSpec],
                  prompt: str) -> tuple[Message, ...]:
    """The planning request: the conversation's leading system messages and the planning
    instruction with the tool list as one system message, then the rest of it."""
    at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    system = [m.content for m in messages[:at] if m.content.strip()]
    system.append(f"{prompt}\n\n{_tool_lines(tools)}")
    return (Message("system", "\n\n".join(system)), *messages[at:])


def replan_messages(messages: Sequence[Message], tools: Sequence[ToolSpec], prompt: str,
                    failed: Sequence[tuple[ToolCall, ToolResult]]) -> tuple[Message, ...]:
    """The request revising the plan: the conversation so far (its system text holds the
    current plan) with the tool list added to the system text, then the instruction as a
    user turn, naming the calls of the last step that failed."""
    at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    system = [m.content for m in messages[:at] if m.content.strip()]
    system.append(_tool_lines(tools))
    text = prompt
    if failed:
        lines = [f"- {call.name}: {' '.join(result.content.split())[:300]}"
                 for call, result in failed]
        text = "These tool calls of the last step failed:\n" + "\n".join(lines) + f"\n\n{prompt}"
    return (Message("system", "\n\n".join(system)), *messages[at:], Message("user", text))


def plan_text(reply: str, limit: int) -> str:
    """The plan as kept: the reply stripped, cut to ``limit`` characters."""
    text = reply.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


_LEFT_OUT = "- … earlier results left out"


def review_messages(task: str, calls: Sequence[tuple[ToolCall, ToolResult]], answer: str,
                    prompt: str, limit: int, total: int | None = None
                    ) -> tuple[Message, ...]:
    """The review request: the instruction, then the task, the run's tool results (the
    latest kept when they pass ``limit`` characters) and the proposed answer.

    :param total: the most characters of the whole request (``context_chars``): the tool
        results get what the instruction, the task and the answer leave, the latest result
        cut to it when it alone is longer (those three are never cut).
    """
    def request(observed: str) -> tuple[Message, ...]:
        text = f"Task:\n{task}\n\nTool results:\n{observed}\n\nProposed answer:\n{answer}"
        return Message("system", prompt), Message("user", text)

    if total is not None:  # the room the rest leaves, less the note of what was left out
        rest = sum(len(m.content) for m in request(""))
        limit = min(limit, max(0, total - rest - len(_LEFT_OUT) - 1))
    lines: list[str] = []
    used = 0
    for call, result in reversed(calls):
        arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True, default=str)
        mark = " (error)" if result.is_error else ""
        line = f"- {call.name}({arguments}){mark} -> {' '.join(result.content.split())}"
        if used + len(line) > limit:
            if total is not None and not lines and limit > 40:  # the latest, cut to fit
                lines.append(line[:limit - 1] + "…")
            lines.append(_LEFT_OUT)
            break
        lines.append(line)
        used += len(line) + 1
    return request("\n".join(reversed(lines)) if lines else "none")


def approved(reply: str) -> bool:
    """Whether a review reply accepts the answer: it is empty, or it is just ``OK``
    (``okay``, ``correct``, ``approved``, ``LGTM``; any case, quotes, markdown emphasis and a
    final ``.`` or ``!`` allowed). ``OK, but ...`` is a critique."""
    text = reply.strip(_DECOR)
    return not text or _APPROVE.match(text) is not None


def revise_note(review: str) -> str:
    """What the model is told after a review rejected its answer."""
    return (f"A review of your answer found a problem: {' '.join(review.split())}\n"
            "Fix it: use the tools if you need to, then give your corrected final answer.")
