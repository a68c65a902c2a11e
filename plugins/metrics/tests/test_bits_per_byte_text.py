"""Bits per byte of token text holding surrogates: halves of a character split across
tokens (UTF-16, as JSON carries them) count as the character's UTF-8 bytes; a lone
half counts as the replacement character's (U+FFFD, 3 bytes), never an error."""

from __future__ import annotations

import json
import math

import pytest
from aieng_hookspecs.types import Sample, TokenLogprob
from aieng_metrics import bits_per_byte
from aieng_metrics._judges_text import PerplexityJudge
from hypothesis import given, settings
from hypothesis import strategies as st


def _utf16_units(text: str) -> list[str]:
    """``text`` as its UTF-16 code units, each a one-character str (a character past the
    BMP becomes its two surrogates, as a JSON decoder gives split halves)."""
    data = text.encode("utf-16-le")
    return [chr(int.from_bytes(data[i:i + 2], "little")) for i in range(0, len(data), 2)]


def test_a_lone_surrogate_counts_as_the_replacement_characters_bytes() -> None:
    """Half an emoji alone: U+FFFD's 3 UTF-8 bytes (an error before)."""
    lps = [TokenLogprob("ab", -math.log(2) * 5), TokenLogprob("\ud83d", -math.log(2))]
    # 6 bits over "ab" (2 bytes) + U+FFFD (3 bytes).
    assert bits_per_byte(lps) == pytest.approx(6 / 5)
    assert bits_per_byte([-math.log(2) * 3], "\udcff") == pytest.approx(1.0)


def test_a_character_split_across_tokens_counts_its_own_bytes() -> None:
    """"\\ud83d" + "\\ude00" spell 😀: its 4 UTF-8 bytes, as if the token were whole."""
    halves = [TokenLogprob("\ud83d", -math.log(2)), TokenLogprob("\ude00", -math.log(2))]
    assert bits_per_byte(halves) == pytest.approx(2 / 4)
    assert bits_per_byte(halves) == bits_per_byte([-math.log(2)] * 2, "😀")


@settings(max_examples=80, deadline=None)
@given(text=st.text(min_size=1, max_size=20), bits=st.floats(0.0, 1e6))
def test_splitting_text_into_utf16_units_does_not_change_bits_per_byte(
        text: str, bits: float) -> None:
    """Any text, its characters past the BMP given as surrogate halves, one per token:
    the bytes counted are the text's own UTF-8 bytes (the oracle: ``len(text.encode())``)."""
    units = _utf16_units(text)
    lps = [TokenLogprob(unit, -bits * math.log(2) / len(units)) for unit in units]
    expected = bits / len(text.encode("utf-8"))
    assert bits_per_byte(lps) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_judge_scores_split_halves_from_json_metadata() -> None:
    """Metadata read from JSON ("\\ud83d" alone is valid JSON): scored, not an error."""
    raw = json.loads('[{"token": "a", "logprob": -0.6931471805599453},'
                     ' {"token": "\\ud83d", "logprob": -0.6931471805599453}]')
    sample = Sample(input="q", output="a", metadata={"logprobs": raw})
    scores = {s.name: s.value for s in PerplexityJudge().aieng_judge(sample) or []}
    assert scores["bits_per_byte"] == pytest.approx(2 / 4)  # 2 bits, "a" + U+FFFD
