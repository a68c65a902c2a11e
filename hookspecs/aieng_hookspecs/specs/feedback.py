"""Role ``feedback``: sinks for users' explicit and implicit signals."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Feedback

__all__ = ["aieng_feedback_record"]


@role_spec(CallMode.GATHER, role="feedback")
def aieng_feedback_record(feedback: Feedback) -> None:
    """Record one piece of feedback.

    :called: by the gateway's ``/v1/feedback`` and ``Pipeline.feedback``.
    :mode: gather: every sink records concurrently.
    :none: the only return value.
    :async: may be ``async def``; storage must not block the loop.
    :param feedback: the signal and the run it is about.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """
