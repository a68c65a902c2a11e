"""The drift monitor: windows, checks every K items, synthetic shifted vs unshifted
streams (fixed seeds), metrics and their Prometheus text."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from aieng_drift import (
    DriftMonitor,
    DriftOptions,
    DriftResult,
    Window,
    categorical_psi,
    tokenize,
)
from aieng_drift._monitor import _tally, _vocabulary
from hypothesis import given, settings
from hypothesis import strategies as st

WORDS = ["refund", "order", "invoice", "card", "payment", "charge", "bill", "account", "plan", "price", "receipt", "upgrade", "renewal", "discount"]
OTHER = ["crash", "server", "error", "install", "driver", "update", "sync", "upload", "timeout", "certificate", "browser", "bluetooth", "webhook", "export"]


def texts(seed: int, count: int, words: tuple[str, ...] | list[str] = WORDS,
          mean_words: float = 8.0) -> list[str]:
    """``count`` synthetic requests: Poisson(mean) + 1 words drawn from ``words``."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.poisson(mean_words)) + 1))
            for _ in range(count)]


def options(**values: object) -> DriftOptions:
    """Windows of 200, a check every 100 items."""
    base: dict[str, object] = {"reference_size": 200, "window_size": 200, "check_every": 100}
    base.update(values)
    return DriftOptions(**base)  # type: ignore[arg-type]


def test_window_freezes_slides_and_checks_every_k() -> None:
    """The first N items freeze the reference; the current window slides over M items;
    a check falls due once it is full and then every K items."""
    window: Window[int] = Window(3, 4, 2)
    for item in range(3):
        window.add(item)
    assert window.frozen and window.reference == [0, 1, 2]
    due = []
    for item in range(3, 12):
        window.add(item)
        due.append(window.due())
        if window.due():
            window.since_check = 0
    assert due == [False, False, False, True, False, True, False, True, False]
    assert list(window.current) == [8, 9, 10, 11] and window.reference == [0, 1, 2]


def test_unshifted_stream_does_not_fire() -> None:
    """Reference and current from the same generator (seeds 1 and 2): no detector fires
    over four checks."""
    monitor = DriftMonitor(options())
    results: list[DriftResult] = []
    for text in texts(1, 200) + texts(2, 500):
        results += monitor.observe_text(text)
    assert {r.detector for r in results} == {"length", "vocabulary"}
    assert len(results) == 8 and not any(r.fired for r in results)
    assert all(r.reference_size == 200 and r.window_size == 200 for r in results)


def test_longer_requests_fire_the_length_detector() -> None:
    """Requests twice as long: the length detector fires on KS and PSI, the vocabulary
    detector (same words) does not."""
    fired: list[DriftResult] = []
    monitor = DriftMonitor(options(), on_drift=fired.append)
    for text in texts(1, 200) + texts(2, 200, mean_words=16.0):
        monitor.observe_text(text)
    assert [r.detector for r in fired] == ["length"]
    result = fired[0]
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.psi is not None and result.psi > 0.5
    assert "KS p-value" in result.reason and "PSI" in result.reason
    assert monitor.last["vocabulary"].fired is False


def test_new_vocabulary_fires_the_vocabulary_detector() -> None:
    """Half the current requests about another topic, same length: vocabulary fires,
    length does not."""
    monitor = DriftMonitor(options())
    mixed = [a if i % 2 else b for i, (a, b) in
             enumerate(zip(texts(2, 200), texts(3, 200, words=OTHER)))]
    for text in texts(1, 200) + mixed:
        monitor.observe_text(text)
    assert monitor.last["vocabulary"].fired and monitor.last["vocabulary"].psi > 1.0  # type: ignore[operator]
    assert not monitor.last["length"].fired


def test_requests_without_words_are_a_vocabulary_not_an_error() -> None:
    """A window of requests without a word (empty user messages) is compared like any
    other: the vocabulary detector fires instead of raising at every new item; a
    reference of such requests works too."""
    monitor = DriftMonitor(options())
    for text in texts(1, 200) + ["", " ?! "] * 100:
        monitor.observe_text(text)
    assert monitor.last["vocabulary"].fired
    empty_first = DriftMonitor(options())
    for text in [""] * 200 + texts(1, 200):
        empty_first.observe_text(text)
    assert empty_first.last["vocabulary"].fired


