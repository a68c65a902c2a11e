"""Properties of every chunker over arbitrary Unicode text: exact offsets, reassembly, sizes."""

from __future__ import annotations

import itertools
import math
import unicodedata
from typing import Any

import anyio
from aieng_chunkers import (
    MarkdownChunker,
    MarkdownOptions,
    SemanticChunker,
    SemanticOptions,
    SentenceChunker,
    SentencesOptions,
    TokenChunker,
    TokensOptions,
)
from aieng_chunkers._spans import _joined
from aieng_chunkers._text import markdown_sections
from aieng_hookspecs.types import Chunk, Document
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

# Arbitrary Unicode, and text drawn from the characters chunkers care about (whitespace of
# every kind, sentence ends, headings, fences, combining marks) so that structure is
# frequent rather than a rare accident.
_STRUCTURE = list("ab c.!?#\n\n\t`~- 。！\u3000\u00a0\u2028\r\x0b\x1c") + [
    "\u0301", "é", "# ", "## ", "\n\n", "```", ". A", "e.g. x", "\u2026 ", "\r\n", "\u0964 ",
    # NUL, emoji ZWJ sequences, skin tones, stacked marks, a mark after a space or a stop.
    "\x00", "\U0001f469\u200d\U0001f4bb", "\U0001f44d\U0001f3fd", "\u200d", "\U0001f3fd",
    "e\u0301\u0308", "\ufe0f", " \u0301", ". \u0301", "\r"]
TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(_STRUCTURE), max_size=120).map("".join),
)
PROPERTY = settings(max_examples=120, deadline=None)


def check_tiling(text: str, chunks: list[Chunk], doc_id: str = "doc") -> None:
    """Blank text gives no chunk; otherwise each chunk is ``text[start:end]``, they come in
    order, each starts inside or right after the previous one and ends past it, the first
    starts at 0, the last ends at ``len(text)``, and dropping each chunk's overlap with
    the previous one reassembles the text exactly."""
    if not text.strip():
        assert chunks == []
        return
    assert chunks, "a text with content gave no chunk"
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    rebuilt: list[str] = []
    previous_start, previous_end = -1, 0
    for index, chunk in enumerate(chunks):
        assert chunk.id == f"{doc_id}#{index}" and chunk.document_id == doc_id
        assert text[chunk.start:chunk.end] == chunk.text
        assert previous_start < chunk.start <= previous_end < chunk.end
        rebuilt.append(chunk.text[previous_end - chunk.start:])
        previous_start, previous_end = chunk.start, chunk.end
    assert "".join(rebuilt) == text


def check_line_ends_whole(text: str, chunks: list[Chunk], size: int) -> None:
    """No chunk starts or ends between the ``\r`` and ``\n`` of a line ending, unless the
    size (1) leaves no room for both."""
    if size >= 2:
        for chunk in chunks:
            assert text[chunk.start - 1:chunk.start + 1] != "\r\n", (chunk.start, text)
            assert text[chunk.end - 1:chunk.end + 1] != "\r\n", (chunk.end, text)


def _inside_a_character(text: str, cut: int) -> bool:
    """Whether a cut at ``cut`` splits a character as users see it (as ``_spans._joined``
    says), other than right after a line break or another control (a break there is one
    in Unicode's own grapheme rules too)."""
    return _joined(text, cut) and unicodedata.category(text[cut - 1]) not in ("Cc", "Zl", "Zp")


def check_characters_whole(text: str, chunks: list[Chunk], size: int) -> None:
    """When every character as users see it (a base with its marks, an emoji with its
    joiners and modifiers) fits in ``size``, no chunk starts or ends inside one."""
    breaks = [0, *(cut for cut in range(1, len(text)) if not _joined(text, cut)), len(text)]
    if max((b - a for a, b in itertools.pairwise(breaks)), default=0) > size:
        return
    for chunk in chunks:
        for cut in (chunk.start, chunk.end):
            if 0 < cut < len(text):
                assert not _inside_a_character(text, cut), (cut, text, size)


@PROPERTY
@given(text=TEXTS, size=st.integers(1, 12), data=st.data())
def test_tokens(text: str, size: int, data: st.DataObject) -> None:
    """Token windows tile the text; each holds at most ``size`` tokens, every chunk but
    the last exactly ``size``, and consecutive chunks share exactly ``overlap`` tokens."""
    overlap = data.draw(st.integers(0, size - 1))
    chunks = TokenChunker(TokensOptions(size=size, overlap=overlap)) \
        .aieng_chunk_document(Document("doc", text))
    check_tiling(text, chunks)
    for before, chunk in itertools.pairwise(chunks):
        assert len(before.text.split()) == size
        assert len(text[chunk.start:before.end].split()) == overlap
    assert all(len(chunk.text.split()) <= size for chunk in chunks)


@PROPERTY
@given(text=TEXTS, size=st.integers(1, 80), overlap=st.integers(0, 3))
def test_sentences(text: str, size: int, overlap: int) -> None:
    """Sentence chunks tile the text and none exceeds ``size`` characters."""
    chunks = SentenceChunker(SentencesOptions(size=size, overlap=overlap)) \
        .aieng_chunk_document(Document("doc", text))
    check_tiling(text, chunks)
    check_line_ends_whole(text, chunks, size)
    check_characters_whole(text, chunks, size)
    assert all(len(chunk.text) <= size for chunk in chunks)


