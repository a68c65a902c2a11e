"""Guard verdicts that change more than one text: an input guard's ``messages`` replace
the conversation (the next guard and the model see them), an output guard's
``tool_calls`` replace the completion's calls."""

from __future__ import annotations

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    GuardVerdict,
    Message,
    Request,
    ToolCall,
)

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio


class Shout:
    """An input guard double upper-casing every tool message (and the prompt)."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        messages = tuple(Message(m.role, m.content.upper(), tool_call_id=m.tool_call_id)
                         if m.role in ("tool", "user") else m for m in request.messages)
        return GuardVerdict("redact", request.prompt.upper(), messages=messages)


class Witness:
    """An input guard double recording the request it was given."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    @hookimpl(trylast=True)
    def aieng_guard_input(self, request: Request) -> None:
        self.seen.append(request)


class Calls:
    """A backend double asking for a call with a placeholder argument."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        call = ToolCall(id="k", name="send", arguments={"to": "<X>"})
        return Completion(text="", finish_reason="tool_calls", tool_calls=(call,))


class Fill:
    """An output guard double replacing ``<X>`` in calls' arguments."""

    @hookimpl
    def aieng_guard_output(self, request: Request, completion: Completion) -> GuardVerdict:
        calls = tuple(ToolCall(id=c.id, name=c.name, arguments={
            k: ("x@y.z" if v == "<X>" else v) for k, v in c.arguments.items()})
            for c in completion.tool_calls)
        return GuardVerdict("redact", completion.text, tool_calls=calls)


async def test_an_input_verdicts_messages_replace_the_conversation() -> None:
    """The next guard and the model get the guard's whole conversation."""
    witness = Witness()
    model = ScriptedBackend(["ok"])
    conversation = (Message("system", "sys"), Message("user", "task"),
                    Message("assistant", "", tool_calls=(ToolCall(id="c", name="t"),)),
                    Message("tool", "result", tool_call_id="c"))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"shout": Shout(), "witness": witness, "llm": model})
        result = await pipeline.run(Request(messages=conversation))
    assert result.status == "ok"
    sent = model.requests[0].messages
    assert [m.content for m in sent] == ["sys", "TASK", "", "RESULT"]
    assert sent[3].tool_call_id == "c" and witness.seen[0].messages == sent


async def test_an_output_verdicts_tool_calls_replace_the_completions() -> None:
    """The completion's calls are the guard's; its text stays."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        result = await kernel.compose({"llm": Calls(), "fill": Fill()}).run("go")
    assert result.completion is not None
    assert result.completion.tool_calls[0].arguments == {"to": "x@y.z"}
    assert result.completion.finish_reason == "tool_calls"
