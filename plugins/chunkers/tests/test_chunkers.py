"""The chunkers' own behaviour, and chunking inside ``Pipeline.index``."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import aieng_chunkers
import pytest
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
from aieng_hookspecs.types import Chunk, Document

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo

Register = Callable[..., AbstractContextManager[PluginInfo]]


def texts(chunks: list[Chunk]) -> list[str]:
    return [chunk.text for chunk in chunks]


# -- tokens ------------------------------------------------------------------------------


def test_token_windows_with_overlap() -> None:
    """Windows of 4 tokens step by 4 - 1 = 3 tokens; whitespace stays inside chunks."""
    chunker = TokenChunker(TokensOptions(size=4, overlap=1))
    chunks = chunker.aieng_chunk_document(Document("d", "  one two three four five six  seven"))
    assert texts(chunks) == ["  one two three four ", "four five six  seven"]
    assert [(c.start, c.end) for c in chunks] == [(0, 21), (16, 36)]


def test_a_tokenizer_callable() -> None:
    """A tokenizer giving token offsets replaces whitespace splitting (here: characters,
    as a subword tokenizer's offsets would); bad offsets are refused."""
    chunker = TokenChunker(TokensOptions(size=3, overlap=0),
                           tokenizer=lambda text: [(i, i + 1) for i in range(len(text))])
    assert texts(chunker.aieng_chunk_document(Document("d", "abcdefg"))) == ["abc", "def", "g"]
    backwards = TokenChunker(tokenizer=lambda text: [(2, 3), (0, 1)])
    with pytest.raises(ValueError, match="in order"):
        backwards.aieng_chunk_document(Document("d", "abc"))


def test_a_hugging_face_tokenizers_offsets() -> None:
    """The offsets a Hugging Face fast tokenizer gives are taken as they come: special
    tokens' empty ``(0, 0)`` spans cover no text, and the byte-level pieces of one
    character (SmolLM2's offsets of CJK text and emoji, which repeat or overlap) count
    as tokens of that character, never cut inside it. No chunk starts inside a token:
    the one spanning the space before the emoji and its first byte keeps the emoji's
    other pieces with it (a chunk starting at the emoji would count them again)."""
    cjk = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (3, 4), (4, 5), (4, 5), (5, 6), (5, 6),
           (0, 0)]
    chunker = TokenChunker(TokensOptions(size=3, overlap=0), tokenizer=lambda text: cjk)
    chunks = chunker.aieng_chunk_document(Document("d", "中文字符测试"))
    assert texts(chunks) == ["中文字", "符", "测", "试"]  # 3, 2, 2 and 2 tokens
    overlapping = TokenChunker(TokensOptions(size=3, overlap=1),
                               tokenizer=lambda text: cjk)
    assert texts(overlapping.aieng_chunk_document(Document("d", "中文字符测试"))) == [
        "中文字", "字符", "测", "试"]
    emoji = TokenChunker(TokensOptions(size=2, overlap=0),
                         tokenizer=lambda text: [(0, 5), (5, 7), (6, 7), (7, 13)])
    assert texts(emoji.aieng_chunk_document(Document("d", "hello 😀 world"))) == [
        "hello", " 😀", " world"]  # 1, 2 and 1 tokens


