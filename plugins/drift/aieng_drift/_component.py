"""``drift``: an event-bus subscriber watching a pipeline's requests and judge scores."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Event, RunStarted, Score

from ._events import DriftDetected
from ._monitor import DriftMonitor, DriftResult
from ._options import DriftOptions

__all__ = ["DriftComponent"]

log = structlog.get_logger(__name__)

#: How many published events :attr:`DriftComponent.detected` keeps (the newest).
KEEP_DETECTED = 100
#: The most agent runs remembered at once, to count each one's task once.
_PARENTS = 10_000


class DriftComponent:
    """Watches the requests (``run.started`` events' input) and judge scores of its
    pipeline and publishes a ``drift.detected`` event when a detector fires. The runs of an
    agent (its model calls, each a run whose ``parent`` is the agent run) count as one
    request: the first one's input, the task; the others repeat it or are the runner's
    own (a review).

    Checks that fall due run in a worker thread (the KS p-value and the permutation test
    are CPU work). With the ``embedding`` detector, request texts are embedded through
    the pipeline (``context.embed``) in batches of ``embed_batch``. Judge scores arrive in
    the kernel's ``judge.scored`` events (any event with a ``scores`` attribute, a
    sequence of :class:`Score`, is read); :meth:`observe_scores` takes them by hand.

    With ``reference_path``, the saved reference windows are read when the pipeline first
    opens (in a worker thread), and a window that freezes is saved (in a worker thread).

    :param options: the typed options.
    """

    def __init__(self, options: DriftOptions | None = None) -> None:
        self.options = options if options is not None else DriftOptions()
        self.monitor = DriftMonitor(self.options, defer_io=True)
        self._loaded = False
        self.name = "drift"
        self._context: PipelineContext | None = None
        self._pending: list[str] = []
        #: the last :data:`KEEP_DETECTED` events published, also kept here (inspection,
        #: tests); bounded, as drift that persists fires at every check of a long run
        self.detected: deque[DriftDetected] = deque(maxlen=KEEP_DETECTED)
        #: the parent runs (agent runs) whose first step was counted; bounded
        self._parents: OrderedDict[str, None] = OrderedDict()

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the context, to embed and publish through it; read the saved reference
        (``reference_path``) at the first opening.

        :raises ReferenceFileError: for a reference file that cannot be used.
        """
        self._context = context
        self.name = context.component
        store = self.monitor.store
        if store is not None and not self._loaded:
            # read (disk, JSON) in a thread; adopted on the event loop, which owns windows
            self.monitor.adopt(await anyio.to_thread.run_sync(store.read))
            self._loaded = True

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Save a frozen reference whose save failed (a last retry, so that a restart finds
        it), and say how many request texts the embedding detector never saw: texts still
        waiting for a full batch of ``embed_batch`` are not embedded at close (the
        pipeline's embedder closes at the same time); they stay queued for a reopening."""
        if self.monitor.unsaved:
            await self._save_reference()
        if self._pending:
            log.warning("drift.closed_with_unembedded_texts", component=self.name,
                        texts=len(self._pending),
                        hint="the embedding detector embeds in batches of embed_batch: "
                             "a smaller batch loses fewer texts at close")

    @hookimpl
    async def aieng_on_event(self, event: Event) -> None:
        """Feed request texts and judge scores to the detectors; check what falls due."""
        if isinstance(event, RunStarted):
            if event.parent:  # a step of an agent run: its task once, at the first step
                if event.parent in self._parents:
                    return
                self._parents[event.parent] = None
                if len(self._parents) > _PARENTS:
                    self._parents.popitem(last=False)
            await self.observe_text(event.input)
            return
        scores = getattr(event, "scores", None)
        if isinstance(scores, (list, tuple)) and scores and all(
                isinstance(s, Score) for s in scores):
            await self.observe_scores(scores)

    async def observe_text(self, text: str) -> None:
        """Add one request text (and, with the embedding detector, its embedding)."""
        self.monitor.observe_text(text, check=False)
        if "embedding" in self.options.detectors:
            self._pending.append(text)
            if len(self._pending) >= self.options.embed_batch:
                await self.flush()
        await self._check_due()

    async def observe_scores(self, scores: Iterable[Score]) -> None:
        """Add judge scores (a run's ``result.scores``), one detector per metric name."""
        for score in scores:
            self.monitor.observe_score(score.name, score.value, check=False)
        await self._check_due()

    async def flush(self) -> None:
        """Embed the request texts waiting for the embedding detector, oldest first,
        ``embed_batch`` per ``context.embed`` call.

        A batch whose embedding fails (or is cancelled) goes back to the head of the queue
        and the error propagates: the next flush embeds it again. Meanwhile the queue keeps
        at most what the detector can still take, in order: the texts its reference still
        lacks, then one current window of the newest (those in between would only have
        passed through the window).

        :raises RuntimeError: before the pipeline has opened the component (nothing is
            lost).
        """
        if not self._pending:
            return
        if self._context is None:
            raise RuntimeError("the drift component embeds through its pipeline, which "
                               "opens it first (Pipeline.open or run)")
        size = self.options.embed_batch
        while self._pending:
            texts = self._pending[:size]
            del self._pending[:size]
            try:
                vectors: Sequence[Sequence[float]] = await self._context.embed(
                    texts, self.options.embedding_model)
            except BaseException:
                self._pending[:0] = texts
                self._bound_pending()
                raise
            for vector in vectors:
                try:
                    self.monitor.observe_embedding(vector, check=False)
                except ValueError as error:  # one bad vector: the batch's others count
                    log.warning("drift.embedding_refused", component=self.name,
                                error=str(error))
            await self._check_due()

    def _bound_pending(self) -> None:
        """Drop the waiting texts the embedding detector could not use: past the ones its
        reference still lacks, only the newest current window's worth count."""
        window = self.monitor.windows.get("embedding")
        frozen = window is not None and window.frozen
        lacking = 0 if frozen else self.options.reference_size - (
            len(window.reference) if window is not None else 0)
        keep = max(lacking, 0) + self.options.window_size
        if len(self._pending) > keep:
            dropped = len(self._pending) - keep
            del self._pending[lacking:lacking + dropped]
            log.warning("drift.embedding_backlog_dropped", component=self.name,
                        dropped=dropped, waiting=len(self._pending))

    async def _save_reference(self) -> None:
        write = self.monitor.claim_save() if self.monitor.unsaved else None
        if write is None:
            return
        try:
            await anyio.to_thread.run_sync(write)
        except OSError as error:  # monitoring goes on; the next item retries the save
            self.monitor.unsaved = True
            log.warning("drift.reference_save_failed", component=self.name,
                        path=str(self.options.reference_path), error=str(error))

    async def _check_due(self) -> None:
        await self._save_reference()
        # Claimed and recorded on the event loop, computed in a worker thread: callers
        # adding items meanwhile neither touch the copies the thread reads nor find the
        # same check due again.
        for detector in self.monitor.due():
            if not self.monitor.window(detector).due():
                continue  # claimed by another caller while this one awaited a check
            claimed = self.monitor.claim(detector)
            computed = await anyio.to_thread.run_sync(self.monitor.compute, *claimed)
            result = self.monitor.record(computed)
            if result.fired:
                self._publish(result)

    def _publish(self, result: DriftResult) -> None:
        o = self.options
        threshold = o.min_distance if result.detector == "embedding" else o.psi_threshold
        event = DriftDetected(component=self.name, detector=result.detector,
                              method=result.method, statistic=result.statistic,
                              p_value=result.p_value, psi=result.psi, alpha=o.alpha,
                              threshold=threshold, reference_size=result.reference_size,
                              window_size=result.window_size, reason=result.reason)
        log.warning("drift.detected", component=self.name, detector=result.detector,
                    statistic=result.statistic, p_value=result.p_value, psi=result.psi,
                    reason=result.reason)
        self.detected.append(event)
        if self._context is not None:
            self._context.emit(event)

    def metrics(self) -> dict[str, dict[str, float]]:
        """The monitor's metrics (see :meth:`DriftMonitor.metrics`)."""
        return self.monitor.metrics()

    def prometheus_text(self, **labels: Any) -> str:
        """The metrics as Prometheus text, with ``pipeline`` and ``component`` labels when
        opened (two drift components of one pipeline render series of their own)."""
        extra = ({"pipeline": self._context.pipeline, "component": self.name}
                 if self._context is not None else {})
        extra.update({k: str(v) for k, v in labels.items()})
        return self.monitor.prometheus_text(extra)
