"""An agent run whose pipeline was closed under it: the error it ends with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import reduce_error
from ._result import AgentResult

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = ["AgentClosedError", "closed_reason", "is_closed"]


class AgentClosedError(RuntimeError):
    """The agent's pipeline was closed during the run (or before it). The step in flight
    when it closed ran to its end (closing waits for it, as for a pipeline run); the run
    then ended before its next step.

    A :class:`RuntimeError`, as a run on a closed pipeline raises.

    :param result: the run so far: its finished steps, transcript, usage and events, with
        the status ``closed``.
    """

    def __init__(self, result: AgentResult) -> None:
        super().__init__(result.reason)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call AgentClosedError(reason): a text where a result belongs.
        return reduce_error(self)

    @property
    def pipeline(self) -> str:
        """The closed pipeline's name."""
        return self.result.pipeline


def closed_reason(pipeline: str, run_id: str, steps: int) -> str:
    """What :class:`AgentClosedError` says: the pipeline, the agent run, where it ended."""
    where = f"after step {steps}" if steps else "before its first step"
    return (f"pipeline {pipeline!r} was closed during agent run {run_id!r}: the run ended "
            f"{where}")


def is_closed(pipeline: Pipeline) -> bool:
    """Whether ``pipeline.aclose()`` has begun (new runs are refused)."""
    return bool(pipeline._closed)
