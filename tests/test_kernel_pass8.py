"""The kernel as a user meets it (eighth pass): the bus across kernel sessions and under
subscribe / unsubscribe churn."""

from __future__ import annotations

import anyio
import pytest
from aieng_hookspecs.types import RunFinished, StageFinished
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from aieng_core import EventBus, Kernel
from aieng_core.registry import Registry

pytestmark = pytest.mark.anyio


async def test_a_subscribers_exit_summary_is_logged_once_across_kernel_sessions() -> None:
    """A kernel entered again logs at its exit the summary of the subscribers that dropped
    events in that session only: the one that dropped in the first session was summed up
    when the first ended, and is not reported again."""
    kernel = Kernel(env={}, entry_points=[], bus_buffer=1, loop_block_threshold=None)
    with capture_logs() as logs:
        async with kernel, kernel.bus.subscribe("*", name="unread"):
            for _ in range(5):
                kernel.publish(StageFinished(stage="s", status="ok", duration_s=0.0))
        async with kernel:
            pass
    summaries = [entry for entry in logs if entry["event"] == "bus.subscriber_summary"]
    assert [(s["subscriber"], s["dropped"]) for s in summaries] == [("unread", 4)]


# A script of bus operations: publish an event of a name, open a subscription of a
# pattern, close the n-th open subscription (modulo how many are open).
_ops = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(["stage.finished", "run.finished"])),
    st.tuples(st.just("open"), st.sampled_from(["*", "stage.*", "run.*", "none"])),
    st.tuples(st.just("close"), st.integers(0, 5)),
), max_size=40)


_MATCHES = {"*": {"stage.finished", "run.finished"}, "stage.*": {"stage.finished"},
            "run.*": {"run.finished"}, "none": set()}


@given(_ops)
def test_every_subscription_gets_what_it_matched_while_open_in_order(
        ops: list[tuple[str, object]]) -> None:
    """Whatever the interleaving of publishes, subscriptions opened and closed: each one
    gets exactly the matching events published while it was open, in publication order,
    and nothing once it is closed (what was queued at its close stays readable)."""
    async def script() -> None:
        bus = EventBus(buffer=64)
        open_: list[tuple[object, object, str, list[int]]] = []  # (cm, sub, pattern, want)
        done: list[tuple[object, list[int]]] = []
        for number, (op, arg) in enumerate(ops):
            if op == "publish":
                event = (StageFinished(stage=str(number), status="ok", duration_s=0.0)
                         if arg == "stage.finished"
                         else RunFinished(pipeline=str(number), status="ok", duration_s=0.0))
                bus.publish(event)
                for _, _, pattern, want in open_:
                    if arg in _MATCHES[pattern]:
                        want.append(number)
            elif op == "open":
                manager = bus.subscribe(str(arg))
                open_.append((manager, await manager.__aenter__(), str(arg), []))
            elif open_:
                manager, sub, _, want = open_.pop(int(arg) % len(open_))  # type: ignore[call-overload]
                await manager.__aexit__(None, None, None)  # type: ignore[attr-defined]
                done.append((sub, want))
        for manager, sub, _, want in open_:
            await manager.__aexit__(None, None, None)  # type: ignore[attr-defined]
            done.append((sub, want))
        for sub, want in done:
            got = [int(e.stage if isinstance(e, StageFinished) else e.pipeline)
                   for e in sub.pending()]  # type: ignore[attr-defined]
            assert got == want
            assert sub.pending() == []  # type: ignore[attr-defined]

    anyio.run(script)


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
@pytest.mark.parametrize("variable", ["AIENG_PLUGINS", "AIENG_DISABLE_PLUGINS"])
def test_a_list_that_names_no_plugin_is_no_list(variable: str, value: str) -> None:
    """A selection variable holding only commas and spaces (``",$EXTRA"`` with ``$EXTRA``
    empty) selects as an empty one does: every plugin loads. An allowlist of only commas
    disabled every plugin, the built-ins included, without a word."""
    registry = Registry(env={variable: value}, entry_points=[])
    registry.load()
    assert [(p.name, p.status) for p in registry.plugins] == [("builtin", "loaded")]
