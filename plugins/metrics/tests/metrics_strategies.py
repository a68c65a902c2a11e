"""Hypothesis strategies of the metrics tests: text that exercises the tokenizers."""

from __future__ import annotations

from hypothesis import strategies as st

# Words that repeat (so n-grams match), punctuation and symbols each 13a rule touches,
# digits around periods, commas and dashes, HTML entities, newlines and non-ASCII text.
_PIECES = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "The", "Cat", "running", "runs", "ran",
    "generously", "generation", "3", "42", "3.14", "1,000", "2-3", "-", ".", ",", "!", "?",
    "(", ")", "[x]", "{y}", "&", "&amp;", "&quot;", "&lt;b&gt;", "<skipped>", "it's",
    "e.g.", "U.S.", "a-b", "x--y", "9-", "..", ",,", "'", '"', "/", "@home", "#1", "$5",
    "~", "`", "^", "_", "|", "\\", "café", "naïve", "東京", "日本", "Ünïcödé", "ß", "ǅ",
    "İstanbul", "Ⅻ", "ﬁ", "\u00a0", "\u2003", "end.", "end ."
]
_SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", "", " - ", "-\n", "\r\n"])


@st.composite
def texts(draw: st.DrawFn, max_pieces: int = 14) -> str:
    """A sentence-like string from the pieces above, sometimes fully random text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    pieces = draw(st.lists(st.sampled_from(_PIECES), max_size=max_pieces))
    out = []
    for piece in pieces:
        out.append(piece)
        out.append(draw(_SEPARATORS))
    return "".join(out)


def reference_lists(min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[list[str]]:
    """One to three references."""
    return st.lists(texts(), min_size=min_size, max_size=max_size)