def test_score_drift_and_set_reference() -> None:
    """An explicit score reference; a current window of lower faithfulness fires, one from
    the same distribution does not."""
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(options(window_size=100, check_every=100))
    monitor.set_reference(scores={"faithfulness": rng.beta(8, 2, size=300)})
    same = [r for v in rng.beta(8, 2, size=100) for r in monitor.observe_score("faithfulness", v)]
    assert [r.fired for r in same] == [False]
    lower = [r for v in rng.beta(5, 3, size=100)
             for r in monitor.observe_score("faithfulness", v)]
    assert len(lower) == 1
    result = lower[0]
    assert result.detector == "score:faithfulness" and result.fired
    assert result.reference_size == 300


def test_embedding_drift() -> None:
    """Embeddings around one direction, then around another: the embedding detector fires
    on the permutation p-value; the same direction does not."""
    rng = np.random.default_rng(9)
    monitor = DriftMonitor(options(detectors=("embedding",), window_size=50, check_every=50,
                                   permutations=200))
    base, other = np.eye(8)[0], np.eye(8)[0] + np.eye(8)[1]
    monitor.set_reference(embeddings=base + 0.6 * rng.normal(size=(100, 8)))
    same = [r for v in base + 0.6 * rng.normal(size=(50, 8))
            for r in monitor.observe_embedding(v.tolist())]
    moved = [r for v in other + 0.6 * rng.normal(size=(50, 8))
             for r in monitor.observe_embedding(v.tolist())]
    assert [r.fired for r in same] == [False] and [r.fired for r in moved] == [True]
    assert moved[0].method == "centroid-permutation" and moved[0].psi is None
    assert monitor.observe_text("ignored: the text detectors are off") == []


def test_metrics_and_prometheus_text() -> None:
    """After checks, metrics hold each detector's last values and counters, and the text
    exposition has HELP/TYPE lines and labelled samples."""
    monitor = DriftMonitor(options())
    for text in texts(1, 200) + texts(2, 200, mean_words=16.0):
        monitor.observe_text(text)
    metrics = monitor.metrics()
    assert metrics["aieng_drift_detected"] == {"length": 1.0, "vocabulary": 0.0}
    assert metrics["aieng_drift_checks_total"] == {"length": 1.0, "vocabulary": 1.0}
    assert set(metrics["aieng_drift_ks_statistic"]) == {"length"}
    assert metrics["aieng_drift_psi"]["length"] == monitor.last["length"].psi
    text = monitor.prometheus_text({"pipeline": 'q"a'})
    assert "# TYPE aieng_drift_psi gauge" in text
    assert "# TYPE aieng_drift_checks_total counter" in text
    assert 'aieng_drift_detected{detector="length",pipeline="q\\"a"} 1.0' in text
    assert "aieng_drift_cosine_distance" not in text  # no sample, no metric


@pytest.mark.parametrize("labels", [{"pipeline-name": "qa"}, {"1st": "qa"},
                                    {"__name__": "qa"}, {"detector": "again"}])
def test_prometheus_text_refuses_labels_that_break_the_exposition(
        labels: dict[str, str]) -> None:
    """An extra label whose name the text format does not allow, or a second
    ``detector`` label, is a ValueError: rendered, it made Prometheus reject the whole
    scrape."""
    monitor = DriftMonitor(DriftOptions(detectors=("score",), reference_size=2,
                                        window_size=2, check_every=1))
    for value in (0.1, 0.2, 0.3, 0.4):
        monitor.observe_score("faithfulness", value)
    with pytest.raises(ValueError, match="label"):
        monitor.prometheus_text(labels)
    assert 'pipeline="qa"}' in monitor.prometheus_text({"pipeline": "qa"})

