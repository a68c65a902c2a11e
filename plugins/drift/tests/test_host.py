"""Drift detection inside a host program: what it raises and returns can be sent to (or
back from) a worker process, and its checks leave the host's random generators alone."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from aieng_drift import DriftMonitor, DriftOptions, ReferenceFileError

ALL = ("length", "vocabulary", "embedding", "score")


def test_a_reference_file_error_survives_pickle(tmp_path: Path) -> None:
    """A corrupt reference file's error, raised by a worker process, reaches the host
    whole: same type, message, path and problem (``pickle`` called the class with the
    message alone: a TypeError instead of the error)."""
    path = tmp_path / "drift ref é.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReferenceFileError) as caught:
        DriftMonitor(DriftOptions(reference_path=str(path)))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is ReferenceFileError
    assert (str(copy), copy.path, copy.problem) == (str(caught.value), caught.value.path,
                                                    caught.value.problem)


def test_checks_leave_the_global_random_generators_alone() -> None:
    """Windows filled and checked with every detector (the embedding permutation test
    draws its own seeded generator): the host's ``random`` and ``numpy.random`` states
    are as they were, and the options and results pickle."""
    random.seed(7)
    np.random.seed(7)
    before = (random.getstate(), repr(np.random.get_state()))
    options = DriftOptions(reference_size=20, window_size=20, check_every=20,
                           detectors=ALL, permutations=30)
    monitor = DriftMonitor(options)
    rng = np.random.default_rng(3)
    results = []
    for i in range(40):
        monitor.observe_embedding(rng.normal(i // 20, 1.0, 4).tolist(), check=False)
        monitor.observe_score("faith", float(rng.random()), check=False)
        results += monitor.observe_text("word " * (1 + i % 5 + 3 * (i // 20)))
    results += monitor.check()
    assert {r.detector for r in results} >= {"length", "embedding"}
    assert (random.getstate(), repr(np.random.get_state())) == before
    assert pickle.loads(pickle.dumps(options)) == options
    assert pickle.loads(pickle.dumps(results)) == results
