"""No chunk boundary inside a character as users see it, beyond marks and emoji joiners:
flags, emoji tag sequences, Hangul jamo, Indic conjuncts, prepended and spacing marks."""

from __future__ import annotations

import itertools

import anyio
import pytest
from aieng_chunkers import (
    MarkdownChunker,
    MarkdownOptions,
    SemanticChunker,
    SemanticOptions,
    SentenceChunker,
    SentencesOptions,
)
from aieng_chunkers._spans import split_long
from aieng_hookspecs.types import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Each a single extended grapheme cluster (UAX #29) that does not merge with its neighbours
# in this list.
CLUSTERS = {
    "flag": "\U0001f1eb\U0001f1f7",  # regional indicators F R
    "tag sequence": "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "hangul jamo": "\u1100\u1161\u11a8",  # L V T
    "hangul LV + T": "\uac00\u11a8",
    "devanagari conjunct": "\u0915\u094d\u0937",  # क्ष
    "bengali conjunct": "\u0995\u09cd\u09b7",
    "arabic prepend": "\u0600\u0661",
    "thai sara am": "\u0e01\u0e33",
    "zwnj": "\u0628\u200c",
    "halfwidth voiced": "\uff76\uff9e",
    "zwj family": "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "keycap": "1\ufe0f\u20e3",
    "accent": "e\u0301",
}
_PLAIN = list(" ab\n.#")  # one character each: clusters of their own


def _boundaries(clusters: list[str]) -> set[int]:
    return {0, *itertools.accumulate(len(c) for c in clusters)}


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_a_long_run_of_one_cluster_is_cut_between_clusters(name: str) -> None:
    clusters = [CLUSTERS[name]] * 9
    text = "".join(clusters)
    allowed = _boundaries(clusters)
    width = len(CLUSTERS[name])
    for size in range(width, 3 * width + 2):
        pieces = split_long(text, (0, len(text)), size)
        assert pieces[0][0] == 0 and pieces[-1][1] == len(text)
        assert all(end - start <= size for start, end in pieces)
        cuts = {start for start, _ in pieces}
        assert cuts <= allowed, (name, size, sorted(cuts - allowed))


def test_flags_are_paired_from_the_start_of_their_run() -> None:
    # Six regional indicators are three flags; a cut after the third indicator splits one.
    text = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea\U0001f1ef\U0001f1f5"
    assert split_long(text, (0, 6), 3) == [(0, 2), (2, 4), (4, 6)]


_CLUSTER_LISTS = st.lists(st.sampled_from([*CLUSTERS.values(), *_PLAIN]), max_size=60)
_PROPERTY = settings(max_examples=120, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(clusters=_CLUSTER_LISTS, size=st.integers(7, 40))
def test_text_chunkers_cut_between_clusters(hashing_embedder: object, clusters: list[str],
                                            size: int) -> None:
    """With every cluster fitting in ``size``, no chunk starts or ends inside one."""
    text = "".join(clusters)
    allowed = _boundaries(clusters)
    document = Document("doc", text)
    semantic = SemanticChunker(SemanticOptions(size=size),
                               embedder=hashing_embedder.aieng_embed)  # type: ignore[attr-defined]
    for chunks in (
        SentenceChunker(SentencesOptions(size=size, overlap=1)).aieng_chunk_document(document),
        MarkdownChunker(MarkdownOptions(size=size)).aieng_chunk_document(document),
        anyio.run(semantic.aieng_chunk_document, document),
    ):
        for chunk in chunks:
            assert chunk.end - chunk.start <= size
            assert {chunk.start, chunk.end} <= allowed, (chunk.start, chunk.end, text)


@pytest.mark.parametrize("text", ["e" + "\u0301" * 95, "\u0915\u094d" * 48])
def test_a_cluster_longer_than_size_is_cut_at_size(text: str) -> None:
    # A base with 95 marks (Zalgo text) is one character as users see it, longer than any
    # chunk: it is cut at the size, not into pieces of one code point (which took
    # quadratic time: 20,000 marks took seconds).
    pieces = split_long(text, (0, len(text)), 10)
    assert [end - start for start, end in pieces] == [10] * 9 + [6]
