"""``tokens``: fixed windows of N tokens with overlap."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Chunk, Document

from ._options import TokensOptions
from ._spans import Span, chunks_of, pack

__all__ = ["TokenChunker", "Tokenizer", "whitespace_tokens"]

#: A tokenizer as the chunker uses one: the ``(start, end)`` offsets of a text's tokens,
#: in order and not overlapping (a Hugging Face fast tokenizer's ``offset_mapping`` fits).
Tokenizer = Callable[[str], Sequence[tuple[int, int]]]

_TOKEN = re.compile(r"\S+")


def whitespace_tokens(text: str) -> list[Span]:
    """The spans of the whitespace-separated tokens of ``text`` (``str.split``'s words)."""
    return [match.span() for match in _TOKEN.finditer(text)]


def _checked(spans: Sequence[tuple[int, int]], length: int) -> list[Span]:
    result: list[Span] = []
    previous = 0
    for start, end in spans:
        if not (previous <= start < end <= length):
            raise ValueError(f"the tokenizer returned span ({start}, {end}) after one ending "
                             f"at {previous}, in a text of {length} characters: spans must "
                             "be non-empty, in order, not overlapping and inside the text")
        result.append((start, end))
        previous = end
    return result


class TokenChunker:
    """Cuts a document into windows of ``size`` tokens, each repeating the last
    ``overlap`` tokens of the previous one.

    A chunk spans from its first token to the start of the token after its last, so the
    whitespace between tokens stays inside the chunks and their spans tile the document.
    Tokens are whitespace-separated words unless a ``tokenizer`` is given.

    :param options: the typed options (defaults when omitted).
    :param tokenizer: a function giving the ``(start, end)`` offsets of a text's tokens.
    """

    def __init__(self, options: TokensOptions | None = None, *,
                 tokenizer: Tokenizer | None = None) -> None:
        self.options = options if options is not None else TokensOptions()
        self.tokenizer: Tokenizer = tokenizer if tokenizer is not None else whitespace_tokens

    def spans(self, text: str) -> list[Span]:
        """The chunk spans of ``text`` (none when it holds no token)."""
        tokens = _checked(self.tokenizer(text), len(text))
        if not tokens:
            return []
        starts = [0] + [start for start, _ in tokens[1:]]
        ends = starts[1:] + [len(text)]
        cells = list(zip(starts, ends))
        return pack(cells, self.options.size, self.options.overlap, measure=lambda cell: 1)

    @hookimpl
    @blocking
    def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        return chunks_of(document, self.spans(document.text))
