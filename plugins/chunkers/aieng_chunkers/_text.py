"""``sentences`` and ``markdown``: chunks along the text's own structure."""

from __future__ import annotations

import itertools
import re
from typing import Any

import attrs
from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Chunk, Document

from ._options import MarkdownOptions, SentencesOptions
from ._sentences import sentence_units
from ._spans import Span, chunks_of, pack, split_long

__all__ = ["MarkdownChunker", "Section", "SentenceChunker", "markdown_sections"]

# The title keeps its trailing blanks (stripped after): a lazy title before ``[ \t]*``, or a
# blank run tried from each of its characters, would be quadratic in a long line.
_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*))?")
_CLOSING_HASHES = re.compile(r"(?:^|(?<![ \t])[ \t]+)#+[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# What str.splitlines() splits on, so a line's content is the line without its ending.
_LINE_ENDS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@attrs.frozen
class Section:
    """A markdown section: from a heading (or the start) to the next heading.

    :param span: where it lies in the text.
    :param blocks: spans tiling it: the heading line, each paragraph (or list, table...)
        with the blank lines after it, each fenced code block whole.
    :param code: which blocks are fenced code.
    :param headings: the headings above it, outermost first, its own last.
    """

    span: Span
    blocks: list[Span]
    code: list[bool]
    headings: list[str]


def markdown_sections(text: str) -> list[Section]:
    """The sections of a markdown text; each ATX heading (``#`` to ``######``, outside
    fenced code) starts one."""
    sections: list[Section] = []
    trail: list[tuple[int, str]] = []
    starts: list[int] = [0]  # block starts of the current section
    code: list[bool] = [False]
    fence = ""
    blank = True
    offset = 0

    def close(end: int) -> None:
        pairs = list(itertools.pairwise([*starts, end]))
        spans = [(a, b) for a, b in pairs if a < b]
        kinds = [kind for kind, (a, b) in zip(code, pairs) if a < b]
        if spans:
            sections.append(Section((starts[0], end), spans, kinds,
                                    [title for _, title in trail]))

    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        content = line.rstrip(_LINE_ENDS)
        if fence:
            stripped = content.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence, blank = "", True  # what follows the fence is a new block
            continue
        heading = _HEADING.fullmatch(content)
        if heading:
            if text[starts[0]:start].strip():
                close(start)
                starts = [start]
            # else: only blank lines so far; they join this heading's first block
            level = len(heading.group(1))
            title = _CLOSING_HASHES.sub("", heading.group(2) or "").strip()
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, title)]
            code, blank = [False], True
            continue
        if not content.strip():
            blank = True
            continue
        opening = _FENCE.match(content)
        if opening and opening[1][0] == "`" and "`" in content[opening.end():]:
            opening = None  # inline code: a backtick fence's info string holds no backtick
        if (blank or opening) and start != starts[-1]:
            starts.append(start)
            code.append(bool(opening))
        elif opening:
            code[-1] = True
        blank = False
        if opening:
            fence = opening.group(1)
    close(len(text))
    return sections


class SentenceChunker:
    """Packs whole sentences into chunks of at most ``size`` characters, each repeating
    the last ``overlap`` sentences of the previous one; a sentence longer than ``size`` is
    cut at whitespace. Blank lines end sentences too."""

    def __init__(self, options: SentencesOptions | None = None) -> None:
        self.options = options if options is not None else SentencesOptions()

    def spans(self, text: str) -> list[Span]:
        """The chunk spans of ``text`` (none when it is blank)."""
        if not text.strip():
            return []
        size = self.options.size
        return pack(sentence_units(text, (0, len(text)), size), size, self.options.overlap)

    @hookimpl
    @blocking
    def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        return chunks_of(document, self.spans(document.text))


class MarkdownChunker:
    """Cuts markdown at headings, then packs each section's paragraphs (a fenced code
    block counts as one) into chunks of at most ``size`` characters; a paragraph too long
    is cut between sentences, then at whitespace. A chunk never spans two sections, and
    its metadata holds the section's heading trail (``{"headings": ["Guide", "Install"]}``).
    """

    def __init__(self, options: MarkdownOptions | None = None) -> None:
        self.options = options if options is not None else MarkdownOptions()

    def spans(self, text: str) -> list[tuple[Span, list[str]]]:
        """The chunk spans of ``text`` with their heading trails (none when blank)."""
        if not text.strip():
            return []
        size = self.options.size
        result: list[tuple[Span, list[str]]] = []
        for section in markdown_sections(text):
            units: list[Span] = []
            for block, is_code in zip(section.blocks, section.code):
                if block[1] - block[0] <= size:
                    units.append(block)
                elif is_code:  # code has no sentences: cut at whitespace (line ends)
                    units.extend(split_long(text, block, size))
                else:
                    units.extend(sentence_units(text, block, size))
            result.extend((span, section.headings) for span in pack(units, size))
        return result

    @hookimpl
    @blocking
    def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        found = self.spans(document.text)
        metadata: list[dict[str, Any]] = [{"headings": list(titles)} for _, titles in found]
        return chunks_of(document, [span for span, _ in found], metadata)
