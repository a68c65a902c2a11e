"""The drift metrics' Prometheus text, read back by prometheus_client's parser (when it is
installed: it is the monitoring plugin's test oracle): any label value survives, and only
the detectors that run have series."""

from __future__ import annotations

import pytest
from aieng_drift import DriftMonitor, DriftOptions
from hypothesis import given, settings
from hypothesis import strategies as st

parser = pytest.importorskip("prometheus_client.parser")


def _scored(name: str) -> DriftMonitor:
    monitor = DriftMonitor(DriftOptions(detectors=("score",), reference_size=2, window_size=2,
                                        check_every=1))
    for value in (0.1, 0.2, 0.3, 0.9):
        monitor.observe_score(name, value)
    return monitor


def _labels(text: str) -> set[tuple[str, str]]:
    return {(s.labels["detector"], s.labels["pipeline"])
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def test_lone_surrogates_in_labels_do_not_break_the_scrape() -> None:
    """A score name or pipeline name holding a lone surrogate (a JSON ``"\\ud800"``
    escape) is shown with U+FFFD, as the monitoring plugin shows it: the text used to be
    unencodable, and the gateway's whole ``/metrics`` failed with it."""
    text = _scored("faith\ud800").prometheus_text({"pipeline": "qa\udc00"})
    text.encode("utf-8")
    assert _labels(text) == {("score:faith\ufffd", "qa\ufffd")}


#: Any text, lone surrogates included (``st.text`` leaves them out by default).
_ANY = st.characters(exclude_categories=())


@settings(max_examples=60, deadline=None)
@given(st.text(_ANY, min_size=1, max_size=20), st.text(_ANY, max_size=20))
def test_any_label_value_round_trips(name: str, pipeline: str) -> None:
    """Quotes, backslashes, newlines, unicode: the parser reads back the same values
    (lone surrogates as U+FFFD)."""
    text = _scored(name).prometheus_text({"pipeline": pipeline})

    def shown(value: str) -> str:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)

    assert _labels(text) == {(shown(f"score:{name}"), shown(pipeline))}


def test_set_reference_sets_only_the_detectors_that_run() -> None:
    """``set_reference`` with texts, scores and embeddings on a monitor running only the
    length detector sets that detector alone: the others got windows and so series
    (``aieng_drift_checks_total{detector="vocabulary"} 0``, ...) of detectors turned off.
    The references given are still checked."""
    monitor = DriftMonitor(DriftOptions(detectors=("length",), reference_size=2,
                                        window_size=2, check_every=1))
    monitor.set_reference(texts=["a b", "c d e"], scores={"faith": [0.1, 0.2]},
                          embeddings=[[1.0, 0.0], [0.0, 1.0]])
    assert set(monitor.windows) == {"length"}
    assert {d for d, _ in _labels(monitor.prometheus_text({"pipeline": "p"}))} == {"length"}
    with pytest.raises(ValueError, match="finite"):
        monitor.set_reference(scores={"faith": [0.1, float("nan")]})
