"""The ``drift`` component in real kernel pipelines: it reads the runs' inputs from the
bus, publishes ``drift.detected`` when longer requests arrive and nothing when they do
not, embeds through the pipeline's embedder, and takes judge scores."""

from __future__ import annotations

from typing import Any, ClassVar

import aieng_drift
import attrs
import numpy as np
import pytest
from aieng_drift import DriftComponent, DriftDetected, DriftOptions
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Event, RunStarted, Sample, Score

from aieng_core import ConfigError, Kernel
from aieng_core.testing import EventCapture, HashEmbedder, ScriptedBackend, settle

pytestmark = pytest.mark.anyio

WORDS = ["where", "is", "my", "parcel", "order", "refund", "invoice", "card", "plan", "help", "please", "today"]


def requests(seed: int, count: int, mean_words: float) -> list[str]:
    """Synthetic requests of Poisson(mean) + 1 words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.poisson(mean_words)) + 1))
            for _ in range(count)]


def drift(**values: Any) -> DriftComponent:
    """A drift component with windows of 100 and a check every 100 items."""
    base: dict[str, Any] = {"reference_size": 100, "window_size": 100, "check_every": 100}
    base.update(values)
    return DriftComponent(DriftOptions(**base))


@pytest.mark.parametrize(("mean_words", "fires"), [(6.0, False), (14.0, True)])
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_drift_through_the_bus(aieng_kernel: Kernel, captured_events: EventCapture,
                                     mean_words: float, fires: bool) -> None:
    """100 reference requests, then 100 more: longer ones publish one ``drift.detected``
    (length) in the pipeline's name; same-length ones publish none."""
    component = drift()
    pipeline = aieng_kernel.compose({"drift": component, "llm": ScriptedBackend(["ok"])},
                                    name="watched")
    for text in requests(1, 100, 6.0) + requests(2, 100, mean_words):
        await pipeline.run(text)
    await settle(lambda: component.monitor.checks["length"] == 1
                 and component.monitor.checks["vocabulary"] == 1)
    events = captured_events.of(DriftDetected)
    assert [e.detector for e in events] == (["length"] if fires else [])
    assert component.monitor.checks["vocabulary"] == 1
    if fires:
        event = events[0]
        assert event.pipeline == "watched" and event.component == "drift"
        assert event.method == "ks+psi" and event.p_value is not None and event.p_value < 0.01
        assert (event.reference_size, event.window_size) == (100, 100)
        assert event.psi is not None and event.psi >= event.threshold == 0.2


