"""Reference windows saved to a file (``reference_path``) and read back by a restarted
monitor: same statistics, atomic writes, configuration changes, corrupt files, resets."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import aieng_drift
import numpy as np
import pytest
from aieng_drift import (
    DriftComponent,
    DriftMonitor,
    DriftOptions,
    ReferenceFileError,
    ReferenceStore,
)
from aieng_drift import _reference as reference_module
from aieng_hookspecs.types import Score
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from aieng_core import HookError, Kernel
from aieng_core.testing import ScriptedBackend, settle

WORDS = ["refund", "order", "invoice", "card", "payment", "charge", "bill", "plan", "price"]
ALL = ("length", "vocabulary", "embedding", "score")
HEAD = b'{"format": "aieng-drift-reference", "version": 1, '


def texts(seed: int, count: int, mean_words: float = 8.0) -> list[str]:
    """``count`` synthetic requests: Poisson(mean) + 1 words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.poisson(mean_words)) + 1))
            for _ in range(count)]


def options(path: Path | None, **values: Any) -> DriftOptions:
    """Windows of 40, a check every 40 items, every detector, a reference file."""
    base: dict[str, Any] = {"reference_size": 40, "window_size": 40, "check_every": 40,
                            "detectors": ALL, "permutations": 50,
                            "reference_path": None if path is None else str(path)}
    base.update(values)
    return DriftOptions(**base)


def feed(monitor: DriftMonitor, seed: int, count: int, shift: float = 0.0) -> None:
    """``count`` texts, 8-dimensional embeddings and ``faith`` scores (no checks)."""
    rng = np.random.default_rng(seed)
    for text in texts(seed, count, 8.0 + 8 * shift):
        monitor.observe_text(text, check=False)
        monitor.observe_embedding(rng.normal(shift, 1.0, 8).tolist(), check=False)
        monitor.observe_score("faith", float(rng.beta(8 - 4 * shift, 2)), check=False)


def test_saved_reference_gives_a_restarted_monitor_the_same_statistics(
        tmp_path: Path) -> None:
    """A window saves the file when it freezes (not before); a new monitor on the same
    path loads every detector's reference and, on the same current items, computes the
    very same results as the monitor that froze it."""
    path = tmp_path / "state" / "drift.json"  # the folder is created
    first = DriftMonitor(options(path))
    feed(first, 1, 39)
    assert not path.exists()
    feed(first, 2, 1)
    assert path.exists() and not first.unsaved
    document = json.loads(path.read_text("utf-8"))
    assert (document["format"], document["version"]) == ("aieng-drift-reference", 1)
    assert sorted(document["windows"]) == ["embedding", "length", "score:faith", "vocabulary"]

    restarted = DriftMonitor(options(path))
    assert restarted.loaded == {"embedding", "length", "score:faith", "vocabulary"}
    for name, window in first.windows.items():
        assert restarted.window(name).frozen
        assert restarted.window(name).reference == window.reference, name
    for monitor in (first, restarted):
        feed(monitor, 3, 40, shift=0.5)
    assert first.check() == restarted.check()
    assert any(result.fired for result in restarted.check())


def test_restart_without_a_file_takes_the_drift_as_reference(tmp_path: Path) -> None:
    """The problem solved: a monitor restarted amid drifted traffic fires with the saved
    reference, and fires nothing without it (the drift became its reference)."""
    path = tmp_path / "drift.json"
    first = DriftMonitor(options(path, detectors=("length",), fire_on="ks"))
    for text in texts(1, 40):
        first.observe_text(text)
    drifted = texts(2, 80, mean_words=16.0)
    fired = {}
    for name, saved in (("with file", path), ("without", None)):
        monitor = DriftMonitor(options(saved, detectors=("length",), fire_on="ks"))
        results = [r for text in drifted for r in monitor.observe_text(text)]
        fired[name] = [r.fired for r in results]
    assert fired == {"with file": [True, True], "without": [False]}


def test_set_reference_saves_and_loads(tmp_path: Path) -> None:
    """``set_reference`` writes the file at once; unicode tokens, requests without a
    word, scores and a metric name holding a lone surrogate round-trip exactly."""
    path = tmp_path / "drift.json"
    monitor = DriftMonitor(options(path, detectors=("length", "vocabulary", "score")))
    sample = ["héllo wörld 你好", "", "!!!", "ßtraße 🙂 ok", "a\x00b"]
    monitor.set_reference(texts=sample, scores={"faith": [0.1, 1 / 3, 1e-300],
                                                "\ud800": [1.0, 2.0]})
    loaded = DriftMonitor(options(path, detectors=("length", "vocabulary", "score")))
    for name in ("length", "vocabulary", "score:faith", "score:\ud800"):
        assert loaded.window(name).reference == monitor.window(name).reference
    assert loaded.window("score:faith").reference[1] == 1 / 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=2, max_size=8),
       st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=8),
       st.text(max_size=10))
