"""Built-in chat templates for models whose tokenizer has none: ChatML, Llama-2, Alpaca.

Each renders a conversation into the prompt text that ends where the assistant's answer
starts, and names the strings that end an answer in its format (a model trained on ChatML
ends a turn with ``<|im_end|>``; an Alpaca model starts the next ``### Instruction:``).
Plain functions rather than Jinja: they are short, exact, and testable without a tokenizer.

Llama-2's and Alpaca's turn markers are plain text in most vocabularies: a message (a user,
a retrieved passage, a tool's result) writing ``[/INST]`` or a line ``### Response:`` would
end its turn and open another. Their renderers break those markers in the contents with a
zero-width joiner after the first character (:func:`~._specials.break_markers`), so only
their own scaffolding writes them; a content holding none is rendered as it is. ChatML's
markers are special tokens of the models trained on it, which the tokenizer's
:class:`~._specials.SpecialGuard` keeps from the contents; but ChatML is also the fallback
for a tokenizer without a chat template, where they may be plain text. So ChatML names them
(:attr:`ChatTemplate.markers`) and :class:`~._causal.CausalLM` breaks, in the contents,
those that are no special token of the tokenizer it loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
from aieng_hookspecs.types import Message

from ._specials import break_markers, line_marker_pattern, marker_pattern

__all__ = [
    "ALPACA_MARKERS",
    "ALPACA_PREAMBLE",
    "CHATML_MARKERS",
    "LLAMA2_MARKERS",
    "TEMPLATES",
    "ChatTemplate",
    "TemplateName",
    "fold_turns",
    "render_alpaca",
    "render_chatml",
    "render_llama2",
]

#: The values of the ``chat_template`` option.
TemplateName = Literal["auto", "chatml", "llama2", "alpaca"]

#: Alpaca's instruction preamble, used when the conversation has no system message.
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)

#: ChatML's turn markers: special tokens of the models trained on ChatML (the guard's), plain
#: text to another tokenizer (then broken wherever a message's content writes them).
CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")
#: Llama-2's turn markers, broken wherever a message's content writes them.
LLAMA2_MARKERS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
#: Alpaca's section markers, broken where a message's content writes one at the start of a
#: line (after any line break of :meth:`str.splitlines`); in a sentence they are words.
ALPACA_MARKERS = ("### Instruction:", "### Input:", "### Response:")
_LLAMA2 = marker_pattern(LLAMA2_MARKERS)
_ALPACA = line_marker_pattern(ALPACA_MARKERS)


def render_chatml(messages: Sequence[Message], *, bos: str = "", eos: str = "") -> str:
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the
    assistant's opening ``<|im_start|>assistant\\n``.

    The contents are written as they are: :data:`CHATML_MARKERS` in them are the special
    tokens' text of a ChatML tokenizer (encoded as text by its guard), and
    :class:`~._causal.CausalLM` breaks those its tokenizer has no special token for.

    :param messages: the conversation.
    :param bos: ignored (ChatML marks turns itself); accepted for a uniform signature.
    :param eos: ignored, as ``bos``.
    """
    turns = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


def render_llama2(messages: Sequence[Message], *, bos: str = "<s>", eos: str = "</s>") -> str:
    """Llama-2 chat: ``{bos}[INST] {user} [/INST] {answer} {eos}`` per exchange, the system
    messages in a ``<<SYS>>`` block at the top of the first user turn.

    Tool results count as user turns; consecutive user turns are joined with a blank line.
    The :data:`LLAMA2_MARKERS` a content writes are broken by a zero-width joiner.

    :param messages: the conversation.
    :param bos: the tokenizer's beginning-of-sequence string.
    :param eos: the tokenizer's end-of-sequence string.
    """
    def content(message: Message) -> str:
        return break_markers(message.content.strip(), _LLAMA2)

    system = "\n\n".join(content(m) for m in messages if m.role == "system")
    parts: list[str] = []
    pending: list[str] = []  # user turns not yet closed by [/INST]

    def close_user() -> None:
        nonlocal system
        text = "\n\n".join(pending)
        if system:
            text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{text}"
            system = ""
        parts.append(f"{bos}[INST] {text} [/INST]")
        pending.clear()

    for message in messages:
        if message.role == "system":
            continue
        if message.role == "assistant":
            if pending or not parts:
                close_user()
            parts.append(f" {content(message)} {eos}")
        else:
            pending.append(content(message))
    close_user()
    return "".join(parts)


