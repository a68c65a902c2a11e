"""Removed bus subscribers: a long-running kernel keeps a bounded number of them, and what
one missed is reported when it goes, not only at the kernel's exit."""

from __future__ import annotations

import pytest

from aieng_core.bus import EventBus
from aieng_core.testing import isolated_kernel, settle
from aieng_hookspecs.types import BusDropped, Event, StageStarted

pytestmark = pytest.mark.anyio


def _event(i: int) -> StageStarted:
    return StageStarted(run_id="r", pipeline="p", stage=f"s{i}")


async def test_subscriptions_opened_per_request_do_not_pile_up() -> None:
    """A server subscribing once per request keeps the stats of the latest removed
    subscribers only, not of every one since the kernel started."""
    async with isolated_kernel() as kernel:
        for _ in range(3 * EventBus.REMOVED_KEPT):
            async with kernel.bus.subscribe("stage.*"):
                pass
            kernel.bus.add_callback(lambda event: None, name="cb")()
        assert len(kernel.bus.stats()) == EventBus.REMOVED_KEPT


async def test_a_removed_subscribers_drops_are_reported_when_it_goes() -> None:
    """An unread subscription that missed events reports them (``bus.dropped``) as its
    block ends, whatever happens to its stats later."""
    async with isolated_kernel(bus_buffer=2) as kernel:
        reports: list[Event] = []
        kernel.bus.add_callback(reports.append, name="reports",  # type: ignore[arg-type]
                                pattern="bus.dropped")
        async with kernel.bus.subscribe("stage.*", name="unread") as sub:
            for i in range(5):
                kernel.bus.publish(_event(i))
        assert sub.dropped == 3
        await settle(lambda: len(reports) == 1)
        report = reports[0]
        assert isinstance(report, BusDropped)
        assert (report.subscriber, report.dropped) == ("unread", 3)
