"""The built-in chat templates render exactly the formats their models were trained on."""

from __future__ import annotations

from aieng_hookspecs.types import Message
from aieng_transformers import ALPACA_PREAMBLE, render_alpaca, render_chatml, render_llama2
from aieng_transformers._templates import fold_turns

CHAT = (
    Message("system", "Be brief."),
    Message("user", "Hi?"),
    Message("assistant", "Hello."),
    Message("user", "Name a colour."),
)


def test_chatml() -> None:
    """ChatML: every message in im_start/im_end, then an open assistant turn."""
    assert render_chatml(CHAT) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_llama2() -> None:
    """Llama-2: the system block inside the first [INST], answers closed by EOS."""
    assert render_llama2(CHAT, bos="<s>", eos="</s>") == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. </s>"
        "<s>[INST] Name a colour. [/INST]")


def test_llama2_without_system_and_with_consecutive_users() -> None:
    """Without a system message there is no <<SYS>> block; user turns in a row share one
    [INST], separated by a blank line; tool results count as user turns."""
    chat = (Message("user", "One."), Message("tool", "42"), Message("user", "Two."))
    assert render_llama2(chat, bos="<s>", eos="</s>") == "<s>[INST] One.\n\n42\n\nTwo. [/INST]"


def test_alpaca() -> None:
    """Alpaca: the system text as preamble, instruction/response sections, an open response."""
    assert render_alpaca(CHAT) == (
        "Be brief.\n\n### Instruction:\nHi?\n\n### Response:\nHello.\n\n"
        "### Instruction:\nName a colour.\n\n### Response:\n")


def test_alpaca_default_preamble() -> None:
    """Without a system message Alpaca uses its standard preamble."""
    assert render_alpaca((Message("user", "Go."),)) == (
        f"{ALPACA_PREAMBLE}\n\n### Instruction:\nGo.\n\n### Response:\n")


def test_fold_turns() -> None:
    """For templates that refuse a system role or repeated roles: the system text goes in
    front of the first user turn (a turn of its own when the conversation does not start
    with a plain user turn), consecutive plain turns of one role join; turns carrying
    calls or results stay as they are; the input is not changed."""
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]}
    result = {"role": "tool", "content": "42", "tool_call_id": "x"}
    turns = [{"role": "system", "content": "S."}, {"role": "user", "content": "A."},
             {"role": "user", "content": ""}, {"role": "user", "content": "B."}, call,
             result, result, {"role": "assistant", "content": "C."},
             {"role": "assistant", "content": "D."}]
    before = [dict(t) for t in turns]
    assert fold_turns(turns) == [
        {"role": "user", "content": "S.\n\nA.\n\nB."}, call, result, result,
        {"role": "assistant", "content": "C.\n\nD."}]
    assert turns == before
    assert fold_turns([{"role": "system", "content": "S."},
                       {"role": "assistant", "content": "Hi."}]) == [
        {"role": "user", "content": "S."}, {"role": "assistant", "content": "Hi."}]
    assert fold_turns([{"role": "system", "content": ""},
                       {"role": "user", "content": "A."}]) == [{"role": "user", "content": "A."}]


def test_a_later_system_note_stays_where_it_was_said() -> None:
    """A system message after the conversation has begun (the agent runner's "you are
    repeating yourself" note after a tool's result) becomes a user turn where it stands,
    joined to the user turns beside it: moved to the top, the note would precede the
    calls it speaks of. Leading system messages still open the first user turn."""
    turns = [{"role": "system", "content": "S."}, {"role": "system", "content": "Memory."},
             {"role": "user", "content": "Task."},
             {"role": "assistant", "content": "<tool_call>…</tool_call>"},
             {"role": "user", "content": "<tool_response>\n42\n</tool_response>"},
             {"role": "system", "content": "You are repeating yourself."},
             {"role": "assistant", "content": "A."}, {"role": "system", "content": "Late."}]
    assert fold_turns(turns) == [
        {"role": "user", "content": "S.\n\nMemory.\n\nTask."},
        {"role": "assistant", "content": "<tool_call>…</tool_call>"},
        {"role": "user", "content": "<tool_response>\n42\n</tool_response>\n\n"
                                    "You are repeating yourself."},
        {"role": "assistant", "content": "A."}, {"role": "user", "content": "Late."}]
    assert fold_turns(turns, notes_in_place=False) == [
        {"role": "user", "content": "S.\n\nMemory.\n\nYou are repeating yourself.\n\nLate."
                                    "\n\nTask."},
        {"role": "assistant", "content": "<tool_call>…</tool_call>"},
        {"role": "user", "content": "<tool_response>\n42\n</tool_response>"},
        {"role": "assistant", "content": "A."}]