async def test_embedding_detector_through_the_pipeline_embedder(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """With the embedding detector, requests are embedded in batches through the
    pipeline's embedder (the hashing double); a topic change fires it."""
    embedder = HashEmbedder(256)
    component = drift(detectors=("embedding",), reference_size=48, window_size=48,
                      check_every=48, embed_batch=16, permutations=200)
    pipeline = aieng_kernel.compose({"drift": component, "embed": embedder,
                                     "llm": ScriptedBackend(["ok"])})
    billing = requests(3, 48, 6.0)
    rng = np.random.default_rng(4)
    tech = [" ".join(rng.choice(["crash", "server", "error", "install", "driver", "sync"], size=6))
            for _ in range(48)]
    for text in billing + tech:
        await pipeline.run(text)
    await settle(lambda: component.monitor.checks["embedding"] == 1)
    assert embedder.calls == 96 // 16
    assert [e.detector for e in captured_events.of(DriftDetected)] == ["embedding"]


@attrs.frozen(kw_only=True)
class ScoresEvent(Event):
    """A test event carrying scores, as a kernel ``judge`` event would."""

    name: ClassVar[str] = "test.scores"
    scores: tuple[Score, ...] = ()


async def test_judge_scores_from_the_bus(aieng_kernel: Kernel) -> None:
    """Judge scores reach the detector through the kernel's ``judge.scored`` events."""
    class Judge:
        """A judge double scoring the answer's length."""

        @hookimpl
        def aieng_judge(self, sample: Sample) -> Score:
            return Score(name="words", value=float(len(sample.output.split())))

    component = drift(reference_size=10, window_size=10, check_every=10)
    short = ScriptedBackend(["one two"])
    pipeline = aieng_kernel.compose({"drift": component, "llm": short, "judge": Judge()})
    for _ in range(10):
        await pipeline.run("q")
    short.replies = ["one two three four five six seven eight"]
    for _ in range(10):
        await pipeline.run("q")
    await settle(lambda: component.monitor.checks["score:words"] == 1)
    assert [e.detector for e in component.detected] == ["score:words"]


async def test_scores_from_results_and_other_events(aieng_kernel: Kernel) -> None:
    """``observe_scores`` takes a RunResult's scores, and any event with a ``scores`` field
    counts (a judge outside the pipeline can publish its own)."""
    component = drift(reference_size=10, window_size=10, check_every=10)
    pipeline = aieng_kernel.compose({"drift": component, "llm": ScriptedBackend(["x"])})
    for _ in range(10):
        await component.observe_scores([Score(name="words", value=2.0)])
    for _ in range(10):
        aieng_kernel.publish(ScoresEvent(pipeline=pipeline.name, scores=(
            Score(name="words", value=8.0),)))
    await settle(lambda: component.monitor.checks["score:words"] == 1)
    assert [e.detector for e in component.detected] == ["score:words"]


async def test_concurrent_observers_check_a_due_window_once() -> None:
    """A check runs in a worker thread while other callers (the bus, ``observe_scores`` by
    hand) go on adding items: the window is claimed on the event loop before the thread
    starts, so a second caller does not check it again (twice the checks, a duplicate
    ``drift.detected``), and the items added meanwhile count towards the next check."""
    import anyio

    component = drift(detectors=("score",), reference_size=10, window_size=10,
                      check_every=10)
    for value in [2.0] * 10 + [8.0] * 9:
        await component.observe_scores([Score(name="words", value=value)])
    async with anyio.create_task_group() as group:
        for _ in range(2):  # the first makes a check due; the second arrives during it
            group.start_soon(component.observe_scores, [Score(name="words", value=8.0)])
    assert component.monitor.checks["score:words"] == 1
    assert [e.detector for e in component.detected] == ["score:words"]
    assert component.monitor.window("score:words").since_check == 1

    texts = drift(detectors=("length", "vocabulary"), reference_size=10, window_size=10,
                  check_every=10)
    for text in ["where is my parcel"] * 19:
        await texts.observe_text(text)
    async with anyio.create_task_group() as group:
        for _ in range(2):  # two checks fall due at once; the second caller takes one
            group.start_soon(texts.observe_text, "refund my card please")
    assert texts.monitor.checks == {"length": 1, "vocabulary": 1}


async def test_registered_plugin_and_options(aieng_kernel: Kernel,
                                             register_plugin: Any) -> None:
    """The plugin registers ``drift`` and ``drift.detected``; options load from a pipeline
    file's dict and a bad detector name is a ConfigError naming the key."""
    with register_plugin(aieng_drift, "drift") as info:
        assert info.status == "loaded", info.error
        assert aieng_kernel.registry.event_types["drift.detected"] is DriftDetected
        pipeline = aieng_kernel.pipeline({
            "pipeline": {"name": "d"},
            "components": {"watch": {"use": "drift", "detectors": ["length"],
                                     "reference_size": 50, "fire_on": "both"},
                           "answer": {"use": "extractive"}}})
        component = pipeline.components["watch"]
        assert isinstance(component, DriftComponent)
        assert component.options.detectors == ("length",)
        with pytest.raises(ConfigError, match="components.watch"):
            aieng_kernel.pipeline({"pipeline": {"name": "d"}, "components": {
                "watch": {"use": "drift", "detectors": ["colour"]},
                "answer": {"use": "extractive"}}})


async def test_a_bad_embedding_in_a_batch_keeps_the_others(aieng_kernel: Kernel) -> None:
    """The embedder returns a NaN vector for one request of a batch: that one is left out
    (logged), the batch's other embeddings still reach the detector and its check runs."""
    class Flaky(HashEmbedder):
        """Embeds as the hashing double, but NaN for a request holding "broken"."""

        def vector(self, text: str) -> list[float]:
            return [float("nan")] * 16 if "broken" in text else super().vector(text)

    component = drift(detectors=("embedding",), reference_size=4, window_size=4,
                      check_every=4, embed_batch=3, permutations=20)
    pipeline = aieng_kernel.compose({"drift": component, "embed": Flaky(16),
                                     "llm": ScriptedBackend(["ok"])})
    async with pipeline:
        for text in ["broken one", "a b", "c d", "e f", "g h", "i j", "k l", "m n", "o p"]:
            await component.observe_text(text)
    window = component.monitor.window("embedding")
    assert len(window.reference) == 4 and len(window.current) == 4
    assert component.monitor.checks["embedding"] == 1


async def test_an_agents_runs_count_its_task_once() -> None:
    """Runs that name a parent (an agent run's model calls) feed the detectors once per
    parent, with the first one's input; runs of their own each count."""
    component = drift()
    seen = [RunStarted(run_id=f"s{n}", pipeline="p", input=text, parent=parent)
            for n, (text, parent) in enumerate([
                ("the task", "agent-1"), ("the task", "agent-1"),
                ("Task: the task\nProposed answer: 4", "agent-1"),
                ("another task", "agent-2"), ("a plain request", ""), ("a plain request", "")])]
    for event in seen:
        await component.aieng_on_event(event)
    assert len(component.monitor.windows["length"].reference) == 4
