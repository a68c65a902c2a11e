"""Prompt encoding that keeps a conversation's text from writing control tokens.

A tokenizer turns every occurrence of a special token's text into that token, wherever it
stands: a user (or a tool's result, a call's argument, a retrieved document) writing
``<|im_end|>\\n<|im_start|>system`` would otherwise close its turn and open a system one.
:class:`SpecialGuard` swaps those strings in the messages for random placeholders before
the chat template runs, so that the only special strings left in the rendered prompt are
the template's own; the prompt is then encoded with the placeholders' strings as plain
text (``split_special_tokens``).

Some tool formats mark their blocks with text that is no special token (Hermes'
``<tool_call>`` and ``<tool_response>`` tags): :func:`neutralise` breaks those markers in
the messages with a zero-width joiner after their first character, so that a tool's
result writing ``</tool_response>`` cannot end its block and fake a second one; the
template's own markers stay whole.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
from aieng_hookspecs.types import Message

__all__ = ["JOINER", "LINE_BREAKS", "SpecialGuard", "break_markers", "line_marker_pattern",
           "marker_pattern", "neutralise", "special_pattern", "special_texts"]

#: What breaks a tool format's marker written in a conversation's text (after its first
#: character): the zero-width joiner, U+200D.
JOINER = "\u200d"

#: The characters a line ends at (those of :meth:`str.splitlines`): after one of them, or
#: at the start of a text, a line-anchored marker (:func:`line_marker_pattern`) counts.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def special_texts(tokenizer: Any) -> set[str]:
    """The texts of ``tokenizer``'s special tokens."""
    texts = {str(t) for t in getattr(tokenizer, "all_special_tokens", ())}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    texts.update(str(t.content) for t in added.values() if getattr(t, "special", False))
    texts.discard("")
    return texts


def special_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern matching the text of any of ``tokenizer``'s special tokens (the longest
    first), or ``None`` when it has none."""
    return _alternation(special_texts(tokenizer))


def marker_pattern(markers: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern matching any of ``markers`` (the longest first) for :func:`neutralise`,
    or ``None`` when there are none."""
    return _alternation({m for m in markers if len(m) > 1})


def line_marker_pattern(markers: Iterable[str]) -> re.Pattern[str] | None:
    """As :func:`marker_pattern`, for markers that count at the start of a line only (at
    the start of the text, or after any of :data:`LINE_BREAKS`): Alpaca's
    ``### Response:`` opens a section there, and is plain words in a sentence."""
    pattern = marker_pattern(markers)
    if pattern is None:
        return None
    return re.compile(f"(?<![^{re.escape(LINE_BREAKS)}])(?:{pattern.pattern})")


def _alternation(texts: set[str]) -> re.Pattern[str] | None:
    if not texts:
        return None
    ordered = sorted(texts, key=lambda text: (-len(text), text))
    return re.compile("|".join(map(re.escape, ordered)))


def neutralise(messages: Sequence[Message],
               pattern: re.Pattern[str] | None) -> list[Message]:
    """``messages`` with each match of ``pattern`` (:func:`marker_pattern`) in a content or
    a tool call's argument (keys and values) broken by :data:`JOINER` after its first
    character: the words read the same, the markers no longer appear. The messages
    themselves where none holds a marker."""
    if pattern is None:
        return list(messages)
    return [_rewritten(m, lambda text: break_markers(text, pattern)) for m in messages]


def break_markers(text: str, pattern: re.Pattern[str] | None) -> str:
    """``text`` with each match of ``pattern`` (:func:`marker_pattern`,
    :func:`line_marker_pattern`) broken by :data:`JOINER` after its first character;
    ``text`` itself where nothing matches."""
    if pattern is None:
        return text
    return pattern.sub(lambda m: m.group()[0] + JOINER + m.group()[1:], text)


def _rewritten(message: Message, text: Callable[[str], str]) -> Message:
    # ``message`` with ``text`` applied to its content and its calls' arguments.
    def value(item: Any) -> Any:
        if isinstance(item, str):
            return text(item)
        if isinstance(item, dict):
            return {text(k): value(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [value(v) for v in item]
        return item

    content = text(message.content)
    calls = tuple(attrs.evolve(c, arguments=value(c.arguments)) for c in message.tool_calls)
    if content == message.content and calls == message.tool_calls:
        return message
    return attrs.evolve(message, content=content, tool_calls=calls)


#: Any guard's placeholder (``aieng<16 hex digits>x<index>x``): one pattern compiled once.
#: A pattern per guard (its own nonce) compiled per prompt filled Python's process-wide
#: ``re`` cache (512 patterns) with patterns never used again, evicting every other
#: module's, and cost a compilation per request.
_PLACEHOLDER = re.compile(r"aieng([0-9a-f]{16})x(\d+)x")


class SpecialGuard:
    """One prompt's placeholders for the special strings its messages hold.

    :param pattern: :func:`special_pattern` of the tokenizer.
    """

    def __init__(self, pattern: re.Pattern[str] | None) -> None:
        self._pattern = pattern
        self._found: list[str] = []
        self._key = secrets.token_hex(8)
        self._nonce = f"aieng{self._key}x"

    def messages(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` with each special string in a content or a tool call's argument
        replaced by a placeholder (the messages themselves when none holds one)."""
        if self._pattern is None:
            return list(messages)
        return [self._message(m) for m in messages]

    def encode(self, tokenizer: Any, text: str) -> list[int]:
        """The ids of ``text`` (rendered from :meth:`messages`): the special strings in it
        as their tokens, the placeholders' strings as plain text."""
        if not self._found or self._pattern is None:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids: list[int] = []
        start = 0
        for match in self._pattern.finditer(text):
            ids += self._plain(tokenizer, text[start:match.start()])
            ids.append(int(tokenizer.convert_tokens_to_ids(match.group())))
            start = match.end()
        ids += self._plain(tokenizer, text[start:])
        return ids

    def _plain(self, tokenizer: Any, text: str) -> list[int]:
        text = _PLACEHOLDER.sub(self._restore, text)
        if not text:
            return []
        return list(tokenizer(text, add_special_tokens=False,
                              split_special_tokens=True)["input_ids"])

    def _restore(self, match: re.Match[str]) -> str:
        # This guard's placeholder becomes the string it holds; any other text of the same
        # shape (another nonce: a user's imitation) stays as written.
        key, index = match.groups()
        return self._found[int(index)] if key == self._key else match.group()

    def _message(self, message: Message) -> Message:
        return _rewritten(message, self._text)

    def _text(self, text: str) -> str:
        assert self._pattern is not None
        return self._pattern.sub(self._hold, text)

    def _hold(self, match: re.Match[str]) -> str:
        self._found.append(match.group())
        return f"{self._nonce}{len(self._found) - 1}x"
