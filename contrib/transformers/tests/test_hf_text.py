"""Incremental decoding and stop strings, without a model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from aieng_transformers._text import IncrementalDecoder, StopBuffer, clean
from hypothesis import given
from hypothesis import strategies as st


def _utf8(ids: Sequence[int]) -> str:
    return bytes(ids).decode("utf-8", "replace")


def test_decoder_never_splits_a_character() -> None:
    """Bytes pushed one at a time come out as whole characters, and join to the text."""
    text = "héllo ✓ 東京 🙂!"
    decoder = IncrementalDecoder(_utf8)
    pieces = [decoder.push(b) for b in text.encode()]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert "🙂" in pieces  # four tokens, released as one piece


def test_decoder_flush_marks_an_incomplete_character() -> None:
    """A character cut off by the end of generation comes out as U+FFFD, once."""
    decoder = IncrementalDecoder(_utf8)
    assert decoder.push(ord("a")) == "a"
    assert decoder.push(0xC3) == ""
    assert decoder.flush() == "\ufffd"
    assert decoder.flush() == ""


def test_decoder_context_is_not_output() -> None:
    """Context ids shape the window but are never part of the released text."""
    decoder = IncrementalDecoder(_utf8, context=list(b"prompt: "))
    assert decoder.push(ord("x")) == "x"


@given(st.text(max_size=40))
def test_decoder_round_trips_any_text(text: str) -> None:
    """Any text pushed byte by byte joins back to itself."""
    decoder = IncrementalDecoder(_utf8)
    pieces = [decoder.push(b) for b in text.encode("utf-8", "surrogatepass")]
    joined = "".join(pieces) + decoder.flush()
    assert joined == text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def test_stop_spanning_pieces_is_cut() -> None:
    """A stop string split over pieces is never released, and ends the stream."""
    buffer = StopBuffer(["END"])
    assert buffer.feed("abc E") == "abc "
    assert buffer.feed("N") == ""
    assert buffer.feed("D and more") == ""
    assert buffer.stopped and buffer.flush() == ""


def test_held_prefix_is_released_when_it_diverges() -> None:
    """Text held as a possible stop prefix is released once it cannot be one."""
    buffer = StopBuffer(["###"])
    assert buffer.feed("a #") == "a "
    assert buffer.feed("#") == ""
    assert buffer.feed("x") == "##x"
    assert buffer.feed("#") == ""
    assert buffer.flush() == "#" and not buffer.stopped


def test_earliest_stop_wins() -> None:
    """With several stop strings, the text is cut at the first one to occur."""
    assert StopBuffer(["world", "lo"]).feed("hello world") == "hel"


@given(text=st.text("abc", max_size=30), stops=st.lists(st.text("abc", min_size=1, max_size=3),
                                                         max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=6))
def test_stop_buffer_matches_a_plain_cut(text: str, stops: list[str], cuts: list[int]) -> None:
    """However the text is split into pieces, the released text is the text up to the first
    stop string (all of it when none occurs). Generation stops at the first piece that
    completes a stop string, so that piece's end bounds the search: with stops ``a`` and
    ``baa``, pieces ``ba`` + ``a`` stop at ``b`` (``baa`` is never completed), one piece
    ``baa`` at the empty text."""
    buffer = StopBuffer(stops)
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    released = "".join(buffer.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    released += buffer.flush()
    expected, found = text, False
    for end in bounds:
        starts = [text[:end].find(s) for s in stops if s in text[:end]]
        if starts:
            expected, found = text[:min(starts)], True
            break
    assert released == expected
    assert buffer.stopped == found


def test_a_stop_completed_first_wins_over_a_longer_one_begun_earlier() -> None:
    """The counterexample of the plain cut: ``a`` completes in ``ba`` before ``baa`` can,
    so generation stops there (as it would token by token)."""
    buffer = StopBuffer(["a", "baa"])
    assert buffer.feed("ba") == "b" and buffer.stopped


def test_clean_replaces_lone_surrogates() -> None:
    """Text UTF-8 cannot encode is repaired instead of failing in the tokenizer."""
    assert clean("a\ud800b") == "a\ufffdb"
    assert clean("ok ✓") == "ok ✓"


def test_repetition_penalty_lowers_only_the_given_tokens() -> None:
    """The penalty divides positive and multiplies negative logits of the given tokens,
    and leaves the others alone."""
    import torch
    from aieng_transformers._sampling import penalize

    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = penalize(logits, {0, 1}, 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]
    assert logits.tolist() == [2.0, -2.0, 1.0, 0.5]  # a new tensor, the input untouched
