"""``tokens``: fixed windows of N tokens with overlap."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence

from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Chunk, Document

from ._options import TokensOptions
from ._spans import Span, chunks_of, pack

__all__ = ["TokenChunker", "Tokenizer", "whitespace_tokens"]

#: A tokenizer as the chunker uses one: the ``(start, end)`` offsets of a text's tokens, in
#: order (a Hugging Face fast tokenizer's ``offset_mapping`` fits: its special tokens'
#: empty spans are skipped, and byte-level pieces of one character may share offsets).
Tokenizer = Callable[[str], Sequence[tuple[int, int]]]

_TOKEN = re.compile(r"\S+")


def whitespace_tokens(text: str) -> list[Span]:
    """The spans of the whitespace-separated tokens of ``text`` (``str.split``'s words)."""
    return [match.span() for match in _TOKEN.finditer(text)]


def _cells(spans: Sequence[tuple[int, int]], length: int) -> tuple[list[int], list[int]]:
    """Where a chunk may start (a token's start outside every token before it), and how
    many tokens start from there to the next such place.

    An empty span (a special or padding token's ``(0, 0)``) covers no text and is skipped.
    Byte-level BPE gives the pieces of one character (CJK, emoji) the same or overlapping
    offsets, and may give one token a space and a character's first byte (``" 😀"`` is
    ``(0, 2), (1, 2), ...``): a token starting inside one before it counts with it, so no
    chunk is cut inside a character or a token, and a chunk tokenized on its own does not
    count a character's pieces again.
    """
    starts: list[int] = []
    counts: list[int] = []
    previous = reach = 0
    for first, last in spans:
        # Plain ints from numpy's or torch's integers (``return_tensors="np"``); a float
        # offset is refused.
        start, end = operator.index(first), operator.index(last)
        if start == end and 0 <= start <= length:
            continue
        if not (previous <= start < end <= length):
            raise ValueError(f"the tokenizer returned span ({start}, {end}) after one starting "
                             f"at {previous}, in a text of {length} characters: spans must "
                             "be in order and inside the text")
        if starts and start < reach:  # inside a token before it: not a place to cut
            counts[-1] += 1
        else:
            starts.append(start)
            counts.append(1)
        previous, reach = start, max(reach, end)
    return starts, counts


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
        """The chunk spans of ``text`` (none when it is blank or holds no token)."""
        if not text.strip():  # a tokenizer may make tokens of whitespace (byte-level BPE)
            return []
        starts, counts = _cells(self.tokenizer(text), len(text))
        if not starts:
            return []
        starts[0] = 0
        cells = list(zip(starts, [*starts[1:], len(text)]))
        tokens = dict(zip(cells, counts))
        return pack(cells, self.options.size, self.options.overlap,
                    measure=tokens.__getitem__, overlap_measured=True)

    @hookimpl
    @blocking
    def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        return chunks_of(document, self.spans(document.text))