def test_save_then_load_is_identity(sample: list[str], scores: list[float],
                                    metric: str) -> None:
    """Property: any texts, finite scores and metric names (empty, unicode) set as the
    reference load back equal."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drift.json"
        saved = DriftMonitor(options(path))
        saved.set_reference(texts=sample, scores={metric: scores})
        loaded = DriftMonitor(options(path))
        assert {n: w.reference for n, w in loaded.windows.items()} == {
            n: w.reference for n, w in saved.windows.items()}


def test_a_failed_rename_keeps_the_old_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash mid-write (the rename fails) leaves the old file whole and no temporary
    file; the monitor stays ``unsaved`` and a later save writes the new reference."""
    path = tmp_path / "drift.json"
    monitor = DriftMonitor(options(path, detectors=("score",)))
    monitor.set_reference(scores={"faith": [0.1, 0.2, 0.3]})
    before = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(reference_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        monitor.set_reference(scores={"faith": [0.7, 0.8, 0.9]})
    assert path.read_bytes() == before and monitor.unsaved
    assert os.listdir(tmp_path) == ["drift.json"]
    assert DriftMonitor(options(path, detectors=("score",))).window(
        "score:faith").reference == [0.1, 0.2, 0.3]
    monkeypatch.undo()
    assert monitor.save_reference() and not monitor.unsaved
    assert DriftMonitor(options(path, detectors=("score",))).window(
        "score:faith").reference == [0.7, 0.8, 0.9]


def test_a_stale_write_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """Writes carry generations: one finishing late (a worker thread) after a newer
    write or a delete is skipped."""
    store = ReferenceStore(tmp_path / "drift.json")
    assert store.write(2, {"new": True})
    assert not store.write(1, {"new": False})
    assert json.loads(store.path.read_text("utf-8")) == {"new": True}
    store.delete(3)
    assert not store.write(3, {"new": False}) and not store.path.exists()
    assert store.read() is None


def test_file_of_another_configuration(tmp_path: Path) -> None:
    """Detectors added since the file was written learn from traffic; the file's windows
    of detectors turned off are kept in it; an embedding window of another
    ``embedding_model`` is an error naming the file; a changed ``reference_size`` keeps
    the saved windows with a warning."""
    path = tmp_path / "drift.json"
    first = DriftMonitor(options(path, embedding_model="small"))
    feed(first, 1, 40)

    only_length = DriftMonitor(options(path, detectors=("length",)))
    assert only_length.loaded == {"length"} and set(only_length.windows) == {"length"}
    only_length.reset_reference("length")
    for text in texts(4, 40):
        only_length.observe_text(text)
    windows = json.loads(path.read_text("utf-8"))["windows"]
    assert sorted(windows) == ["embedding", "length", "score:faith", "vocabulary"]
    assert windows["vocabulary"] == [dict(c) for c in first.window("vocabulary").reference]

    with pytest.raises(ReferenceFileError, match=r"drift\.json.*'small'.*'large'"):
        DriftMonitor(options(path, embedding_model="large"))
    kept = DriftMonitor(options(path, embedding_model="large"), defer_io=True)
    kept.window("length").set_reference([1, 2, 3])
    with pytest.raises(ReferenceFileError):  # nothing changed
        kept.load_reference()
    assert kept.window("length").reference == [1, 2, 3] and not kept.loaded
    unused = DriftMonitor(options(path, embedding_model="large",
                                  detectors=("length", "score")))
    assert unused.loaded == {"length", "score:faith"}

    with capture_logs() as logs:
        bigger = DriftMonitor(options(path, embedding_model="small", reference_size=100))
    assert len(bigger.window("length").reference) == 40
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "drift.reference_size_changed"]


