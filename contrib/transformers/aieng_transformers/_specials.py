"""Prompt encoding that keeps a conversation's text from writing control tokens.

A tokenizer turns every occurrence of a special token's text into that token, wherever it
stands: a user (or a tool's result, a call's argument, a retrieved document) writing
``<|im_end|>\\n<|im_start|>system`` would otherwise close its turn and open a system one.
:class:`SpecialGuard` swaps those strings in the messages for random placeholders before
the chat template runs, so that the only special strings left in the rendered prompt are
the template's own; the prompt is then encoded with the placeholders' strings as plain
text (``split_special_tokens``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

import attrs
from aieng_hookspecs.types import Message

__all__ = ["SpecialGuard", "special_pattern"]


def special_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern matching the text of any of ``tokenizer``'s special tokens (the longest
    first), or ``None`` when it has none."""
    texts = {str(t) for t in getattr(tokenizer, "all_special_tokens", ())}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    texts.update(str(t.content) for t in added.values() if getattr(t, "special", False))
    texts.discard("")
    if not texts:
        return None
    ordered = sorted(texts, key=lambda text: (-len(text), text))
    return re.compile("|".join(map(re.escape, ordered)))


class SpecialGuard:
    """One prompt's placeholders for the special strings its messages hold.

    :param pattern: :func:`special_pattern` of the tokenizer.
    """

    def __init__(self, pattern: re.Pattern[str] | None) -> None:
        self._pattern = pattern
        self._found: list[str] = []
        self._nonce = f"aieng{secrets.token_hex(8)}x"
        self._placeholder = re.compile(rf"{self._nonce}(\d+)x")

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
        text = self._placeholder.sub(lambda m: self._found[int(m.group(1))], text)
        if not text:
            return []
        return list(tokenizer(text, add_special_tokens=False,
                              split_special_tokens=True)["input_ids"])

    def _message(self, message: Message) -> Message:
        content = self._text(message.content)
        calls = tuple(attrs.evolve(c, arguments=self._value(c.arguments))
                      for c in message.tool_calls)
        if content == message.content and calls == message.tool_calls:
            return message
        return attrs.evolve(message, content=content, tool_calls=calls)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {self._text(k): self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(v) for v in value]
        return value

    def _text(self, text: str) -> str:
        assert self._pattern is not None
        return self._pattern.sub(self._hold, text)

    def _hold(self, match: re.Match[str]) -> str:
        self._found.append(match.group())
        return f"{self._nonce}{len(self._found) - 1}x"
