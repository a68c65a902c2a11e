"""Helpers of the context builder's tests: hits, and reading a rendered prompt back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aieng_hookspecs.types import Document, Hit, Message, Request

OPEN = re.compile(r"<<<UNTRUSTED \[(\d+)\]( \(excerpt, cut to fit\))?\n")


def make_hits(*texts: str, titles: Sequence[str] = ()) -> list[Hit]:
    """Hits ``d1``, ``d2``, ... with the given texts, ranked in order."""
    return [Hit(Document(f"d{n}", text, title=titles[n - 1] if n <= len(titles) else ""),
                score=float(100 - n), rank=n)
            for n, text in enumerate(texts, start=1)]


def ask(question: str = "What is it?") -> Request:
    """A one-turn request."""
    return Request([Message("user", question)])


def user_message(request: Request) -> str:
    """The rendered user message (the last user turn)."""
    return request.prompt


def context_block(prompt: str) -> str:
    """The fenced passages of a rendered user message, from the first fence to the last
    (empty when there is none); the prompt's other sections must hold no fence marker."""
    start = prompt.find("<<<UNTRUSTED [")
    if start < 0:
        return ""
    return prompt[start: prompt.rindex(">>>") + 3]


def parse_fences(block: str) -> list[dict[str, Any]]:
    """Split a context block into its fenced passages by the fence markers alone.

    Fails when the markers do not alternate open / close, or an opening line is not one
    the builder writes: what a passage that broke out of its fence would cause.
    """
    passages: list[dict[str, Any]] = []
    position = 0
    while position < len(block):
        opened = OPEN.match(block, position)
        assert opened is not None, f"no fence opens at {position}: {block[position:][:80]!r}"
        close = block.find("\n>>>", opened.end() - 1)
        assert close >= 0, "a fence is never closed"
        body = block[opened.end(): close]
        assert "<<<" not in body and ">>>" not in body, f"a marker inside a passage: {body!r}"
        passages.append({"n": int(opened.group(1)), "cut": bool(opened.group(2)), "body": body})
        position = close + len("\n>>>")
        if position < len(block):
            assert block.startswith("\n\n", position), "passages are not separated"
            position += 2
    return passages
