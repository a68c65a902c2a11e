"""The event type the routers publish: a backend's circuit changed state."""

from __future__ import annotations

from typing import ClassVar

import attrs
from aieng_hookspecs.types import Event
from attrs import field
from attrs import validators as v

__all__ = ["CircuitChanged"]

_STATES = ("closed", "open", "half_open")


@attrs.frozen(kw_only=True)
class CircuitChanged(Event):
    """A backend's circuit breaker changed state (``closed``, ``open``, ``half_open``).

    :param router: the router component that keeps the breaker.
    :param backend: the backend whose circuit changed.
    :param before: the state it left.
    :param after: the state it entered.
    :param reason: why (``"5 consecutive failures"``, ``"the trial call succeeded"``).
    :param failures: consecutive failures counted when it changed.
    """

    name: ClassVar[str] = "router.circuit"
    router: str = field(default="", validator=v.instance_of(str))
    backend: str = field(validator=v.instance_of(str))
    before: str = field(validator=v.in_(_STATES))
    after: str = field(validator=v.in_(_STATES))
    reason: str = field(default="", validator=v.instance_of(str))
    failures: int = field(default=0, validator=[v.instance_of(int), v.ge(0)])
