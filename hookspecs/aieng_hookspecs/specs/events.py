"""Subscribing to the event bus."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Event

__all__ = ["aieng_on_event"]


@role_spec(CallMode.NOTIFY, role="events")
def aieng_on_event(event: Event) -> None:
    """Receive one event from the bus.

    :called: by the event bus, for every event, in emission order, from the subscriber's own
        bounded queue in the kernel's task group (plugin modules receive every event of the
        kernel; pipeline components those of their pipeline).
    :mode: notify: each implementer is its own subscriber; a slow or failing one never
        stalls or fails a request, and what its full queue drops is counted and reported.
    :none: the only return value.
    :async: may be ``async def``.
    :param event: the event; ``event.name`` says which kind.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """
