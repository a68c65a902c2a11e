"""Component lifecycle and the pipeline context: open once, embed, generate, emit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import anyio
import anyio.lowlevel
import attrs
import pytest

from aieng_core import HookError, Kernel
from aieng_core.testing import EventCapture
from aieng_core.testing.doubles import ScriptedBackend
from aieng_hookspecs import ComponentRegistry, PipelineContext, hookimpl
from aieng_hookspecs.types import Event, Hit, Message, ModelCall, Query, Request

pytestmark = pytest.mark.anyio


@attrs.frozen(kw_only=True)
class Noted(Event):
    """A plugin's own event type."""

    name: ClassVar[str] = "test.noted"
    note: str


class Embedder:
    """An embedding double: one dimension, the text length."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def aieng_embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(len(t))] for t in texts]


class Uses:
    """A retriever that embeds the query and asks a backend, through its context."""

    def __init__(self) -> None:
        self.context: PipelineContext | None = None
        self.opened = 0

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.opened += 1
        await anyio.sleep(0.01)  # e.g. loading a model
        self.context = context

    @hookimpl
    async def aieng_retrieve(self, query: Query) -> list[Hit]:
        assert self.context is not None
        vector = await self.context.embed([query.text])
        answer = await self.context.generate(Request(messages=[Message("user", "expand")]))
        self.context.emit(Noted(note=f"{vector[0][0]}:{answer.text}"))
        return []


async def test_open_happens_once_before_the_first_run(aieng_kernel: Kernel,
                                                      captured_events: EventCapture) -> None:
    """Concurrent first runs open each component exactly once; the context reaches other
    roles by hook and its events join the run's trace with ids filled in."""
    uses = Uses()
    pipeline = aieng_kernel.compose({"uses": uses, "emb": Embedder(),
                                     "llm": ScriptedBackend(["wider query"])},
                                    stages=["retrieve"])
    results = []

    async def one() -> None:
        results.append(await pipeline.run("four"))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert uses.opened == 1
    assert uses.context is not None and uses.context.component == "uses"
    for result in results:
        noted = [e for e in result.events if isinstance(e, Noted)]
        assert [(e.note, e.run_id, e.pipeline) for e in noted] == [
            ("4.0:wider query", result.run_id, "composed")]
        calls = [e for e in result.events if isinstance(e, ModelCall)]
        assert calls[0].parameters["caller"] == "uses" and calls[0].raw_output == "wider query"


async def test_default_embedder_is_used_when_the_pipeline_has_none(
        aieng_kernel: Kernel, register_plugin) -> None:  # type: ignore[no-untyped-def]
    """With no embedding component, context.embed uses the kernel's default embedder
    (a registered component), built once."""
    import types

    plugin = types.ModuleType("default_embedding_plugin")
    built: list[Embedder] = []

    def factory() -> Embedder:
        built.append(Embedder())
        return built[-1]

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("minilm", factory)

    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    uses = Uses()
    with register_plugin(plugin, "fake-minilm"):
        pipeline = aieng_kernel.compose({"uses": uses, "llm": ScriptedBackend(["x"])})
        await pipeline.run("abc")
        await pipeline.run("abcd")
    assert len(built) == 1 and built[0].calls == 2


async def test_default_embedder_keeps_the_pipelines_timeout(
        aieng_kernel: Kernel, register_plugin) -> None:  # type: ignore[no-untyped-def]
    """The kernel's default embedder runs under the calling pipeline's timeout (it had the
    fallback's 30 s whatever the pipeline said)."""
    import types

    class Slow:
        @hookimpl
        async def aieng_embed(self, texts: Sequence[str]) -> list[list[float]]:
            await anyio.sleep(5)
            return [[1.0] for _ in texts]

    plugin = types.ModuleType("slow_default_embedding_plugin")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("minilm", Slow)

    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    uses = Uses()
    with register_plugin(plugin, "slow-minilm"):
        pipeline = aieng_kernel.compose({"uses": uses, "llm": ScriptedBackend(["x"])},
                                        timeout=0.2)
        await pipeline.open()
        assert uses.context is not None
        with anyio.fail_after(3), pytest.raises(HookError, match="timed out after 0.2"):
            await uses.context.embed(["x"])


async def test_no_embedder_anywhere_is_a_clear_error(aieng_kernel: Kernel) -> None:
    """Without any embedder the error says what to install."""
    pipeline = aieng_kernel.compose({"uses": Uses(), "llm": ScriptedBackend()})
    with pytest.raises(HookError, match="install aieng-transformers"):
        await pipeline.run("abc")


async def test_failing_open_names_the_component(aieng_kernel: Kernel) -> None:
    """A component whose opening fails makes the first run fail naming it."""
    class Broken:
        @hookimpl
        def aieng_pipeline_open(self) -> None:
            raise FileNotFoundError("model.safetensors")

    pipeline = aieng_kernel.compose({"broken": Broken(), "llm": ScriptedBackend()})
    with pytest.raises(HookError) as caught:
        await pipeline.run("x")
    assert caught.value.plugin == "broken" and caught.value.hook == "aieng_pipeline_open"