def render_alpaca(messages: Sequence[Message], *, bos: str = "", eos: str = "") -> str:
    """Alpaca: the system message (or :data:`ALPACA_PREAMBLE`), then
    ``### Instruction:`` / ``### Response:`` sections, ending with an open response.
    The :data:`ALPACA_MARKERS` a content writes at the start of a line are broken by a
    zero-width joiner.

    :param messages: the conversation.
    :param bos: ignored; accepted for a uniform signature.
    :param eos: ignored, as ``bos``.
    """
    def content(message: Message) -> str:
        return break_markers(message.content.strip(), _ALPACA)

    system = "\n\n".join(content(m) for m in messages if m.role == "system")
    sections = [system or ALPACA_PREAMBLE]
    for message in messages:
        if message.role == "assistant":
            sections.append(f"### Response:\n{content(message)}")
        elif message.role != "system":
            sections.append(f"### Instruction:\n{content(message)}")
    sections.append("### Response:\n")
    return "\n\n".join(sections)


def fold_turns(turns: Sequence[dict[str, Any]], *,
               notes_in_place: bool = True) -> list[dict[str, Any]]:
    """The conversation as templates that refuse a system role or turns of one role in a
    row take it (Mistral's first templates, Gemma's, Llama-2's with a system message
    past the first): the leading system messages' text in front of the first user turn
    (a user turn of its own when a plain user turn does not come first), a later system
    message (an agent's note after a tool's result) a user turn where it stands, then
    consecutive plain user or assistant turns joined by a blank line. Turns with more
    than a role and a text (tool calls, tool results) stay as they are.

    :param turns: the ``{"role": ..., "content": ...}`` dicts of a chat template.
    :param notes_in_place: ``False`` folds every system message into the first user turn
        (for templates that also refuse a user turn right after a tool's result, as
        Mistral's v3 ones do).
    """
    def plain(turn: dict[str, Any]) -> bool:
        return set(turn) == {"role", "content"} and isinstance(turn["content"], str)

    def note(turn: dict[str, Any]) -> bool:
        return turn["role"] == "system" and plain(turn)

    lead = 0
    while lead < len(turns) and note(turns[lead]):
        lead += 1
    if not notes_in_place:
        turns = [*turns[:lead], *(t for t in turns[lead:] if note(t)),
                 *(t for t in turns[lead:] if not note(t))]
        lead = sum(map(note, turns))
    system = "\n\n".join(t["content"] for t in turns[:lead] if t["content"])
    rest = [{"role": "user", "content": t["content"]} if note(t) else dict(t)
            for t in turns[lead:] if not (note(t) and not t["content"])]
    if system:
        if rest and rest[0]["role"] == "user" and plain(rest[0]):
            first = rest[0]["content"]
            rest[0]["content"] = f"{system}\n\n{first}" if first else system
        else:
            rest.insert(0, {"role": "user", "content": system})
    folded: list[dict[str, Any]] = []
    for turn in rest:
        last = folded[-1] if folded else None
        if (last is not None and last["role"] == turn["role"] in ("user", "assistant")
                and plain(last) and plain(turn)):
            last["content"] = "\n\n".join(c for c in (last["content"], turn["content"]) if c)
        else:
            folded.append(turn)
    return folded


Renderer = Callable[..., str]


@attrs.frozen
class ChatTemplate:
    """A built-in template: its renderer and the strings that end an answer in it.

    :param name: the option value naming it.
    :param render: ``render(messages, bos=..., eos=...) -> str``.
    :param stop: strings that end the assistant's answer (cut, finish reason ``stop``).
    :param markers: turn markers the renderer writes as they are in the contents (ChatML's
        :data:`CHATML_MARKERS`): :class:`~._causal.CausalLM` breaks, wherever a content
        writes them, those that are no special token of its tokenizer (a special one is
        encoded as text by :class:`~._specials.SpecialGuard`). Llama-2's and Alpaca's
        renderers break their markers themselves (Alpaca's at the start of a line only).
    """

    name: str
    render: Renderer
    stop: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()


#: The built-in templates by option value.
TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatTemplate("chatml", render_chatml, ("<|im_end|>",), CHATML_MARKERS),
    "llama2": ChatTemplate("llama2", render_llama2, ()),
    "alpaca": ChatTemplate("alpaca", render_alpaca, ("### Instruction:", "### Response:")),
}
