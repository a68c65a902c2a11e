"""One spec module per role. :data:`ROLE_MODULES` lists them for the kernel and the docs."""

from __future__ import annotations

from types import ModuleType

from . import (
    agent,
    backend,
    cache,
    chunker,
    context,
    dataset,
    events,
    expansion,
    feedback,
    guardrail,
    judge,
    lifecycle,
    memory,
    quantizer,
    registration,
    reranker,
    retriever,
    router,
    tool,
    trainer,
)

__all__ = ["REGISTRATION_MODULES", "ROLE_MODULES"]

#: Specs of the per-request role hooks, implemented by component instances.
ROLE_MODULES: tuple[ModuleType, ...] = (
    backend,
    retriever,
    expansion,
    reranker,
    judge,
    tool,
    guardrail,
    router,
    cache,
    quantizer,
    chunker,
    context,
    trainer,
    dataset,
    memory,
    agent,
    feedback,
    lifecycle,
    events,
)

#: Specs of the hooks a plugin module implements: registration, plus event subscription.
REGISTRATION_MODULES: tuple[ModuleType, ...] = (registration, events)