def test_an_embedding_of_another_size_names_the_file(tmp_path: Path) -> None:
    """A loaded 8-dimensional reference refuses vectors of another embedder, saying
    where the reference came from and how to take a new one."""
    path = tmp_path / "drift.json"
    feed(DriftMonitor(options(path)), 1, 40)
    monitor = DriftMonitor(options(path))
    with pytest.raises(ValueError, match=r"16 dimensions.*drift\.json.*reset_reference"):
        monitor.observe_embedding([0.5] * 16)
    monitor.reset_reference("embedding")
    assert monitor.observe_embedding([0.5] * 16) == []


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "not valid JSON"),
    (b'{"format": "aieng-drift-reference", "version": 1, "windows": {"len', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a drift reference file"),
    (b'{"format": "other"}', "not a drift reference file"),
    (b'{"format": "aieng-drift-reference", "version": 2, "windows": {}}', "newer"),
    (b'{"format": "aieng-drift-reference", "windows": {}}', "None is not a valid version"),
    (b'{"format": "aieng-drift-reference", "version": 1, "windows": []}', "JSON objects"),
    (HEAD + b'"windows": {"score:x": [1.0, NaN]}}', "finite numbers"),
    (HEAD + b'"windows": {"length": [1]}}', "at least 2 items"),
    (HEAD + b'"windows": {"length": [1, true]}}', "word counts"),
    (HEAD + b'"windows": {"vocabulary": [{"a": 1}, {"b": -1}]}}', "token counts"),
    (HEAD + b'"windows": {"embedding": [[1.0, 2.0], [1.0]]}}', "one length"),
    (HEAD + b'"windows": {"colour": [1, 2]}}', "unknown detector window 'colour'"),
])
def test_a_corrupt_file_is_an_error_naming_it(tmp_path: Path, content: bytes,
                                              problem: str) -> None:
    """A file that cannot be used raises ``ReferenceFileError`` naming it and the
    problem; setting a new reference replaces it."""
    path = tmp_path / "drift.json"
    path.write_bytes(content)
    with pytest.raises(ReferenceFileError, match=problem) as raised:
        DriftMonitor(options(path))
    assert str(path) in str(raised.value) and raised.value.path == path
    monitor = DriftMonitor(options(path), defer_io=True)
    monitor.set_reference(scores={"x": [1.0, 2.0]})  # overwrites the corrupt file
    assert DriftMonitor(options(path)).loaded == {"score:x"}


def test_reset_reference_takes_a_new_one(tmp_path: Path) -> None:
    """``reset_reference()`` forgets every window and deletes the file; the next N items
    freeze a new reference, saved again. An unknown name is an error."""
    path = tmp_path / "drift.json"
    monitor = DriftMonitor(options(path))
    feed(monitor, 1, 80)
    monitor.check()
    monitor.reset_reference()
    assert not path.exists() and not monitor.last and not monitor.loaded
    assert all(not w.frozen and not w.current for w in monitor.windows.values())
    feed(monitor, 5, 40)
    assert DriftMonitor(options(path)).window("length").reference == monitor.window(
        "length").reference
    for name in ("colour", "score", "length:x"):
        with pytest.raises(ValueError, match="no detector window"):
            monitor.reset_reference(name)


def test_options_reference_path() -> None:
    """``reference_path`` must be a file path when given."""
    assert DriftOptions().reference_path is None
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match="reference_path must be a file path"):
            DriftOptions(reference_path=bad)  # type: ignore[arg-type]


# -- the component ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_component_restart_keeps_its_reference(aieng_kernel: Kernel,
                                                     tmp_path: Path) -> None:
    """Through real pipelines: the first saves its frozen reference (in a worker thread)
    and closes; a pipeline built afresh on the same file reads it when it opens, so
    drifted traffic fires at once instead of becoming the reference."""
    path = tmp_path / "drift.json"
    values = {"detectors": ["length"], "reference_size": 40, "window_size": 40,
              "check_every": 40, "fire_on": "ks", "reference_path": str(path)}
    first = DriftComponent(DriftOptions(**values))
    async with aieng_kernel.compose({"drift": first, "llm": ScriptedBackend(["ok"])}) as p:
        for text in texts(1, 40):
            await p.run(text)
        await settle(lambda: path.exists())
    assert not first.monitor.unsaved

    again = DriftComponent(DriftOptions(**values))
    assert not again.monitor.window("length").frozen  # nothing read before opening
    async with aieng_kernel.compose({"drift": again, "llm": ScriptedBackend(["ok"])}) as p:
        assert again.monitor.loaded == {"length"}
        for text in texts(2, 40, mean_words=16.0):
            await p.run(text)
        await settle(lambda: again.monitor.checks["length"] == 1)
    assert [e.detector for e in again.detected] == ["length"]
    assert again.monitor.window("length").reference == first.monitor.window(
        "length").reference


