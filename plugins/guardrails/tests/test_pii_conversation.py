"""The ``pii`` guard over a whole conversation: every message but the system ones (and
earlier calls' arguments) redacted with one placeholder per value, the structure kept, and
placeholders restored in the arguments of the calls the model makes, so a tool gets the
real value while the model never sees it."""

from __future__ import annotations

from typing import Any

import pytest
from aieng_guardrails import PIIGuard, PIIOptions
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    GuardVerdict,
    Message,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import ScriptedBackend, isolated_kernel

BOB, ALICE, PHONE = "bob@example.org", "alice@example.com", "+1 415 555 0100"


def conversation() -> list[Message]:
    sent = ToolCall(id="c1", name="send", arguments={"to": BOB, "cc": [ALICE], "n": 2})
    return [Message("system", f"Operator contact: {ALICE}"),
            Message("user", f"mail the report to {BOB}"),
            Message("assistant", "", tool_calls=(sent,)),
            Message("tool", f"sent to {BOB}; reply from {PHONE}", tool_call_id="c1"),
            Message("assistant", "Done."),
            Message("user", f"and to {ALICE} too")]


def test_the_whole_conversation_is_redacted_with_shared_placeholders() -> None:
    """Each value gets one placeholder everywhere; system text, roles, ids, non-string
    arguments stay; the verdict's text is the last user message; findings outside it name
    their message and carry no span."""
    messages = conversation()
    verdict = PIIGuard(PIIOptions()).check_input(Request(messages=tuple(messages)))
    assert verdict is not None and verdict.action == "redact" and verdict.messages
    after = verdict.messages
    assert after[0] == messages[0]  # the operator's system text is theirs
    assert after[1].content == "mail the report to <EMAIL_1>"
    assert after[2].tool_calls[0].arguments == {"to": "<EMAIL_1>", "cc": ["<EMAIL_2>"],
                                                "n": 2}
    assert after[2].tool_calls[0].id == "c1" and after[3].tool_call_id == "c1"
    assert after[3].content == "sent to <EMAIL_1>; reply from <PHONE_1>"
    assert after[5].content == verdict.text == "and to <EMAIL_2> too"
    assert [m.role for m in after] == [m.role for m in messages]
    details = [f.detail for f in verdict.findings]
    assert any("the tool result of 'send' (call 'c1')" in d for d in details)
    assert any("the arguments of an earlier call to 'send'" in d for d in details)
    assert all(f.end <= len(messages[5].content) for f in verdict.findings)  # the guarded
    assert BOB not in repr(verdict) and PHONE not in repr(verdict)


def test_only_the_last_user_message_when_asked() -> None:
    """``all_messages = false`` keeps the earlier behaviour: the prompt only."""
    verdict = PIIGuard(PIIOptions(all_messages=False)).check_input(
        Request(messages=tuple(conversation())))
    assert verdict is not None and verdict.messages is None
    assert verdict.text == "and to <EMAIL_1> too"


def test_block_names_what_it_found_anywhere() -> None:
    """``action = "block"`` blocks on personal data in any message."""
    messages = [Message("user", "summarise"),
                Message("tool", f"call {PHONE}", tool_call_id="x")]
    verdict = PIIGuard(PIIOptions(action="block")).check_input(Request(messages=tuple(messages)))
    assert verdict is not None and verdict.action == "block"
    assert "tool result" in verdict.findings[0].detail


def test_restore_puts_values_back_in_the_calls_arguments() -> None:
    """With ``restore``, the placeholders of a call the model makes are the values again;
    the text too; a call without placeholders stays the same object."""
    guard = PIIGuard(PIIOptions(restore=True))
    request = Request(messages=(Message("user", "hello"), Message("user", f"mail {BOB}")))
    verdict = guard.check_input(request)
    assert verdict is not None and verdict.messages is not None
    redacted = Request(messages=verdict.messages)
    other = ToolCall(id="k2", name="log", arguments={"level": 1})
    completion = Completion(text="Sending to <EMAIL_1>.", finish_reason="tool_calls",
                            tool_calls=(ToolCall(id="k1", name="send",
                                                 arguments={"to": ["<EMAIL_1>"]}), other))
    out = guard.check_output(redacted, completion)
    assert out is not None and out.tool_calls is not None
    assert out.tool_calls[0].arguments == {"to": [BOB]} and out.tool_calls[1] is other
    assert out.text == f"Sending to {BOB}."
    assert any("restored in the arguments of 'send'" in f.detail for f in out.findings)


class Mailer:
    """A ``send`` tool double recording where it sent, answering with a phone number."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="send")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        self.sent.append(call.arguments["to"])
        return ToolResult(call.id, f"sent; the recipient's phone is {PHONE}")


def mailing_model(request: Request) -> Any:
    """Sends to the address placeholder it was given, then answers with the tool result."""
    if request.messages[-1].role == "tool":
        return f"Done: {request.messages[-1].content}"
    return [ToolCall(id="m1", name="send", arguments={"to": "<EMAIL_1>"})]


@pytest.mark.anyio
async def test_an_agent_mails_the_real_address_without_the_model_seeing_it() -> None:
    """Through the kernel: the tool gets the address, the model sees only placeholders
    (the task's address and the tool result's phone), the answer has the values back."""
    mailer = Mailer()
    model = ScriptedBackend(mailing_model, usage=Usage(1, 1))
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"pii": PIIGuard(PIIOptions(restore=True)), "llm": model,
                               "tools": mailer})
        result = await Agent(pipe, AgentOptions(max_steps=3)).run(f"mail {BOB}")
    assert result.status == "answered" and mailer.sent == [BOB]
    seen = " ".join(m.content for r in model.requests for m in r.messages)
    assert BOB not in seen and PHONE not in seen and "<PHONE_1>" in seen
    assert result.answer == f"Done: sent; the recipient's phone is {PHONE}"


def test_a_verdict_of_no_messages_is_refused() -> None:
    """A guard cannot empty the conversation."""
    with pytest.raises(ValueError, match="messages"):
        GuardVerdict("redact", "x", messages=())
