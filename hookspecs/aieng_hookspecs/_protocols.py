"""What registration hooks receive: narrow protocols, so plugins never import the kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .types import Event

__all__ = ["ComponentRegistry", "EventRegistry"]


class ComponentRegistry(Protocol):
    """Where a plugin declares the components it offers (``aieng_register_components``)."""

    def add(
        self,
        name: str,
        factory: Callable[..., object],
        *,
        options: type[Any] | None = None,
        description: str = "",
    ) -> None:
        """Offer a component under ``name``.

        :param name: the name pipeline files use (``use = "NAME"``); unique across plugins.
        :param factory: a class or callable building the component; it receives one
            argument, the options instance, when ``options`` is given, and none otherwise.
        :param options: an attrs class of the component's typed options (unknown keys in a
            pipeline file are an error).
        :param description: one line for ``aieng plugins``.
        """


class EventRegistry(Protocol):
    """Where a plugin declares its own event types (``aieng_register_events``)."""

    def add(self, event_type: type[Event]) -> None:
        """Declare an event type; its ``name`` must be unique and dotted (``"drift.detected"``)."""