@PROPERTY
@given(text=TEXTS, size=st.integers(1, 80))
def test_markdown(text: str, size: int) -> None:
    """Markdown chunks tile the text, none exceeds ``size`` characters, and none spans
    the start of a section."""
    chunks = MarkdownChunker(MarkdownOptions(size=size)).aieng_chunk_document(
        Document("doc", text))
    check_tiling(text, chunks)
    check_line_ends_whole(text, chunks, size)
    check_characters_whole(text, chunks, size)
    assert all(len(chunk.text) <= size for chunk in chunks)
    for section in markdown_sections(text):
        boundary = section.span[0]
        assert not any(c.start < boundary < c.end for c in chunks), (
            f"a chunk spans the section starting at {boundary}")


@settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, size=st.integers(1, 80), percentile=st.floats(0, 100))
def test_semantic(hashing_embedder: Any, text: str, size: int, percentile: float) -> None:
    """Semantic chunks tile the text and none exceeds ``size`` characters, wherever the
    embedding breakpoints fall."""
    chunker = SemanticChunker(SemanticOptions(size=size, percentile=percentile),
                              embedder=hashing_embedder.aieng_embed)
    chunks = anyio.run(chunker.aieng_chunk_document, Document("doc", text))
    check_tiling(text, chunks)
    check_line_ends_whole(text, chunks, size)
    check_characters_whole(text, chunks, size)
    assert all(len(chunk.text) <= size for chunk in chunks)


def byte_level(text: str) -> list[tuple[int, int]]:
    """Token offsets as a byte-level BPE tokenizer gives them (SmolLM2's, GPT-2's): an
    ASCII word is one token, any other character one token per UTF-8 byte, all at the
    character's offsets, and a space before a non-blank character joins the token after
    it, so ``" 👍"`` is ``(0, 2), (1, 2), (1, 2), (1, 2)``: its first token spans the
    space and part of the emoji."""
    spans: list[tuple[int, int]] = []
    at = 0
    while at < len(text):
        lead = at
        if text[at] == " " and at + 1 < len(text) and not text[at + 1].isspace():
            at += 1
        char = text[at]
        if char.isascii() and char.isalnum():
            end = at
            while end < len(text) and text[end].isascii() and text[end].isalnum():
                end += 1
            spans.append((lead, end))
            at = end
            continue
        spans.append((lead, at + 1))
        spans.extend([(at, at + 1)] * (len(char.encode("utf-8", "surrogatepass")) - 1))
        at += 1
    return spans


@PROPERTY
@given(text=st.lists(st.sampled_from(["ab", "c", " ", "  ", "\n", "é", "日", "\U0001f44d",
                                      "\U0001f3fd", ".", " \U0001f44d"]),
                     max_size=80).map("".join),
       size=st.integers(5, 12), data=st.data())
def test_tokens_fit_by_the_tokenizers_count_of_the_chunk(text: str, size: int,
                                                         data: st.DataObject) -> None:
    """Each chunk, tokenized on its own by the tokenizer that sized it, holds at most
    ``size`` tokens: no chunk starts inside a token of the text (a byte-level token
    spanning a space and the first byte of an emoji), whose pieces the chunk would then
    count again."""
    overlap = data.draw(st.integers(0, size - 1))
    chunks = TokenChunker(TokensOptions(size=size, overlap=overlap), tokenizer=byte_level) \
        .aieng_chunk_document(Document("doc", text))
    check_tiling(text, chunks)
    for chunk in chunks:
        assert len(byte_level(chunk.text)) <= size, (chunk.text, size)


def _percentile(values: list[float], rank: float) -> float:
    """The ``rank``-th percentile by linear interpolation between the sorted values (the
    rule the README states), by its definition."""
    ordered = sorted(values)
    position = rank / 100 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@settings(max_examples=80, deadline=None)
# Sentences B B A A A: B·B computes as 0.9999999999999998, A·A as 1.0.
@example(pool=[[1.0, 1.0, 1.0], [1.0, 1.0, 3.0]], picks=[1, 1, 0, 0, 0], percentile=38.0,
         batch=1)
@given(pool=st.lists(st.lists(st.floats(-10, 10).filter(lambda x: abs(x) > 1e-3),
                              min_size=3, max_size=3), min_size=1, max_size=6),
       picks=st.lists(st.integers(0, 5), min_size=3, max_size=40),
       percentile=st.floats(0, 100), batch=st.integers(1, 8))
def test_semantic_breakpoints_follow_the_percentile_rule(
        pool: list[list[float]], picks: list[int], percentile: float, batch: int) -> None:
    """A chunk ends before sentence ``i`` exactly when the cosine of sentences ``i - 1``
    and ``i`` is strictly below the ``percentile``-th percentile (linear interpolation) of
    all adjacent cosines, whatever the batches they were embedded in; repeated vectors
    make ties, which are never below themselves."""
    from aieng_chunkers._semantic import _cuts, adjacent_similarities

    vectors = [pool[i % len(pool)] for i in picks]

    def cos(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b)) / math.sqrt(
            math.fsum(x * x for x in a) * math.fsum(y * y for y in b))

    similarity = [cos(a, b) for a, b in itertools.pairwise(vectors)]
    threshold = _percentile(similarity, percentile)
    # Where a similarity is within rounding of the threshold, either side is right.
    assume(all(s == threshold or abs(s - threshold) > 1e-9 for s in similarity))
    expected = [i + 1 for i, s in enumerate(similarity) if s < threshold]
    parts, previous = [], None
    for start in range(0, len(vectors), batch):
        part, previous = adjacent_similarities(vectors[start:start + batch], previous)
        parts.append(part)
    assert _cuts(parts, percentile) == expected
