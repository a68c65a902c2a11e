"""Many streams at once from aieng's ``openai`` backend through the gateway, some cut
short by their client: both sides count every run once, under the same status, and each
cut stream is recorded as ``early_stop``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import FlakyBackend, LoopbackServer
from aieng_gateway import Gateway, GatewaySettings
from aieng_hookspecs.types import Delta
from aieng_monitoring import FeedbackOptions, FeedbackStore, Monitor, MonitorOptions
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core.testing import isolated_kernel, settle

pytestmark = pytest.mark.anyio


def _runs(monitor: Monitor) -> dict[str, int]:
    return {key.split("status=")[1]: n for key, n in monitor.snapshot()["runs"].items()}


async def test_concurrent_streams_and_client_cuts_add_up_on_both_sides(
        tmp_path: Path) -> None:
    """Eight concurrent streams over one client pipeline, every other one cancelled by
    its caller after three deltas: the server counts four runs ``ok`` and four
    ``cancelled`` (the disconnect cancels them), as the client does, records four
    ``early_stop`` signals; the tokens the client got, the server made."""
    served = Monitor(MonitorOptions(log_runs=False))
    sink = FeedbackStore(FeedbackOptions(path=str(tmp_path / "feedback.sqlite3")))
    gateway = Gateway(lambda kernel: kernel.compose(
        {"llm": FlakyBackend(), "monitor": served, "feedback": sink}, name="srv", timeout=30),
        settings=GatewaySettings(auth=False),
        kernel=lambda: isolated_kernel(loop_block_threshold=None))
    client = Monitor(MonitorOptions(log_runs=False))
    with LoopbackServer(gateway.app) as server:
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            remote = OpenAIBackend(OpenAIOptions(base_url=server.base_url, model="srv",
                                                 max_retries=0, read_timeout=20.0))
            pipe = kernel.compose({"remote": remote, "monitor": client}, name="cli")

            async def one(i: int) -> None:
                cut = i % 2 == 1
                seen = 0
                with anyio.CancelScope() as scope:
                    def on_delta(delta: Delta) -> None:
                        nonlocal seen
                        seen += bool(delta.text)
                        if cut and seen >= 3:
                            scope.cancel()

                    prompt = f"STREAMLONG {i}" if cut else f"stream number {i}"
                    await pipe.run(prompt, on_delta=on_delta)
                assert scope.cancelled_caught == cut

            async with anyio.create_task_group() as group:
                for i in range(8):
                    group.start_soon(one, i)
            await settle(lambda: sum(_runs(client).values()) == 8)
            await settle(lambda: sum(_runs(served).values()) == 8)
            rows: list[Any] = []

            async def early_stops() -> bool:
                rows[:] = await sink.query(kind="early_stop")
                return len(rows) == 4

            with anyio.fail_after(10):
                while not await early_stops():
                    await anyio.sleep(0.02)
            await pipe.aclose()
    assert _runs(client) == _runs(served) == {"ok": 4, "cancelled": 4}
    assert client.snapshot()["model_calls"] == {"pipeline=cli,model=remote,streamed=true": 8}
    # The four finished streams answer "You said: stream number i" (5 words each), the
    # four cut ones gave their client 3 words each; the server may have made more of
    # those before it saw the disconnect, never fewer.
    sent = client.snapshot()["tokens"]["pipeline=cli,model=remote,direction=output"]
    made = served.snapshot()["tokens"]["pipeline=srv,model=llm,direction=output"]
    assert sent == 4 * 5 + 4 * 3
    assert made >= sent
