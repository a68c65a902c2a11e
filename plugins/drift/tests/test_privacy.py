"""What drift keeps of users' requests: the reference file holds their words (private to
the user), and a request's vocabulary table is bounded, whatever the request."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aieng_drift import DriftMonitor, DriftOptions, ReferenceStore

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask (022: files readable by every user)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix
@pytest.mark.usefixtures("open_umask")
def test_the_reference_file_is_private(tmp_path: Path) -> None:
    """The reference file holds the words of users' requests: it is created 0600 (as the
    cache's store), not readable by every user of the machine under umask 022."""
    path = tmp_path / "drift" / "qa.json"
    monitor = DriftMonitor(DriftOptions(reference_size=2, reference_path=str(path)))
    monitor.observe_text("my card number is 4111 1111 1111 1111")
    monitor.observe_text("my password is hunter2")
    assert path.exists() and "hunter2" in path.read_text()
    assert mode(path) == 0o600
    monitor.set_reference(texts=["another secret", "and one more"])  # rewritten: still 0600
    assert mode(path) == 0o600 and "hunter2" not in path.read_text()


@posix
@pytest.mark.usefixtures("open_umask")
def test_a_file_the_user_opened_up_keeps_its_permissions(tmp_path: Path) -> None:
    """A reference file the user made readable (shared with a monitoring account) stays
    so when it is rewritten."""
    path = tmp_path / "qa.json"
    store = ReferenceStore(path)
    store.write(0, {"format": "x"})
    os.chmod(path, 0o640)
    store.write(1, {"format": "y"})
    assert mode(path) == 0o640


def test_a_requests_vocabulary_table_is_bounded(tmp_path: Path) -> None:
    """A request of many distinct words (hostile, or a pasted document) keeps at most
    ``vocabulary_size`` of its own most frequent tokens, the rest counted together, so a
    window holds (and the file saves) a bounded table per request, not every word."""
    options = DriftOptions(detectors=("length", "vocabulary"), reference_size=2,
                           vocabulary_size=10, reference_path=str(tmp_path / "d.json"))
    monitor = DriftMonitor(options)
    words = [f"w{n}" for n in range(10_000)]
    monitor.observe_text(" ".join(["often"] * 5 + words))
    table = monitor.window("vocabulary").reference[0]
    assert len(table) <= 11 and table["often"] == 5
    assert sum(table.values()) == 10_005  # every token still counts, in a shared bucket
    assert monitor.window("length").reference == [10_005]
    monitor.observe_text("a short request")
    assert monitor.window("vocabulary").reference[1] == {"a": 1, "short": 1, "request": 1}
    assert "w9999" not in (tmp_path / "d.json").read_text()
    reloaded = DriftMonitor(options)
    assert reloaded.window("vocabulary").reference == monitor.window("vocabulary").reference


def test_set_reference_bounds_the_tables_too() -> None:
    """Texts given to ``set_reference`` are bounded the same way."""
    monitor = DriftMonitor(DriftOptions(detectors=("vocabulary",), vocabulary_size=3))
    monitor.set_reference(texts=["a b c d e f g", "a a"])
    first, second = monitor.window("vocabulary").reference
    assert len(first) == 4 and sum(first.values()) == 7
    assert second == {"a": 2}