def test_offsets_as_a_numpy_array() -> None:
    """Offsets given as a numpy array (a Hugging Face tokenizer's ``offset_mapping`` with
    ``return_tensors="np"``) count as the same plain offsets; fractional ones are refused."""
    import numpy as np

    def tokenizer(text: str) -> Any:
        return np.array([[0, 0], [0, 1], [2, 3], [4, 5], [6, 7], [0, 0]], dtype=np.int64)

    chunker = TokenChunker(TokensOptions(size=2, overlap=1), tokenizer=tokenizer)
    chunks = chunker.aieng_chunk_document(Document("d", "a b c d"))
    assert texts(chunks) == ["a b ", "b c ", "c d"]
    assert all(type(c.start) is int and type(c.end) is int for c in chunks)
    fractional = TokenChunker(tokenizer=lambda text: [(0.0, 1.5)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        fractional.aieng_chunk_document(Document("d", "a b"))


def test_blank_text_has_no_chunks_whatever_the_tokenizer() -> None:
    """A blank document gives ``[]`` even with a tokenizer that makes tokens of whitespace
    (byte-level BPE does)."""
    chunker = TokenChunker(TokensOptions(size=2, overlap=0),
                           tokenizer=lambda text: [(i, i + 1) for i in range(len(text))])
    assert chunker.aieng_chunk_document(Document("d", " \n\t  \r\n")) == []
    assert texts(chunker.aieng_chunk_document(Document("d", " a "))) == [" a", " "]


def test_token_options_validate() -> None:
    """Overlap must be smaller than size; sizes are positive integers."""
    with pytest.raises(ValueError, match="smaller than size"):
        TokensOptions(size=4, overlap=4)
    with pytest.raises(ValueError):
        TokensOptions(size=0)
    with pytest.raises(TypeError):
        TokensOptions(size=True)


# -- sentences ---------------------------------------------------------------------------


def test_sentences_packed_with_overlap() -> None:
    """Whole sentences are packed up to the size; overlap repeats the last sentence;
    abbreviations before a lower-case word and decimals do not end a sentence."""
    text = "It costs 3.5 euros. Cheap, e.g. for lunch! Next one? Yes. 東京は大きい。とても。"
    chunks = SentenceChunker(SentencesOptions(size=45, overlap=1)).aieng_chunk_document(
        Document("d", text))
    assert texts(chunks) == ["It costs 3.5 euros. Cheap, e.g. for lunch! ",
                             "Cheap, e.g. for lunch! Next one? Yes. 東京は大きい。",
                             "東京は大きい。とても。"]


def test_devanagari_and_arabic_sentence_ends() -> None:
    """The danda (``।`` ``॥``) of Hindi and other Indic scripts and the Arabic question mark
    and full stop (``؟`` ``۔``) end sentences when whitespace follows, as ``.`` does."""
    hindi = "यह पहला वाक्य है। यह दूसरा वाक्य है। और तीसरा॥ अंत।"
    chunks = SentenceChunker(SentencesOptions(size=40)).aieng_chunk_document(
        Document("d", hindi))
    assert texts(chunks) == ["यह पहला वाक्य है। यह दूसरा वाक्य है। ", "और तीसरा॥ अंत।"]
    arabic = "هل أنت بخير؟ نعم أنا بخير۔ شكرا لك."
    chunks = SentenceChunker(SentencesOptions(size=20)).aieng_chunk_document(
        Document("d", arabic))
    assert texts(chunks) == ["هل أنت بخير؟ ", "نعم أنا بخير۔ ", "شكرا لك."]


def test_a_sentence_longer_than_size_is_cut_at_whitespace() -> None:
    """A long sentence is cut after the last whitespace that fits; a word longer than the
    size is cut, keeping combining marks with their letter."""
    chunks = SentenceChunker(SentencesOptions(size=10)).aieng_chunk_document(
        Document("d", "alpha beta gamma delta"))
    assert texts(chunks) == ["alpha ", "beta ", "gamma ", "delta"]
    word = "e\u0301" * 6  # é as e + combining acute
    cut = SentenceChunker(SentencesOptions(size=5)).aieng_chunk_document(Document("d", word))
    assert all(not chunk.text.startswith("\u0301") for chunk in cut)
    assert "".join(texts(cut)) == word


@pytest.mark.parametrize(("word", "size"), [
    ("\u0928\u092e\u0938\u094d\u0924\u0947" * 3, 5),  # a Devanagari vowel sign (Mn, class 0)
    ("\u0915\u093f" * 5, 3),  # a spacing vowel sign (Mc)
    ("\u2764\ufe0f" * 5, 3),  # a heart and a variation selector
    ("\U0001f44d\U0001f3fd" * 5, 3),  # thumbs up and a skin tone modifier
    ("\U0001f469\u200d\U0001f4bb" * 4, 4),  # woman + zero-width joiner + laptop
    ("1\ufe0f\u20e3" * 5, 4),  # a keycap: an enclosing mark
    ("a" + "\ud83d\ude00" * 5, 4),  # an emoji as a surrogate pair (surrogatepass)
])
def test_a_long_word_is_not_cut_inside_a_character(word: str, size: int) -> None:
    """A word longer than the size is never cut in front of a mark of any kind (Indic
    vowel signs, variation selectors, enclosing marks), an emoji modifier or a zero-width
    joiner, nor after a joiner, nor inside a surrogate pair."""
    cut = SentenceChunker(SentencesOptions(size=size)).aieng_chunk_document(
        Document("d", word))
    assert "".join(texts(cut)) == word and all(len(t) <= size for t in texts(cut))
    for chunk in cut[1:]:
        first, before = chunk.text[0], word[chunk.start - 1]
        assert unicodedata.category(first)[0] != "M", (chunk.start, texts(cut))
        assert first != "\u200d" and before != "\u200d", (chunk.start, texts(cut))
        assert not "\U0001f3fb" <= first <= "\U0001f3ff", (chunk.start, texts(cut))
        assert not "\udc00" <= first <= "\udfff", (chunk.start, texts(cut))


@pytest.mark.parametrize(("text", "size", "expected"), [
    ("aaaa \u0301bbbb", 5, ["aaaa", " \u0301bbb", "b"]),  # a space and its accent
    ("ab \U0001f3fdcd", 3, ["ab", " \U0001f3fdc", "d"]),  # a space and a skin tone
    ("Alpha one. \u0301Two words here.", 16,  # no sentence starts with a mark
     ["Alpha one. \u0301Two ", "words here."]),
    ("\r\n\u200d0", 3, ["\r\n", "\u200d0"]),  # after a line break, a joiner may begin
])
def test_a_mark_after_whitespace_stays_with_it(text: str, size: int,
                                               expected: list[str]) -> None:
    """A mark or skin tone after a space makes one character with it (Unicode's grapheme
    rules): no cut at that whitespace, neither for the size nor between sentences (a cut
    went there: chunks began with a bare accent). After a line break Unicode always
    breaks, so a cut there is kept."""
    for chunker in (SentenceChunker(SentencesOptions(size=size)),
                    MarkdownChunker(MarkdownOptions(size=size))):
        assert texts(chunker.aieng_chunk_document(Document("d", text))) == expected



@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_a_blank_line_ends_a_sentence_whatever_the_line_ending(end: str) -> None:
    """A blank line ends a sentence with ``\n``, ``\r\n`` or lone ``\r`` (old Mac)
    line endings alike; a single line ending does not."""
    text = f"first para{end}{end}second para{end}still second"
    chunks = SentenceChunker(SentencesOptions(size=30)).aieng_chunk_document(
        Document("d", text))
    assert texts(chunks) == [f"first para{end}{end}", f"second para{end}still second"]


def test_a_long_sentence_is_not_cut_inside_a_crlf() -> None:
    """A sentence cut at whitespace keeps a ``\r\n`` line ending whole: the cut goes
    after it or before it, never between its ``\r`` and ``\n``."""
    chunks = SentenceChunker(SentencesOptions(size=5)).aieng_chunk_document(
        Document("d", "abcd\r\nefgh ijkl"))
    assert texts(chunks) == ["abcd", "\r\n", "efgh ", "ijkl"]


def test_a_long_run_of_stops_is_one_boundary() -> None:
    """A run of 50,000 dots (a ReDoS input: the boundary pattern retried the run from each
    of its dots, quadratic time: minutes for this text) ends a sentence when whitespace
    follows it, and none when a word does."""
    dots = "." * 50_000
    text = f"A{dots} B. C{dots}d"
    chunks = SentenceChunker(SentencesOptions(size=50_003)).aieng_chunk_document(
        Document("d", text))
    assert texts(chunks) == [f"A{dots} ", "B. ", f"C{dots}d"]


# -- markdown ----------------------------------------------------------------------------

MARKDOWN = """\
Preamble line.

# Guide

Intro paragraph.

## Install

```sh
# not a heading: inside a fence
pip install aieng
```

Then run it.

# Reference #
Text right under the heading.
"""


def test_markdown_sections_and_heading_trails() -> None:
    """Each heading starts a section whose chunks carry the heading trail; a ``#`` line
    inside fenced code is no heading; sections are never merged."""
    chunks = MarkdownChunker(MarkdownOptions(size=200)).aieng_chunk_document(
        Document("d", MARKDOWN))
    assert [c.metadata["headings"] for c in chunks] == [
        [], ["Guide"], ["Guide", "Install"], ["Reference"]]
    assert chunks[2].text.startswith("## Install") and "pip install aieng" in chunks[2].text
    assert chunks[3].text == "# Reference #\nText right under the heading.\n"


def test_markdown_packs_paragraphs_and_keeps_code_blocks_whole() -> None:
    """Within a section, paragraphs are packed up to the size; a fenced block with blank
    lines inside stays one unit when it fits."""
    text = "# T\n\npara one.\n\npara two.\n\n```\na\n\nb\n```\n"
    chunks = MarkdownChunker(MarkdownOptions(size=16)).aieng_chunk_document(
        Document("d", text))
    assert texts(chunks) == ["# T\n\npara one.\n\n", "para two.\n\n", "```\na\n\nb\n```\n"]


def test_each_chunk_has_its_own_heading_trail() -> None:
    """Chunks of one section carry equal heading trails, not one shared list: changing one
    chunk's metadata leaves its neighbours' alone."""
    chunks = MarkdownChunker(MarkdownOptions(size=12)).aieng_chunk_document(
        Document("d", "# T\n\naaaa bbbb cccc dddd"))
    assert len(chunks) > 1 and all(c.metadata["headings"] == ["T"] for c in chunks)
    chunks[0].metadata["headings"].append("changed")
    assert [c.metadata["headings"] for c in chunks[1:]] == [["T"]] * (len(chunks) - 1)


def test_leading_blank_lines_join_the_first_heading() -> None:
    """Blank lines before the first heading make no chunk of their own."""
    chunks = MarkdownChunker().aieng_chunk_document(Document("d", "\n\n# Title\nbody"))
    assert texts(chunks) == ["\n\n# Title\nbody"]
    assert chunks[0].metadata["headings"] == ["Title"]



def test_inline_code_at_a_line_start_opens_no_fence() -> None:
    """A line starting with inline code (```` ```x``` ````: a backtick fence's info string
    holds no backtick, CommonMark) is text, so the headings after it still start
    sections; a real fence still hides a ``#`` line."""
    text = ("Intro.\n\n```pip install x``` installs it.\n\n# Usage\n\nUse it.\n\n"
            "```sh\n# comment\n```\n")
    chunks = MarkdownChunker(MarkdownOptions(size=200)).aieng_chunk_document(
        Document("d", text))
    assert [c.metadata["headings"] for c in chunks] == [[], ["Usage"]]
    assert chunks[1].text.startswith("# Usage") and chunks[1].text.endswith("```\n")


@pytest.mark.parametrize("line, title", [
    ("# Title" + " " * 50_000 + "end", "Title" + " " * 50_000 + "end"),
    ("# Title" + " \t" * 25_000 + "#x", "Title" + " \t" * 25_000 + "#x"),
    ("# Title" + " " * 50_000 + "##" + "\t" * 50_000, "Title"),
])
def test_a_heading_with_a_long_blank_run(line: str, title: str) -> None:
    """A heading line holding 50,000 blanks (a ReDoS input: the heading and closing-hash
    patterns were quadratic in them, minutes for this line) keeps its title; closing
    hashes after the run are dropped."""
    chunks = MarkdownChunker(MarkdownOptions(size=200_000)).aieng_chunk_document(
        Document("d", line + "\nbody"))
    assert [c.metadata["headings"] for c in chunks] == [[title]]


# -- semantic ----------------------------------------------------------------------------

TOPICS = ("Cats purr softly. Cats purr loudly. Cats purr often. "
          "Databases store rows. Databases store tables. Databases store indexes.")


@pytest.mark.anyio
async def test_semantic_breaks_where_the_topic_shifts(hashing_embedder: Any) -> None:
    """The chunk ends between the last sentence on cats and the first on databases, the
    adjacent pair least alike; sentences are embedded in batches of ``batch_size``."""
    chunker = SemanticChunker(SemanticOptions(size=1000, percentile=5.0, batch_size=4),
                              embedder=hashing_embedder.aieng_embed)
    chunks = await chunker.aieng_chunk_document(Document("d", TOPICS))
    assert texts(chunks) == ["Cats purr softly. Cats purr loudly. Cats purr often. ",
                             ("Databases store rows. Databases store tables. "
                              "Databases store indexes.")]
    assert [len(batch) for batch in hashing_embedder.calls] == [4, 2]


@pytest.mark.anyio
async def test_semantic_short_texts_need_no_embedding(hashing_embedder: Any) -> None:
    """Two sentences or fewer, or a blank document, are chunked without embedding."""
    chunker = SemanticChunker(embedder=hashing_embedder.aieng_embed)
    assert await chunker.aieng_chunk_document(Document("d", " \n ")) == []
    assert texts(await chunker.aieng_chunk_document(Document("d", "One. Two."))) == [
        "One. Two."]
    assert hashing_embedder.calls == []


@pytest.mark.anyio
async def test_semantic_without_an_embedder_says_so() -> None:
    """Outside a pipeline and without ``embedder=``, the chunker explains what it needs."""
    with pytest.raises(RuntimeError, match="no embedder"):
        await SemanticChunker().aieng_chunk_document(Document("d", TOPICS))


@pytest.mark.anyio
@pytest.mark.parametrize("vectors", [
    lambda n: [[1.0, 0.0] if i % 2 else [1.0] for i in range(n)],  # lengths differ
    lambda n: [[] for _ in range(n)],  # vectors of no dimension
    lambda n: [["a", "b"] for _ in range(n)],  # not numbers
    lambda n: [[1.0, float("nan")] for _ in range(n)],
])
async def test_semantic_names_bad_vectors(vectors: Callable[[int], Any]) -> None:
    """Vectors of differing lengths, of no dimension, not numbers or not finite fail with
    the chunker's own message saying what was expected, not a numpy internal error."""
    chunker = SemanticChunker(embedder=lambda texts, model: vectors(len(texts)))
    with pytest.raises(ValueError, match="one finite vector per sentence"):
        await chunker.aieng_chunk_document(Document("d", TOPICS))


@pytest.mark.anyio
async def test_semantic_names_vectors_whose_length_changes_between_batches() -> None:
    """Batches are compared as they come: a batch of vectors longer than the batch before
    fails with the same message as vectors differing within one batch."""
    calls: list[int] = []

    def embed(texts: Any, model: Any) -> Any:
        calls.append(len(texts))
        return [[1.0, float(len(calls))] + [0.0] * (len(calls) > 1) for _ in texts]

    chunker = SemanticChunker(SemanticOptions(batch_size=4), embedder=embed)
    with pytest.raises(ValueError, match="one finite vector per sentence"):
        await chunker.aieng_chunk_document(Document("d", TOPICS))


@pytest.mark.anyio
async def test_semantic_keeps_one_vector_per_batch_not_one_per_sentence() -> None:
    """A long document's sentence vectors are compared batch by batch and dropped: for 4n
    sentences the memory peak grows by far less than a vector per added sentence (it
    kept them all: 8 KB each at 1,024 dimensions, 800 MB for 100,000 sentences)."""
    import tracemalloc

    import numpy as np

    dim = 1024
    rng = np.random.default_rng(0)

    def embed(texts: Any, model: Any) -> Any:
        return rng.normal(size=(len(texts), dim))

    peaks: list[int] = []
    for count in (500, 2000):
        text = "".join(f"Sentence number {i} is here. " for i in range(count))
        chunker = SemanticChunker(SemanticOptions(size=200, batch_size=64), embedder=embed)
        tracemalloc.start()
        try:
            chunks = await chunker.aieng_chunk_document(Document("d", text))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert "".join(c.text for c in chunks) == text
    assert (peaks[1] - peaks[0]) / 1500 < dim * 8 / 4


@pytest.mark.anyio
async def test_semantic_takes_any_iterable_of_vectors(hashing_embedder: Any) -> None:
    """An embedder returning a generator or a numpy matrix is read like a list."""
    import numpy as np

    def lazily(texts: Any, model: Any) -> Any:
        return (hashing_embedder.vector(text) for text in texts)

    def matrix(texts: Any, model: Any) -> Any:
        return np.array([hashing_embedder.vector(text) for text in texts], dtype=np.float32)

    expected = texts(await SemanticChunker(embedder=hashing_embedder.aieng_embed)
                     .aieng_chunk_document(Document("d", TOPICS)))
    for embedder in (lazily, matrix):
        chunks = await SemanticChunker(embedder=embedder).aieng_chunk_document(
            Document("d", TOPICS))
        assert texts(chunks) == expected and len(expected) == 2


def test_empty_documents_have_no_chunks() -> None:
    """An empty or blank document gives an empty list from every chunker."""
    for chunker in (TokenChunker(), SentenceChunker(), MarkdownChunker()):
        assert chunker.aieng_chunk_document(Document("d", "")) == []
        assert chunker.aieng_chunk_document(Document("d", "\n\t \u3000")) == []


# -- in a pipeline -----------------------------------------------------------------------

LONG = Document("guide", " ".join(f"word{i}" for i in range(40)) + " quokka", title="Guide",
                metadata={"lang": "en"})


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_pipeline_index_chunks_with_the_first_chunker(
    aieng_kernel: Kernel, register_plugin: Register
) -> None:
    """``Pipeline.index`` cuts each document with the first chunker listed and indexes the
    chunks: each chunk is a document of its own, pointing back at its source and offsets."""
    config = {
        "pipeline": {"name": "chunked", "stages": ["retrieve"]},
        "components": {
            "cut": {"use": "tokens", "size": 10, "overlap": 2},
            "other": {"use": "sentences"},
            "docs": {"use": "memory"},
        },
    }
    with register_plugin(aieng_chunkers, "chunkers") as info:
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline(config)
    assert await pipeline.index([LONG]) == 5  # 41 tokens, stride 8
    result = await pipeline.run("quokka")
    hit = result.retrieved[0].document
    assert hit.id == "guide#4" and hit.title == "Guide"
    assert hit.metadata == {"lang": "en", "document_id": "guide", "start": hit.metadata["start"],
                            "end": len(LONG.text)}
    assert LONG.text[hit.metadata["start"]:hit.metadata["end"]] == hit.text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_semantic_chunker_embeds_through_the_pipeline(
    aieng_kernel: Kernel, register_plugin: Register, hash_embed_plugin: Any
) -> None:
    """In a pipeline the semantic chunker embeds sentences with the pipeline's embedding
    component (``context.embed``)."""
    config = {
        "pipeline": {"name": "semantic", "stages": ["retrieve"]},
        "components": {
            "cut": {"use": "semantic", "percentile": 5.0},
            "embedder": {"use": "hash-embed"},
            "docs": {"use": "memory"},
        },
    }
    with register_plugin(aieng_chunkers, "chunkers"), \
            register_plugin(hash_embed_plugin, "hash-embed"):
        pipeline = aieng_kernel.pipeline(config)
    assert await pipeline.index([Document("topics", TOPICS)]) == 2
    result = await pipeline.run("databases tables")
    assert result.retrieved[0].document.id == "topics#1"


@pytest.mark.anyio
async def test_options_are_checked_by_name(aieng_kernel: Kernel,
                                           register_plugin: Register) -> None:
    """A misspelled option or an overlap as large as the size fails the load."""
    with register_plugin(aieng_chunkers, "chunkers"):
        for bad in ({"use": "tokens", "sise": 3}, {"use": "tokens", "size": 3, "overlap": 3},
                    {"use": "semantic", "percentile": 120.0}):
            with pytest.raises(ConfigError, match="components.cut"):
                aieng_kernel.pipeline({"pipeline": {"name": "bad"},
                                       "components": {"cut": bad, "docs": {"use": "memory"}}})


def test_imports_alone_without_numpy() -> None:
    """The plugin module imports with warnings as errors and without numpy."""
    code = ("import sys, aieng_chunkers; "
            "assert 'numpy' not in sys.modules, 'numpy imported at plugin load'")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, env=_env())


def _env() -> dict[str, str]:
    """The environment with this plugin's folder first on the path, installed or not."""
    import os
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}
