"""Component lifecycle: a pipeline opens and closes its components."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from .._protocols import PipelineContext

__all__ = ["aieng_pipeline_close", "aieng_pipeline_open"]


@role_spec(CallMode.GATHER, role="lifecycle")
def aieng_pipeline_open(context: PipelineContext) -> None:
    """Prepare a component for its pipeline: load models, open files and connections.

    :called: once per component, before the pipeline's first run or index call (or by
        ``async with pipeline``); each component gets its own context.
    :mode: gather: every component opens concurrently; a failure fails the opening with a
        ``HookError`` naming the component.
    :none: the only return value.
    :async: may be ``async def``; loading work belongs in a thread (``anyio.to_thread``).
    :param context: the component's handle on its pipeline: ``context.embed``,
        ``context.generate``, ``context.retrieve``, ``context.backends`` and
        ``context.emit``, so it can use other roles through hooks without importing another
        plugin or the kernel.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.GATHER, role="lifecycle")
def aieng_pipeline_close() -> None:
    """Release what :func:`aieng_pipeline_open` acquired.

    :called: once per component when its pipeline closes (``pipeline.aclose()``, leaving
        ``async with pipeline`` or the kernel).
    :mode: gather: every component closes concurrently; a failure is logged with the
        component's name and the others still close.
    :none: the only return value.
    :async: may be ``async def``.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """
