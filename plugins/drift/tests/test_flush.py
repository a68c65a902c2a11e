"""``DriftComponent.flush``: a batch whose embedding fails, or is cancelled, is not lost
to the embedding detector; it is embedded later, in order, within the detector's limits."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from aieng_drift import DriftComponent, DriftOptions
from aieng_hookspecs import hookimpl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from aieng_core import Kernel
from aieng_core.testing import HashEmbedder, ScriptedBackend, isolated_kernel

pytestmark = pytest.mark.anyio


class Flaky(HashEmbedder):
    """The hashing double, failing while ``failing`` and blocking while ``blocked``; it
    records each call's texts."""

    def __init__(self) -> None:
        super().__init__(1024)
        self.failing = False
        self.blocked = False
        self.batches: list[list[str]] = []

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str],
                          model: str | None) -> list[list[float]] | None:
        self.batches.append(list(texts))
        if self.blocked:
            await anyio.sleep_forever()
        if self.failing:
            raise ConnectionError("embedder down")
        return [self.vector(text) for text in texts]


def component(**values: Any) -> DriftComponent:
    base: dict[str, Any] = {"detectors": ("embedding",), "reference_size": 4,
                            "window_size": 4, "check_every": 4, "embed_batch": 2,
                            "permutations": 20}
    base.update(values)
    return DriftComponent(DriftOptions(**base))


def seen(drift: DriftComponent, embedder: Flaky) -> list[list[float]]:
    window = drift.monitor.window("embedding")
    return [*window.reference, *window.current]


def vectors(embedder: Flaky, texts: Sequence[str]) -> list[list[float]]:
    return [embedder.vector(text) for text in texts]


async def test_a_failed_batch_is_embedded_later_in_order(aieng_kernel: Kernel) -> None:
    drift, embedder = component(reference_size=8), Flaky()
    pipeline = aieng_kernel.compose({"drift": drift, "embed": embedder,
                                     "llm": ScriptedBackend(["ok"])})
    texts = [f"word{n}" for n in range(6)]
    async with pipeline:
        await drift.observe_text(texts[0])
        embedder.failing = True
        with pytest.raises(Exception, match="embedder down"):
            await drift.observe_text(texts[1])  # the batch [0, 1] fails
        embedder.failing = False
        for text in texts[2:]:
            await drift.observe_text(text)
        await drift.flush()
    assert seen(drift, embedder) == vectors(embedder, texts)
    assert all(len(batch) <= 2 for batch in embedder.batches)  # embed_batch per call


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_cancelled_flush_keeps_its_batch(aieng_kernel: Kernel) -> None:
    drift, embedder = component(reference_size=8), Flaky()
    pipeline = aieng_kernel.compose({"drift": drift, "embed": embedder,
                                     "llm": ScriptedBackend(["ok"])})
    async with pipeline:
        await drift.observe_text("alpha")
        embedder.blocked = True
        with anyio.move_on_after(0.05):
            await drift.observe_text("beta")  # the flush of [alpha, beta] hangs: cancelled
        embedder.blocked = False
        await drift.observe_text("gamma")
        await drift.flush()
    assert seen(drift, embedder) == vectors(embedder, ["alpha", "beta", "gamma"])


async def test_a_flush_before_the_pipeline_opens_keeps_the_texts() -> None:
    drift = component(embed_batch=5)
    await drift.observe_text("alpha")
    with pytest.raises(RuntimeError, match="opens it first"):
        await drift.flush()
    embedder = Flaky()
    async with isolated_kernel() as kernel:
        pipeline = kernel.compose({"drift": drift, "embed": embedder,
                                   "llm": ScriptedBackend(["ok"])})
        async with pipeline:
            await drift.flush()
    assert seen(drift, embedder) == vectors(embedder, ["alpha"])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(reference=st.integers(2, 5), window=st.integers(2, 5), batch=st.integers(1, 4),
       down=st.integers(0, 30), after=st.integers(0, 12))
def test_the_texts_kept_while_the_embedder_is_down_are_bounded(
        reference: int, window: int, batch: int, down: int, after: int) -> None:
    """While the embedder fails, the texts waiting never outnumber what the detector can
    still take (the rest of its reference, then one current window); once it is back, the
    detector holds what it would have held had nothing failed."""

    async def main() -> None:
        drift = component(reference_size=reference, window_size=window,
                          check_every=window, embed_batch=batch)
        embedder, healthy = Flaky(), Flaky()
        texts = [f"w{n}" for n in range(down + after)]
        async with isolated_kernel() as kernel:
            pipeline = kernel.compose({"drift": drift, "embed": embedder,
                                       "llm": ScriptedBackend(["ok"])})
            async with pipeline:
                embedder.failing = True
                for text in texts[:down]:
                    with contextlib.suppress(Exception):  # the embedder is down
                        await drift.observe_text(text)
                    assert len(drift._pending) <= reference + window
                embedder.failing = False
                for text in texts[down:]:
                    await drift.observe_text(text)
                await drift.flush()
        assert not drift._pending
        expected = component(reference_size=reference, window_size=window,
                             check_every=window)
        for vector in vectors(healthy, texts):
            expected.monitor.observe_embedding(vector, check=False)
        mine, theirs = drift.monitor.window("embedding"), expected.monitor.window("embedding")
        assert mine.reference == theirs.reference
        assert list(mine.current) == list(theirs.current)

    anyio.run(main)


async def test_closing_says_how_many_texts_were_never_embedded(aieng_kernel: Kernel) -> None:
    """Texts still waiting for a full batch when the pipeline closes are not embedded (the
    pipeline's embedder closes at the same time): the close says how many, once, instead
    of dropping them silently; they stay queued should the component be opened again."""
    drift, embedder = component(embed_batch=4, reference_size=8), Flaky()
    pipeline = aieng_kernel.compose({"drift": drift, "embed": embedder,
                                     "llm": ScriptedBackend(["ok"])})
    with capture_logs() as logs:
        async with pipeline:
            for text in ("one", "two", "three"):
                await drift.observe_text(text)
    assert embedder.batches == []
    closing = [e for e in logs if e["event"] == "drift.closed_with_unembedded_texts"]
    assert [(e["component"], e["texts"]) for e in closing] == [("drift", 3)]
    assert drift._pending == ["one", "two", "three"]

