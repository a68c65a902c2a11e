"""The per-component :class:`~aieng_hookspecs.PipelineContext` a pipeline hands out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from aieng_hookspecs.types import (
    Completion,
    Event,
    Hit,
    ModelCall,
    Query,
    Request,
    unchecked,
)

from .._errors import HookError
from .._scope import CURRENT_RUN
from ..dispatch import StagePolicy, expect
from ._stages import _parameters, fused, reranked
from ._streaming import Began

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["ComponentContext"]

_COMPLETION = expect(Completion)
_HITS = expect((list, tuple), items=Hit)


class ComponentContext:
    """What one component sees of its pipeline (see ``aieng_pipeline_open``)."""

    def __init__(self, pipeline: Pipeline, component: str) -> None:
        self._pipeline = pipeline
        self._component = component

    @property
    def pipeline(self) -> str:
        """The pipeline's name."""
        return self._pipeline.name

    @property
    def component(self) -> str:
        """This component's name in the pipeline."""
        return self._component

    @property
    def backends(self) -> tuple[str, ...]:
        """The pipeline's backend components, in the route stage's candidate order."""
        return self._pipeline.backends

    async def embed(
        self, texts: Sequence[str], model: str | None = None
    ) -> Sequence[Sequence[float]]:
        """Embed with the pipeline's embedder, else the kernel's default embedder."""
        if not texts:
            return []
        pipeline = self._pipeline
        found = await pipeline.dispatcher.first(
            "aieng_embed", {"texts": list(texts), "model": model}, stage="embed",
            policy=self._policy())
        if found is None:
            fallback = await pipeline.kernel.default_embedder()
            if fallback is None:
                raise LookupError(
                    f"no component of pipeline {pipeline.name!r} implements aieng_embed and "
                    f"the kernel's default embedder {pipeline.kernel.default_embedder_name!r} "
                    "is not installed: add an embedding component to the pipeline, or "
                    "install aieng-transformers (its 'minilm' component)")
            # Under this pipeline's policy: its timeout, not the fallback's own default.
            found = await fallback.dispatcher.first(
                "aieng_embed", {"texts": list(texts), "model": model}, stage="embed",
                policy=self._policy())
            if found is None:
                raise LookupError(f"the default embedder does not serve model {model!r}")
        vectors: Sequence[Sequence[float]] = found[0]
        if len(vectors) != len(texts):
            raise HookError(hook="aieng_embed", plugin=found[1], stage="embed",
                            message=f"returned {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    async def generate(self, request: Request) -> Completion:
        """Generate with the pipeline's backends, publishing a ``backend.call`` event."""
        pipeline = self._pipeline
        began = Began()
        found = await pipeline.dispatcher.first("aieng_generate", {"request": request},
                                                stage="generate", policy=self._policy(),
                                                check=_COMPLETION, before=began)
        if found is None:
            raise LookupError(f"no backend of pipeline {pipeline.name!r} answered "
                              f"(model {request.model!r}) for component {self._component!r}")
        completion: Completion = found[0]
        plugin = found[1]
        self.emit(unchecked(ModelCall, component=plugin, messages=request.messages,
                            parameters={**_parameters(request), "caller": self._component},
                            raw_output=completion.text, usage=completion.usage,
                            duration_s=time.perf_counter() - began.at))
        return completion

    async def retrieve(self, query: str | Query, k: int = 10) -> list[Hit]:
        """Search the pipeline's retrievers, fuse their runs and rerank, as the retrieve
        and rerank stages do (under their policies), the best ``k`` first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        pipeline = self._pipeline
        asked = query if isinstance(query, Query) else Query(text=query)
        policy = pipeline.config.policy("retrieve")
        dispatcher = pipeline.dispatcher
        found = await dispatcher.gather("aieng_retrieve", {"query": asked, "k": k},
                                        stage="retrieve", policy=policy, check=_HITS,
                                        all_failed_raises=True)
        hits = await fused(dispatcher, asked, [tuple(h)[:k] for h, _ in found], k, policy)
        if hits:
            hits = await reranked(dispatcher, asked, hits, k, pipeline.config.policy("rerank"))
        return list(hits)

    def _policy(self) -> StagePolicy:
        """The calling stage's timeout and error policy; the pipeline's outside a run."""
        scope = CURRENT_RUN.get()
        if scope is not None and scope.pipeline == self._pipeline.name and scope.stage:
            return self._pipeline.config.policy(scope.stage)
        return self._pipeline.default_policy

    def emit(self, event: Event) -> None:
        """Publish an event; in a run it joins the run's trace. Empty ids are filled in.
        Once the run has ended (the host's deadline passed while a worker thread of this
        component still ran), events emitted in it are dropped."""
        scope = CURRENT_RUN.get()
        fill: dict[str, Any] = {}
        if not event.pipeline:
            fill["pipeline"] = self._pipeline.name
        if not event.run_id and scope is not None:
            fill["run_id"] = scope.run_id
        if fill:
            event = attrs.evolve(event, **fill)
        if scope is not None and (scope.source is self._pipeline or scope.ended):
            scope.emit(event)  # none once the run has ended (a thread it left behind)
        else:
            self._pipeline.kernel.publish(event, self._pipeline)
