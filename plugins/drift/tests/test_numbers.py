"""The numbers drift detection reports, against independent computations: word counts of
every script, the centroid distance's range, PSI by its definition, and the reasons'
rounded numbers on the right side of their thresholds."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from aieng_drift import DriftMonitor, DriftOptions, categorical_psi, centroid_distance, psi
from aieng_drift._monitor import _fires, tokenize
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

# -- word counts -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "words"), [
    ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),            # Devanagari: vowel signs are marks
    ("বাংলা ভাষা", ["বাংলা", "ভাষা"]),              # Bengali
    ("தமிழ் மொழி", ["தமிழ்", "மொழி"]),              # Tamil
    ("İstanbul'a", ["i̇stanbul", "a"]),             # İ lower-cases to i + a combining dot
    ("cafe\u0301s cre\u0300me", ["cafés", "crème"]),  # decomposed accents (NFD)
    ("Où est MON colis? 東京!", ["où", "est", "mon", "colis", "東京"]),
])
def test_a_word_is_one_token_in_every_script(text: str, words: list[str]) -> None:
    """A word whose letters carry combining marks (Indic vowel signs, decomposed accents,
    the dot of a lower-cased İ) is one token, its marks kept: the length detector counts
    words, not the pieces between marks."""
    assert tokenize(text) == words


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_tokens_do_not_depend_on_the_normalization_form(text: str) -> None:
    """The same text composed (NFC) or decomposed (NFD) has the same tokens, as a user
    sees the same words (macOS clients send NFD)."""
    assert tokenize(unicodedata.normalize("NFD", text)) == tokenize(
        unicodedata.normalize("NFC", text))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["हिन्दी", "naïve", "cafe\u0301", "東京", "x_1", "İz"]),
                max_size=8),
       st.lists(st.sampled_from([" ", ", ", "! ", "\n", " - "]), min_size=8, max_size=8))
def test_the_length_is_the_number_of_words(words: list[str], gaps: list[str]) -> None:
    """The length detector's item is the number of words written, whatever their script
    and the punctuation between them."""
    text = "".join(word + gap for word, gap in zip(words, gaps, strict=False))
    monitor = DriftMonitor(DriftOptions(detectors=("length",), reference_size=2))
    monitor.observe_text(text)
    assert monitor.window("length").reference == [len(words)]


# -- the centroid distance ---------------------------------------------------------------


def _cosine_distance_by_definition(u: list[float], v: list[float]) -> float:
    dot = math.fsum(a * b for a, b in zip(u, v, strict=True))
    norms = math.sqrt(math.fsum(a * a for a in u)) * math.sqrt(math.fsum(b * b for b in v))
    return 1.0 - dot / norms


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.randoms(use_true_random=False))
def test_the_centroid_distance_is_in_its_range_and_equals_its_definition(
        dim: int, n: int, m: int, rnd: object) -> None:
    """The distance is 1 - cos of the mean vectors (within 1e-12), and in [0, 2] as
    documented: never a rounding error below 0, even for one window against itself."""
    rng = np.random.default_rng(rnd.randrange(2**32))  # type: ignore[attr-defined]
    ref, cur = rng.normal(size=(n, dim)), rng.normal(size=(m, dim))
    distance = centroid_distance(ref, cur)
    assert 0.0 <= distance <= 2.0
    expected = _cosine_distance_by_definition(list(ref.mean(axis=0)), list(cur.mean(axis=0)))
    assert distance == pytest.approx(max(expected, 0.0), abs=1e-12)
    assert 0.0 <= centroid_distance(ref, ref) <= 1e-12


def test_an_embedding_window_against_itself_reports_no_negative_distance() -> None:
    """A check of the embedding detector on the reference's own vectors reports a distance
    of 0 to rounding, never below it (it was -2.2e-16 in the metrics), and a p-value of 1."""
    vectors = np.random.default_rng(8).normal(size=(5, 7)).tolist()  # -2.2e-16 unclipped
    monitor = DriftMonitor(DriftOptions(detectors=("embedding",), reference_size=5,
                                        window_size=5, check_every=5, permutations=20))
    monitor.set_reference(embeddings=vectors)
    results = [r for v in vectors for r in monitor.observe_embedding(v)]
    assert [r.p_value for r in results] == [1.0]
    assert 0.0 <= results[0].statistic <= 1e-12
    assert 0.0 <= monitor.metrics()["aieng_drift_cosine_distance"]["embedding"] <= 1e-12


# -- PSI by its definition ---------------------------------------------------------------


def _psi_by_definition(reference: list[int], current: list[int], bins: int,
                       epsilon: float) -> float:
    """PSI written out: the reference's quantiles (linear interpolation, Python's
    ``statistics`` module), a bin per gap between distinct edges (``(low, high]``), a bin
    below the minimum when the lowest edge is the minimum, shares floored at epsilon."""
    import statistics

    cuts = (statistics.quantiles(reference, n=bins, method="inclusive")
            if len(reference) > 1 else [float(reference[0])] * (bins - 1))
    edges = sorted(set(cuts))
    if edges[0] == min(reference):  # a bin of its own below the minimum (integer data)
        edges = [min(reference) - 0.5, *edges]

    def shares(values: list[int]) -> list[float]:
        counts = [0] * (len(edges) + 1)
        for x in values:
            counts[sum(1 for e in edges if e < x)] += 1
        return [max(c / len(values), epsilon) for c in counts]

    p, q = shares(reference), shares(current)
    return math.fsum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))


_ints = st.lists(st.integers(-3, 8), min_size=1, max_size=50)


@settings(max_examples=300, deadline=None)
@given(_ints, _ints, st.integers(2, 12), st.sampled_from([1e-4, 1e-3, 0.05]))
def test_psi_equals_its_definition(reference: list[int], current: list[int], bins: int,
                                   epsilon: float) -> None:
    """The numeric PSI equals PSI written out by hand (bins from another quantile code)."""
    assert psi(reference, current, bins=bins, epsilon=epsilon) == pytest.approx(
        _psi_by_definition(reference, current, bins, epsilon), rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefg"), st.integers(1, 9), min_size=1),
       st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 9), min_size=1),
       st.integers(1, 8))
def test_categorical_psi_equals_its_definition(reference: dict[str, int],
                                               current: dict[str, int], top: int) -> None:
    """The categorical PSI: the reference's ``top`` most frequent categories (ties: the
    smaller name) and one bucket for the rest, shares floored at epsilon."""
    ranked = sorted(reference.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [k for k, _ in ranked[:top]]
    ref_total, cur_total = sum(reference.values()), sum(current.values())
    p = [reference[k] / ref_total for k in kept]
    p.append(1.0 - math.fsum(p))
    q = [current.get(k, 0) / cur_total for k in kept]
    q.append(sum(v for k, v in current.items() if k not in kept) / cur_total)
    expected = math.fsum((max(b, 1e-4) - max(a, 1e-4)) * math.log(max(b, 1e-4) / max(a, 1e-4))
                         for a, b in zip(p, q, strict=True))
    assert categorical_psi(Counter(reference), Counter(current), top=top) == pytest.approx(
        expected, rel=1e-9, abs=1e-12)


# -- the numbers in a reason -------------------------------------------------------------

_SHOWN = re.compile(r"(?:p-value|PSI) (\S+) (<|>=) (\S+)")


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-6, 1.0, exclude_min=False), st.floats(0.0, 1.0),
       st.floats(1e-3, 5.0), st.floats(0.0, 10.0))
def test_a_reason_shows_numbers_on_the_right_side_of_their_thresholds(
        alpha: float, p_value: float, threshold: float, value: float) -> None:
    """A fired check's reason reads true: the p-value it shows is below the alpha it
    shows, the PSI at or above the threshold (``0.0099996`` is not shown as ``0.01 <
    0.01``, nor a PSI of ``0.20041`` as ``0.2 >= 0.2004``)."""
    options = DriftOptions(alpha=alpha, psi_threshold=threshold)
    fired, reason = _fires(options, p_value, value)
    assert fired == (p_value < alpha or value >= threshold) == bool(reason)
    for part in filter(None, reason.split("; ")):
        found = _SHOWN.search(part)
        assert found is not None, part
        shown, sign, bound = float(found[1]), found[2], float(found[3])
        assert shown < bound if sign == "<" else shown >= bound


@pytest.mark.parametrize(("p_value", "psi_value", "expected"), [
    (0.0099996, 0.1, "KS p-value 0.0099996 < 0.01"),
    (0.5, 0.20041, "PSI 0.2004 >= 0.2004"),
    (0.001234, 0.31, "KS p-value 0.00123 < 0.01; PSI 0.31 >= 0.2004"),
])
def test_reasons_keep_three_digits_unless_more_are_needed(p_value: float, psi_value: float,
                                                          expected: str) -> None:
    """Three significant digits as before, more only where three would cross the bound."""
    options = DriftOptions(alpha=0.01, psi_threshold=0.2004)
    assert _fires(options, p_value, psi_value) == (True, expected)


def test_a_reference_file_of_the_older_words_says_how_to_renew_it(tmp_path: Path) -> None:
    """The reference file records how words were told apart; a file without the mark
    (written before combining marks stayed in words) loads as before, with a warning
    naming the detectors and ``reset_reference``; a file with it loads silently."""
    path = tmp_path / "drift.json"
    monitor = DriftMonitor(DriftOptions(detectors=("length", "vocabulary"), reference_size=2,
                                        reference_path=str(path)))
    monitor.set_reference(texts=["हिन्दी भाषा", "one two three"])
    document = json.loads(path.read_text("utf-8"))
    assert document["options"]["words"] == 2
    assert document["windows"]["length"] == [2, 3]
    with capture_logs() as logs:
        DriftMonitor(DriftOptions(detectors=("length", "vocabulary"), reference_size=2,
                                  reference_path=str(path)))
    assert [e for e in logs if e["log_level"] == "warning"] == []
    del document["options"]["words"]
    path.write_text(json.dumps(document), "utf-8")
    with capture_logs() as logs:
        older = DriftMonitor(DriftOptions(detectors=("length", "vocabulary"),
                                          reference_size=2, reference_path=str(path)))
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["detectors"]) for e in warned] == [
        ("drift.reference_words_changed", ["length", "vocabulary"])]
    assert "reset_reference" in warned[0]["hint"]
    assert older.window("length").reference == [2, 3]