@pytest.mark.anyio
async def test_component_with_a_corrupt_file_fails_to_open(aieng_kernel: Kernel,
                                                           tmp_path: Path) -> None:
    """A corrupt reference file fails the pipeline's opening, naming the file."""
    path = tmp_path / "drift.json"
    path.write_text("{not json", "utf-8")
    component = DriftComponent(DriftOptions(reference_path=str(path)))
    pipeline = aieng_kernel.compose({"drift": component, "llm": ScriptedBackend(["ok"])})
    with pytest.raises(HookError, match=r"drift\.json.*not valid JSON") as raised:
        await pipeline.open()
    assert isinstance(raised.value.cause, ReferenceFileError)


@pytest.mark.anyio
async def test_component_save_failure_is_logged_and_retried(tmp_path: Path) -> None:
    """A reference that cannot be saved (its folder is a file) is logged and monitoring
    goes on; the next item retries, and succeeds once the folder can be made."""
    blocker = tmp_path / "state"
    blocker.write_text("not a folder", "utf-8")
    component = DriftComponent(DriftOptions(
        detectors=("score",), reference_size=3, window_size=3, check_every=3,
        reference_path=str(blocker / "drift.json")))
    with capture_logs() as logs:
        for value in (1.0, 2.0, 3.0):
            await component.observe_scores([Score(name="m", value=value)])
    assert component.monitor.unsaved and component.monitor.window("score:m").frozen
    assert [e["event"] for e in logs] == ["drift.reference_save_failed"]
    blocker.unlink()
    await component.observe_scores([Score(name="m", value=2.0)])
    assert not component.monitor.unsaved
    assert DriftMonitor(component.options).window("score:m").reference == [1.0, 2.0, 3.0]


@pytest.mark.anyio
async def test_closing_saves_a_reference_whose_save_failed(aieng_kernel: Kernel,
                                                          tmp_path: Path) -> None:
    """A frozen reference whose save failed is saved when its pipeline closes, even when no
    item came after the failure to retry it: a restart then finds it."""
    blocker = tmp_path / "state"
    component = DriftComponent(DriftOptions(
        detectors=("score",), reference_size=3, window_size=3, check_every=3,
        reference_path=str(blocker / "drift.json")))
    pipeline = aieng_kernel.compose({"drift": component, "llm": ScriptedBackend(["ok"])})
    async with pipeline:
        blocker.write_text("not a folder", "utf-8")  # after the opening read the folder
        for value in (1.0, 2.0, 3.0):
            await component.observe_scores([Score(name="m", value=value)])
        assert component.monitor.unsaved
        blocker.unlink()
    assert not component.monitor.unsaved
    assert DriftMonitor(component.options).window("score:m").reference == [1.0, 2.0, 3.0]


@pytest.mark.anyio
async def test_reference_path_from_a_pipeline_file(aieng_kernel: Kernel,
                                                   register_plugin: Any,
                                                   tmp_path: Path) -> None:
    """``reference_path`` is a pipeline-file key of the component."""
    with register_plugin(aieng_drift, "drift") as info:
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline({
            "pipeline": {"name": "d"},
            "components": {"watch": {"use": "drift",
                                     "reference_path": str(tmp_path / "ref.json")},
                           "answer": {"use": "extractive"}}})
        component = pipeline.components["watch"]
        assert isinstance(component, DriftComponent)
        assert component.monitor.store is not None
        assert component.monitor.store.path == tmp_path / "ref.json"


def test_monitor_save_failure_does_not_stop_the_checks(tmp_path: Path) -> None:
    """Without a pipeline too, a frozen window that cannot be saved is logged and retried
    at each item while the checks still run; the save succeeds once it can."""
    blocker = tmp_path / "state"
    monitor = DriftMonitor(DriftOptions(detectors=("score",), reference_size=3,
                                        window_size=3, check_every=3,
                                        reference_path=str(blocker / "drift.json")))
    blocker.write_text("not a folder", "utf-8")  # after the (empty) reading
    with capture_logs() as logs:
        results = [r for value in (1.0, 2.0, 3.0, 2.0, 2.5, 1.5)
                   for r in monitor.observe_score("m", value)]
    assert len(results) == 1 and monitor.unsaved
    assert {e["event"] for e in logs} == {"drift.reference_save_failed"} and len(logs) == 4
    blocker.unlink()
    monitor.observe_score("m", 2.0)
    assert not monitor.unsaved
    assert DriftMonitor(monitor.options).window("score:m").reference == [1.0, 2.0, 3.0]
