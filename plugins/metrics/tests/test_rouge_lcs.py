"""ROUGE-L's LCS length without rouge-score: the bit-parallel length equals a plain
dynamic programme on any token lists (shared prefixes and suffixes, tokens only one side
has, empty and identical lists), and a long answer of distinct tokens costs memory linear
in its length, not quadratic."""

from __future__ import annotations

import sys
import tracemalloc

from aieng_metrics import _rouge, lcs_length, rouge
from hypothesis import given, settings
from hypothesis import strategies as st


def _lcs_dp(a: list[str], b: list[str]) -> int:
    """The textbook quadratic table, one row at a time."""
    previous = [0] * (len(b) + 1)
    for token in a:
        row = [0]
        for j, other in enumerate(b):
            row.append(previous[j] + 1 if token == other else max(previous[j + 1], row[j]))
        previous = row
    return previous[-1]


_SMALL = st.lists(st.sampled_from("abc"), max_size=40)
_WIDE = st.lists(st.sampled_from("abcdefghijklmnopqrstuvwxyzé東"), max_size=40)


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Two token lists: a shared prefix and suffix around two middles, or identical."""
    middle = _SMALL if draw(st.booleans()) else _WIDE
    prefix, suffix = draw(_SMALL), draw(_SMALL)
    a = prefix + draw(middle) + suffix
    if draw(st.integers(0, 5)) == 0:
        return a, list(a)
    return a, prefix + draw(middle) + suffix


@settings(max_examples=400, deadline=None)
@given(_pairs(), st.sampled_from([_rouge._SHORT, 0]))
def test_lcs_length_equals_the_dynamic_programme(pair: tuple[list[str], list[str]],
                                                 short: int) -> None:
    """Equal to the table, in both argument orders, on lists up to 120 tokens: by the
    plain loop sentences take, and (``_SHORT`` 0) by the reductions long texts take."""
    a, b = pair
    expected = _lcs_dp(a, b)
    kept = _rouge._SHORT
    _rouge._SHORT = short
    try:
        assert lcs_length(a, b) == expected
        assert lcs_length(b, a) == expected
        assert lcs_length(tuple(a), b) == expected
    finally:
        _rouge._SHORT = kept


def test_lcs_length_edge_cases() -> None:
    """Empty, identical, disjoint and one-token-only inputs."""
    assert lcs_length([], []) == 0
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["a"] * 300, ["a"] * 300) == 300
    assert lcs_length(["a"] * 300, ["a"] * 7) == 7
    assert lcs_length([f"x{i}" for i in range(200)], [f"y{i}" for i in range(200)]) == 0
    words = [f"w{i % 97}" for i in range(500)]
    assert lcs_length(words, words[::-1]) == _lcs_dp(words, words[::-1])


def test_long_answer_of_distinct_tokens_holds_linear_memory() -> None:
    """A runaway answer of 30,000 distinct tokens against a four-token reference: ROUGE-L
    and ROUGE-Lsum (one line) hold a few MB (a bit mask per answer token held one
    ~2 KB integer each: 60 MB here, 60 GB at a million tokens), and the scores are
    exact: only ``42`` is shared."""
    n = 30_000
    prediction = " ".join(str(i) for i in range(n))
    tracemalloc.start()
    try:
        scores = rouge(prediction, "the answer is 42", ["rougeL", "rougeLsum"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000
    for kind in ("rougeL", "rougeLsum"):
        assert scores[kind].recall == 1 / 4
        assert scores[kind].precision == 1 / n


def test_rouge_lsum_read_out_does_not_step_through_a_long_answer() -> None:
    """The LCS read-out of ROUGE-Lsum jumps over a run of left moves in one step: on a
    20,000-token tail of one repeated word after the reference, it reads table cells
    (population counts of whole rows) a few times per reference token, not twice per
    answer token (which made a million-token answer quadratic: minutes). The union LCS is
    still the whole reference."""
    n = 20_000
    reference = "the answer is forty two"
    prediction = reference + " forty" * n
    counts = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal counts
        if event == "c_call" and getattr(arg, "__name__", "") == "bit_count":
            counts += 1

    sys.setprofile(profile)
    try:
        score = rouge(prediction, reference, ["rougeLsum"])["rougeLsum"]
    finally:
        sys.setprofile(None)
    assert counts < 100
    assert score.recall == 1.0
    assert score.precision == 5 / (n + 5)