def test_non_finite_items_are_refused_and_do_not_poison_the_detector() -> None:
    """A NaN score or embedding is refused with a clear error when observed, not kept
    (a kept NaN made every later check of its detector fail)."""
    monitor = DriftMonitor(DriftOptions(detectors=("score", "embedding"), reference_size=3,
                                        window_size=3, check_every=1))
    with pytest.raises(ValueError, match="finite"):
        monitor.observe_score("faithfulness", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        monitor.observe_embedding([0.1, float("inf")])
    results = [r for v in (0.1, 0.2, 0.3, 0.9, 0.9, 0.9)
               for r in monitor.observe_score("faithfulness", v)]
    assert [r.detector for r in results] == ["score:faithfulness"]
    assert monitor.window("embedding").reference == []


def test_an_embedding_of_another_length_is_refused() -> None:
    """A vector of another dimension than the earlier ones is refused, not kept to break
    every later check of the embedding detector."""
    monitor = DriftMonitor(options(detectors=("embedding",), reference_size=2, window_size=2,
                                   check_every=1, permutations=20))
    monitor.observe_embedding([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="2 dimensions, after ones of 3"):
        monitor.observe_embedding([1.0, 0.0])
    for vector in ([0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.9, 0.1, 0.0]):
        monitor.observe_embedding(vector)
    assert monitor.last["embedding"].window_size == 2


def test_check_needs_a_reference() -> None:
    """Checking a detector without a frozen reference fails with the counts."""
    monitor = DriftMonitor(options())
    monitor.observe_text("hello")
    with pytest.raises(ValueError, match="needs a frozen reference"):
        monitor.check_one("length")
    assert monitor.check() == []


@pytest.mark.parametrize(("bad", "message"), [
    ({"detectors": ("length", "colour")}, "unknown detector 'colour'"),
    ({"reference_size": 1}, "reference_size"), ({"alpha": 0}, "alpha"),
    ({"fire_on": "either"}, "fire_on"), ({"check_every": True}, "check_every")])
def test_options_errors(bad: dict[str, object], message: str) -> None:
    """Unknown detectors and out-of-range thresholds are refused, naming the option."""
    with pytest.raises((TypeError, ValueError), match=message):
        DriftOptions(**bad)  # type: ignore[arg-type]


def test_tokenize() -> None:
    """Tokens are lower-cased words, Unicode included."""
    assert tokenize("Où est MON colis? 東京!") == ["où", "est", "mon", "colis", "東京"]


@pytest.mark.parametrize("reference", [
    {"scores": {"faithfulness": [0.5, float("nan"), 0.7]}},
    {"scores": {"faithfulness": [0.5, float("inf")]}},
    {"embeddings": [[1.0, 0.0], [0.0, float("nan")]]},
    {"embeddings": [[1.0, 0.0], [0.0, 1.0, 0.0]]},
    {"embeddings": [[], []]}])
def test_a_bad_reference_is_refused_when_set(reference: dict[str, object]) -> None:
    """A reference holding NaN, infinity or embeddings of several lengths is refused by
    ``set_reference`` (nothing changed), as ``observe_*`` refuses such items: kept, it made
    every later check of its detector fail."""
    monitor = DriftMonitor(DriftOptions(detectors=("score", "embedding"), reference_size=2,
                                        window_size=2, check_every=1, permutations=20))
    with pytest.raises(ValueError, match="finite|length|dimension"):
        monitor.set_reference(texts=["a b", "c"], **reference)  # type: ignore[arg-type]
    assert monitor.windows == {}  # the texts' windows were not set either
    for value in (0.1, 0.2, 0.3, 0.9):
        monitor.observe_score("faithfulness", value)
    for vector in ([1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.9, 0.0]):
        monitor.observe_embedding(vector)
    assert monitor.checks == {"score:faithfulness": 1, "embedding": 1}


def test_prometheus_text_writes_sample_values_as_the_format_spells_them() -> None:
    """Values are written as the exposition format reads them: ``NaN``, ``+Inf`` and
    ``-Inf``, and numpy scalars as plain numbers (``repr`` wrote ``nan``, ``inf`` and
    ``np.float64(0.5)``, which a Prometheus scraper refuses)."""
    from aieng_drift import prometheus_text

    text = prometheus_text({"x": {"a": float("nan"), "b": float("inf"), "c": np.float64(0.5),
                                  "d": -float("inf"), "e": 3, "f": np.int64(2)}})
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == ['x{detector="a"} NaN', 'x{detector="b"} +Inf', 'x{detector="c"} 0.5',
                       'x{detector="d"} -Inf', 'x{detector="e"} 3.0', 'x{detector="f"} 2.0']


_requests = st.lists(st.text(alphabet="ab cé\u00e9Ω1_!", max_size=12), min_size=1, max_size=30)


@settings(max_examples=80, deadline=None)
@given(reference=_requests, current=_requests, top=st.integers(1, 6))
def test_vocabulary_check_equals_the_summed_tables(reference: list[str], current: list[str],
                                                   top: int) -> None:
    """The vocabulary check tallies its windows in one table (linear in the texts) and
    scores exactly what the former ``sum(tables, Counter())`` did, on any windows
    (requests without words, unicode, repeats)."""
    ref = [_vocabulary(tokenize(text)) for text in reference]
    cur = [_vocabulary(tokenize(text)) for text in current]
    assert _tally(ref) == sum(ref, Counter()) and _tally(cur) == sum(cur, Counter())
    monitor = DriftMonitor(options(vocabulary_size=top))
    result = monitor.compute("vocabulary", ref, cur)
    expected = categorical_psi(sum(ref, Counter()), sum(cur, Counter()), top=top,
                               epsilon=monitor.options.epsilon)
    assert result.statistic == expected and result.psi == expected