async def test_opening_again_after_a_failure_opens_only_what_did_not_open(
        aieng_kernel: Kernel) -> None:
    """When one component fails to open, the next run opens that one again, not those that
    opened: they were opened a second time (a second model load, a leaked connection)."""
    class Counted:
        opened = 0

        @hookimpl
        def aieng_pipeline_open(self) -> None:
            self.opened += 1

    class FailsOnce:
        tries = 0

        @hookimpl
        async def aieng_pipeline_open(self) -> None:
            await anyio.lowlevel.checkpoint()  # the other component has opened by now
            self.tries += 1
            if self.tries == 1:
                raise ConnectionError("the database is not up yet")

    counted, flaky = Counted(), FailsOnce()
    pipeline = aieng_kernel.compose({"counted": counted, "flaky": flaky,
                                     "llm": ScriptedBackend(["ok"])})
    with pytest.raises(HookError, match="flaky"):
        await pipeline.run("x")
    assert (await pipeline.run("x")).answer == "ok"
    assert (counted.opened, flaky.tries) == (1, 2)


async def test_closing_while_opening_closes_once_the_opening_ends(
        aieng_kernel: Kernel) -> None:
    """A pipeline closed while its first run opens it closes its components after their
    opening ends, and that run fails as on a closed pipeline; the component was closed
    before it finished opening (what it opened then leaked), and that run and every later
    one ran on the closed pipeline."""
    trail: list[str] = []
    opening, release = anyio.Event(), anyio.Event()

    class Slow:
        @hookimpl
        async def aieng_pipeline_open(self) -> None:
            opening.set()
            await release.wait()  # e.g. loading a model
            trail.append("opened")

        @hookimpl
        def aieng_pipeline_close(self) -> None:
            trail.append("closed")

    pipeline = aieng_kernel.compose({"slow": Slow(), "llm": ScriptedBackend(["x", "y"])})
    refused: list[str] = []

    async def first_run() -> None:
        try:
            await pipeline.run("a")
        except RuntimeError as exc:
            refused.append(str(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_run)
        await opening.wait()
        tg.start_soon(pipeline.aclose)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert trail == ["opened", "closed"]
    assert len(refused) == 1 and "closed" in refused[0]
    with pytest.raises(RuntimeError, match="is closed"):
        await pipeline.run("b")


async def test_async_with_opens_and_closes(aieng_kernel: Kernel) -> None:
    """`async with pipeline` opens before the block and closes after it."""
    trail: list[str] = []

    class Tracked:
        @hookimpl
        def aieng_pipeline_open(self) -> None:
            trail.append("open")

        @hookimpl
        async def aieng_pipeline_close(self) -> None:
            trail.append("close")

    async with aieng_kernel.compose({"t": Tracked(), "llm": ScriptedBackend()}) as pipeline:
        assert trail == ["open"]
        await pipeline.run("x")
    assert trail == ["open", "close"]


async def test_hash_embedder_double_gives_a_real_signal(aieng_kernel: Kernel) -> None:
    """The kit's HashEmbedder: unit vectors, shared words give positive cosine, none give 0,
    and it serves as a pipeline's embedder through the context."""
    from aieng_core.testing import HashEmbedder

    embedder = HashEmbedder(256)
    a, b, c = embedder.vector("rank fusion"), embedder.vector("fusion of ranks"), \
        embedder.vector("zebra")
    assert abs(sum(x * x for x in a) - 1.0) < 1e-9
    assert sum(x * y for x, y in zip(a, b)) > 0 and sum(x * y for x, y in zip(a, c)) == 0
    uses = Uses()
    pipeline = aieng_kernel.compose({"uses": uses, "emb": embedder,
                                     "llm": ScriptedBackend(["x"])})
    await pipeline.run("abc")
    assert embedder.calls == 1


async def test_the_default_embedder_closes_after_the_pipelines_that_embed_with_it() -> None:
    """Leaving the kernel closes the default embedder after every other pipeline, whatever
    order they were built in: a pipeline still finishing (its subscribed components taking
    the last events, a drift monitor embedding request texts) embeds with the embedder
    still open, and no second embedder is built on the way out (and never closed)."""
    import types

    from aieng_core.testing import registered

    trail: list[str] = []

    class Tracked(Embedder):
        @hookimpl
        def aieng_pipeline_close(self) -> None:
            trail.append("embedder closed")

    class EmbedsEvents:
        """Like the drift monitor: embeds each request's text from the bus."""

        context: PipelineContext | None = None

        @hookimpl
        def aieng_pipeline_open(self, context: PipelineContext) -> None:
            self.context = context

        @hookimpl
        async def aieng_on_event(self, event: Event) -> None:
            if event.name == "run.started" and self.context is not None:
                await anyio.sleep(0.01)  # slower than the run
                await self.context.embed(["request text"])
                trail.append("embedded")

    plugin = types.ModuleType("tracked_embedding_plugin")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("minilm", Tracked)

    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    kernel = Kernel(env={}, entry_points=[], loop_block_threshold=None)
    with registered(kernel, plugin, "tracked-minilm"):
        async with kernel:
            first = kernel.compose({"uses": Uses(), "llm": ScriptedBackend(["x"])})
            await first.run("abc")  # builds the default embedder
            later = kernel.compose({"watch": EmbedsEvents(), "llm": ScriptedBackend(["x"])},
                                   name="later")
            await later.run("q")
    assert trail == ["embedded", "embedder closed"]
