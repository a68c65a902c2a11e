"""Role ``judge``: score an output (reference metrics, AI judges, checks)."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Sample, Score

__all__ = ["aieng_judge"]


@role_spec(CallMode.GATHER, role="judge")
def aieng_judge(sample: Sample) -> list[Score] | None:
    """Score one sample.

    :called: by the ``judge`` stage of a run and by ``aieng eval`` for each dataset item.
    :mode: gather: every judge runs concurrently; all their scores are kept.
    :none: "not applicable" (a reference metric without a reference): no score.
    :async: may be ``async def``; an AI judge awaits its backend.
    :param sample: input, output, optional reference(s) and context.
    :returns: one or more scores, each named by its metric.

    .. versionadded:: 0.1.0
    """
