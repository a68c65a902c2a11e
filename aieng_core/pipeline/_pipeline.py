"""A pipeline: its own plugin manager of component instances, run stage by stage."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import pluggy
import structlog

from aieng_hookspecs.types import (Document, Feedback, Query, Request, RunFinished, RunStarted,
                                   StageFinished, StageStarted, unchecked)

from .._errors import ConfigError, HookError, UnknownComponentError
from .._scope import CURRENT_RUN, RunIds, RunScope
from ..dispatch import Dispatcher, StagePolicy
from ..registry import PluginInfo
from ._context import ComponentContext
from ._each import (CLOSE_POLICY, InUse, call_each, failed_build_closer, role_plugin_manager,
                    threads_ended)
from ._indexing import CHUNKS, COUNT, Batch, Indexed, as_chunks, delete_runs
from ._config import INSTANCE, STAGE_HOOKS, STAGES, PipelineConfig
from ._flight import Flights, land
from ._register import register_components
from ._result import RunInput, RunResult, StageRecord, as_request
from ._run_stream import RunStream, open_stream
from ._stages import SKIPPED_ON_HIT, STAGE_FUNCTIONS, DeltaCallback, RunState, stream_hit
from ._streaming import held

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager, AbstractContextManager

    from ..kernel import Kernel

__all__ = ["Pipeline"]

log = structlog.get_logger(__name__)

def _ended(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "error"


def _of_plugin(plugin: str, distribution: str) -> str:
    return f"plugin {plugin} ({distribution})" if distribution else f"plugin {plugin}"


class Pipeline:
    """Components from a :class:`PipelineConfig`, run through the request lifecycle.

    Build one with :meth:`Kernel.pipeline` or :meth:`Kernel.load_pipeline`. Components are
    registered in their own :class:`pluggy.PluginManager` so that pluggy validates their
    hook signatures and orders their impls: components listed first in the file are
    called first (``tryfirst`` / ``trylast`` markers still take precedence).
    """

    def __init__(self, kernel: Kernel, config: PipelineConfig, *,
                 trace_hooks: bool = False, instances: Mapping[str, object] | None = None) -> None:
        self.kernel = kernel
        self.config = config
        self.name = config.name
        self.components: dict[str, object] = {}
        self._pm = role_plugin_manager()
        # The instances built here from the registry (not those the caller handed in): a
        # build that fails part-way closes them, since no pipeline will.
        self._built_here: list[tuple[str, object]] = []
        try:
            self._build(instances or {})
            self.dispatcher = Dispatcher(
                self._pm,
                emit=lambda event: kernel.publish(event, self),
                labels=self._label,
                monitors=kernel.hook_monitors,
                trace_hooks=trace_hooks,
                limiter=lambda: kernel.thread_limiter,
            )
            self.dispatcher.pipeline = self.name
            self.stages = self._effective_stages()
        except BaseException:
            closer = failed_build_closer(kernel, self.name, self._built_here)
            if closer is not None:
                kernel._close_later(closer)
            raise
        self._policies = {stage: config.policy(stage) for stage in self.stages}
        self._held = config.stream == "guarded" and "guard_output" in self.stages
        self._flights = Flights.of(config, self.stages)
        # Indexing is no stage of a run: it follows the pipeline's own timeout and policy.
        self._index_policy = config.policy("index")
        self.default_policy = self._index_policy
        self._writes: dict[str, Any] = {"stage": "index", "policy": self._index_policy,
                                        "check": COUNT, "all_failed_raises": True}
        self._run_ids = RunIds()
        self.backends = tuple(
            name for name in self.components
            if self._implements(name, *STAGE_HOOKS["generate"]))
        self._unsubscribe: list[Any] = []
        self._opened = self._ready = False
        self._components_open: set[str] = set()  # those whose aieng_pipeline_open succeeded
        self._open_lock = anyio.Lock()
        self._closed = False
        self._in_use = InUse()  # runs and index calls in flight: aclose waits for them

    # -- building ------------------------------------------------------------------------

    def _build(self, instances: Mapping[str, object]) -> None:
        registry = self.kernel.registry
        source = self.config.source
        built: list[tuple[str, object]] = []
        for name, comp in self.config.components.items():
            if name in instances:
                built.append((name, instances[name]))
                continue
            info = registry.component(comp.use)
            try:
                instance = info.build(comp.options)
            except (Exception, SystemExit) as exc:  # a component that cannot start: config
                raise ConfigError(
                    f"component {comp.use!r} of {_of_plugin(info.plugin, info.distribution)} "
                    f"failed to start: {type(exc).__name__}: {exc}",
                    source=source, key=f"components.{name}") from exc
            built.append((name, instance))
            self._built_here.append((name, instance))
        register_components(self._pm, built, source, self._plugin_of)
        self.components.update(built)

    def _plugin_of(self, name: str) -> PluginInfo | None:
        """The plugin that registered component ``name``'s class (none for an instance)."""
        comp = self.config.components.get(name)
        if comp is None or comp.use == INSTANCE:
            return None
        registry = self.kernel.registry
        plugin = registry.component(comp.use).plugin
        return next((p for p in registry.plugins if p.name == plugin), None)

    def _hooks_of(self, name: str) -> list[str]:
        plugin = self._pm.get_plugin(name)
        return [caller.name for caller in self._pm.get_hookcallers(plugin) or []]

    def _implements(self, name: str, *hooks: str) -> bool:
        return bool(set(self._hooks_of(name)).intersection(hooks))

    def _effective_stages(self) -> tuple[str, ...]:
        return self.config.effective_stages(
            {s for s in STAGES
             if any(self._implements(n, *STAGE_HOOKS[s]) for n in self.components)})

    def _label(self, plugin_name: str) -> str:
        comp = self.config.components.get(plugin_name)
        if comp is None or comp.use == INSTANCE:
            return type(self.components.get(plugin_name)).__module__.split(".")[0]
        try:
            info = self.kernel.registry.component(comp.use)
        except UnknownComponentError:  # its plugin was unregistered since the build
            return f"component {comp.use!r}"
        return f"component {comp.use!r} of {_of_plugin(info.plugin, info.distribution)}"

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pipeline's own plugin manager (its component instances)."""
        return self._pm

    def _open(self) -> None:
        """Subscribe components implementing ``aieng_on_event`` to this pipeline's events
        (once; called when the kernel has started, whichever came first)."""
        if self._opened or self._closed:
            return
        self._opened = True
        for impl in self._pm.hook.aieng_on_event.get_hookimpls():
            self._unsubscribe.append(self.kernel.bus.add_callback(
                impl.function, name=f"{self.name}.{impl.plugin_name}",  # type: ignore[arg-type]
                pipeline=self.name, source=self))

    # -- running -------------------------------------------------------------------------

    async def run(
        self,
        input: RunInput,
        *,
        reference: str | Sequence[str] | None = None,
        context: Sequence[str] | None = None,
        on_delta: DeltaCallback | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run the stages on one input.

        :param input: the user's text, a :class:`Query`, a :class:`Request` or messages.
        :param reference: the expected answer(s), for the ``judge`` stage.
        :param context: the passages the answer should be grounded in, for the ``judge``
            stage (an evaluation dataset's); by default the run's retrieved hits.
        :param on_delta: stream the generation: called with each :class:`Delta`.
        :param run_id: the run's id (a fresh one by default).
        :param metadata: the ``judge`` stage's ``Sample.metadata`` (an eval item's checks).
        :returns: every artifact and the event trace.
        :raises HookError: when a stage under ``on_error = "fail"`` fails.
        """
        if isinstance(context, (str, bytes)):
            raise TypeError("context must be a sequence of passages, got a string "
                            "(give [passage] for one)")
        if not self._ready:
            await self.open()
        request = as_request(input)
        # A run in a cancelled scope (the host's deadline passed) is no run: no RunStarted.
        await anyio.lowlevel.checkpoint_if_cancelled()
        run_id = self._run_ids.next() if run_id is None else run_id
        scope = RunScope(run_id, self.name, self.kernel.publish,  # within a run: its step
                         parent=getattr(CURRENT_RUN.get(), "run_id", ""), source=self)
        token = CURRENT_RUN.set(scope)
        log_tokens = structlog.contextvars.bind_contextvars(run_id=run_id, pipeline=self.name)
        try:
            with self._using():
                query = input if isinstance(input, Query) else None
                return await self._run(scope, request, query, reference, context, on_delta,
                                       metadata)
        finally:
            structlog.contextvars.reset_contextvars(**log_tokens)
            CURRENT_RUN.reset(token)
            scope.end()

    def stream(self, input: RunInput, *, reference: str | Sequence[str] | None = None,
               context: Sequence[str] | None = None, run_id: str | None = None,
               metadata: Mapping[str, Any] | None = None
               ) -> AbstractAsyncContextManager[RunStream]:
        """:meth:`run` with its deltas as an async iterator, for a host that forwards them:
        ``async with pipeline.stream(q) as deltas:``, ``async for delta in deltas: ...``,
        then ``deltas.result``. Leaving the block before the last delta cancels the run.
        The arguments are :meth:`run`'s; see :class:`RunStream` (its ``run_id`` is known
        before the first delta)."""
        run_id = self._run_ids.next() if run_id is None else run_id
        return open_stream(run_id, lambda on_delta: self.run(
            input, reference=reference, context=context, on_delta=on_delta, run_id=run_id,
            metadata=metadata))

    def _using(self) -> AbstractContextManager[None]:
        self.kernel._check_caller()  # a forked child, another thread's loop: refused
        if self._closed:
            raise RuntimeError(f"pipeline {self.name!r} is closed")
        return self._in_use.held()

    async def _run(self, scope: RunScope, request: Request, query: Query | None,
                   reference: str | Sequence[str] | None, context: Sequence[str] | None,
                   on_delta: DeltaCallback | None,
                   metadata: Mapping[str, Any] | None = None) -> RunResult:
        started = time.perf_counter()
        scope.emit(unchecked(RunStarted, run_id=scope.run_id, pipeline=self.name,
                             input=request.prompt, parent=scope.parent))
        state = RunState(
            scope=scope, dispatcher=self.dispatcher, backends=self.backends, request=request,
            # A Query input keeps its id and filters; anything else becomes one.
            query=query if query is not None else Query(text=request.prompt),
            reference=reference if reference is None or isinstance(reference, str)
            else tuple(reference),
            context=None if context is None else tuple(context),
            metadata=dict(metadata) if metadata else {},
            # Output guards hold a stream back (stream = "guarded"): the backend still
            # streams (time to first token, token events), the caller gets the guarded answer.
            on_delta=held if on_delta is not None and self._held else on_delta,
            k_retrieve=self.config.k("retrieve", 10), k_rerank=self.config.k("rerank", 10),
            flights=self._flights)
        records: list[StageRecord] = []
        announce = self.kernel.bus.listening(StageStarted.name)
        # A cache hit (or a held stream) reaches a streaming caller after the output guards.
        hit_after = "guard_output" if "guard_output" in self.stages else "cache_lookup"
        status = "ok"
        try:
            for stage in self.stages:
                if state.cache_hit is not None and stage in SKIPPED_ON_HIT:
                    continue
                policy = self._policies[stage]
                scope.stage = stage
                if announce:
                    scope.emit(unchecked(StageStarted, run_id=scope.run_id, pipeline=self.name,
                                            stage=stage))
                t0 = time.perf_counter()
                error = ""
                try:
                    stage_status = await STAGE_FUNCTIONS[stage](state, policy)
                except HookError as exc:
                    if policy.on_error != "skip" or exc.final:
                        records.append(StageRecord(stage, "error",
                                                   time.perf_counter() - t0, str(exc)))
                        scope.emit(unchecked(StageFinished, run_id=scope.run_id, pipeline=self.name,
                                                 stage=stage, status="error",
                                                 duration_s=time.perf_counter() - t0))
                        status = "error"
                        raise
                    stage_status, error = "skipped", str(exc)
                except BaseException as exc:  # cancelled, or the caller's on_delta raised
                    scope.emit(unchecked(StageFinished, run_id=scope.run_id, pipeline=self.name,
                                         stage=stage, status=_ended(exc),
                                         duration_s=time.perf_counter() - t0))
                    raise
                duration = time.perf_counter() - t0
                records.append(StageRecord(stage, stage_status, duration, error))
                scope.emit(unchecked(StageFinished, run_id=scope.run_id, pipeline=self.name,
                                     stage=stage, status=stage_status, duration_s=duration))
                if stage == hit_after and (state.cache_hit is not None or
                                           state.on_delta is held):
                    state.on_delta = on_delta
                    await stream_hit(state)
                if state.blocked:
                    status = "blocked"
                    break
        except BaseException as exc:
            status = "error" if status == "error" else _ended(exc)
            raise
        finally:
            land(state)  # a leader that failed, was blocked or cancelled: its followers go on
            scope.emit(unchecked(RunFinished, run_id=scope.run_id, pipeline=self.name,
                                 status=status, duration_s=time.perf_counter() - started))
        # Yield once per run so subscribers are never starved by a hot loop of fast runs;
        # shielded: a run the bus was told finished is the caller's (its cancellation
        # reaches it at its next await), not lost to a Cancelled with no answer.
        await anyio.lowlevel.cancel_shielded_checkpoint()
        return RunResult(
            run_id=scope.run_id, pipeline=self.name, status=status, input=request,
            request=state.request, query=state.query,
            input_verdicts=tuple(state.input_verdicts), cache_hit=state.cache_hit,
            route=state.route, expansions=state.expansions, runs=dict(state.runs),
            retrieved=state.retrieved,
            hits=state.hits, raw_completion=state.raw_completion, completion=state.completion,
            output_verdicts=tuple(state.output_verdicts), scores=tuple(state.scores),
            stages=tuple(records), events=tuple(scope.trace),
        )

    async def index(self, documents: Iterable[Document], *, batch_size: int = 256
                    ) -> Indexed:
        """Chunk (when a chunker is present) and index documents in batches. A chunked
        document ``d`` is indexed as ``d#0``, ``d#1``, ...; once it is written again, what it
        no longer has is deleted (``d#n`` on past its last chunk; ``d`` itself, or ``d#0`` on
        when the chunker now passes it on).

        :returns: the number of documents (or chunks) the indexes reported written (the
            largest count when several indexes answer), an ``int`` whose ``deleted`` counts
            the stale ids deleted (as :meth:`delete` counts).
        """
        if not self._ready:
            await self.open()
        chunking = bool(self.dispatcher.impls("aieng_chunk_document"))
        written = deleted = 0
        batch = Batch()
        with self._using():
            for document in documents:
                batch.add(document, *await self._chunk(document))
                if batch.size >= batch_size:
                    counts = await self._index_batch(batch, chunking)
                    written, deleted = written + counts[0], deleted + counts[1]
                    batch = Batch()
            if len(batch):
                counts = await self._index_batch(batch, chunking)
                written, deleted = written + counts[0], deleted + counts[1]
        return Indexed(written, deleted)

    async def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id from every index (``aieng_delete``), each with the chunks
        ``index`` wrote for it (``id#0``, ``id#1``, ...).

        :returns: how many ids were deleted, chunks included: for each call to the indexes,
            the largest count any index reported, summed over the calls.
        :raises TypeError: for a lone string (one id is ``[id]``, not its characters).
        """
        if isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a sequence of document ids, got a string "
                            "(give [id] for one)")
        ids = tuple(ids)
        if not self._ready:
            await self.open()
        # The ids, then their chunks: ids with none cost a probe of N ids, not of 16 N more.
        with self._using():
            return (await self._delete(ids) if ids else 0) + await delete_runs(
                self._delete, {f"{i}#": 0 for i in ids})

    async def _delete(self, ids: Sequence[str]) -> int:
        counts = await self.dispatcher.gather("aieng_delete", {"ids": tuple(ids)}, **self._writes)
        return max((int(c) for c, _ in counts), default=0)

    async def feedback(self, run_id: str, kind: str, value: float = 0.0, text: str = "",
                       **metadata: Any) -> int:
        """Record a user's signal about a run with every feedback sink
        (``aieng_feedback_record``, gathered).

        :param kind: ``thumbs``, ``rating``, ``correction``, ``regenerate``, ``early_stop``...
        :returns: how many sinks recorded it (0: the pipeline has no feedback sink).
        :raises ValueError: when the signal is invalid (blank run id or kind, a non-finite value).
        :raises HookError: when a sink fails (under ``fallback``: when every sink failed).
        """
        if not self._ready:
            await self.open()
        record = Feedback(run_id=run_id, kind=kind, value=value, text=text, metadata=metadata)
        recorded: set[str] = set()
        with self._using():
            failures = await call_each(
                self.dispatcher, "aieng_feedback_record", lambda _: {"feedback": record},
                [i.plugin_name for i in self.dispatcher.impls("aieng_feedback_record")],
                stage="feedback", policy=self._index_policy, done=recorded)
        if failures and not recorded:  # recorded nowhere: no "0 sinks", no silent loss
            raise failures[0]
        return len(recorded)

    async def _chunk(self, document: Document) -> tuple[list[Document], bool]:
        if not isinstance(document, Document):  # index("text"): not one per character
            raise TypeError(f"index takes Document values, got {type(document).__name__}")
        found = await self.dispatcher.first("aieng_chunk_document", {"document": document},
                                            stage="index", policy=self._index_policy,
                                            check=CHUNKS)
        return ([document], False) if found is None else (as_chunks(document, found[0]), True)

    async def _index_batch(self, batch: Batch, chunking: bool) -> tuple[int, int]:
        """Write a batch: ``(written, stale ids deleted)``."""
        await anyio.lowlevel.checkpoint()  # cancellable between batches, sync indexes too
        documents = tuple(batch.documents())
        counts = await self.dispatcher.gather(
            "aieng_index", {"documents": documents}, **self._writes) if documents else []
        deleted = 0
        if chunking:  # after the writes: a search never finds a document in neither version
            deleted = await delete_runs(self._delete, *batch.stale(),
                                        keep={doc.id for doc in documents})
            if deleted:
                log.info("index.stale_deleted", pipeline=self.name, deleted=deleted)
        return max((int(c) for c, _ in counts), default=0), deleted

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open every component (``aieng_pipeline_open``), once; runs and ``index`` call
        this on first use, so an explicit call only moves model loading earlier.

        :raises HookError: naming the component whose opening failed.
        """
        self.kernel._check_caller()
        if self._closed:
            raise RuntimeError(f"pipeline {self.name!r} is closed")
        async with self._open_lock:
            if self._ready:
                return
            # Once per component: after a failed opening, only those that did not open.
            names = [i.plugin_name for i in self.dispatcher.impls("aieng_pipeline_open")
                     if i.plugin_name not in self._components_open]
            await call_each(self.dispatcher, "aieng_pipeline_open",
                            lambda name: {"context": ComponentContext(self, name)}, names,
                            stage="open", policy=StagePolicy(timeout=None),
                            done=self._components_open)
            if self._closed:  # closed meanwhile: aclose, waiting, closes what opened
                raise RuntimeError(f"pipeline {self.name!r} is closed (while it opened)")
            self._ready = True

    async def aclose(self) -> None:
        """Unsubscribe and close every component (``aieng_pipeline_close``), once, after the
        runs and index calls in flight and an opening in flight end (new ones are refused),
        and the ``@blocking`` threads that runs left behind (for ``kernel.drain_timeout``);
        a component that fails to close is logged by name and the others still close.
        Cancelling it stops the wait for what is in flight (a hung run: a second Ctrl-C);
        the closing itself is shielded from cancellation: it runs to its end."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        try:
            try:
                await self._in_use.ended()  # no stage in flight meets a closed component
                await threads_ended(self.dispatcher, self.name, self.kernel.drain_timeout)
            finally:
                await self._close_components()
        finally:
            # A closed pipeline never runs again: the kernel need not keep it (a server
            # building a pipeline per request would otherwise grow without bound).
            self.kernel._forget(self)

    async def _close_components(self) -> None:
        # Shielded: closing writes what components hold (a vector index's snapshot, a
        # database); a caller being cancelled must not cut that short, or the data is lost.
        with anyio.CancelScope(shield=True):
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            # Subscribed components take the events published so far before they close
            # (one stuck in its callback: for as long as the kernel's exit would wait).
            with anyio.move_on_after(self.kernel.drain_timeout):
                for unsubscribe in self._unsubscribe:
                    await unsubscribe.drained()
            async with self._open_lock:  # what a component opens after its close leaks
                await self.dispatcher.gather("aieng_pipeline_close", {}, stage="close",
                                             policy=CLOSE_POLICY)

    async def __aenter__(self) -> Pipeline:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def to_dict(self) -> dict[str, Any]:
        """The pipeline's configuration as a plain dict."""
        return self.config.to_dict()

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a Pipeline cannot be pickled: send its config (pipeline.config "
                        "pickles) and build it on a kernel in the other process")


