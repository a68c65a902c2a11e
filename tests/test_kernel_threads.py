"""``@blocking`` impls in worker threads: the kernel's ``worker_threads`` bounds them even
when the caller stops waiting (a timeout, a cancellation) and the thread runs on."""

from __future__ import annotations

import threading

import anyio
import pytest

from aieng_core import HookError
from aieng_core.testing import isolated_kernel, settle
from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Completion, Request

pytestmark = pytest.mark.anyio


class Stuck:
    """A blocking backend that holds its thread until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.lock = threading.Lock()

    @hookimpl
    @blocking
    def aieng_generate(self, request: Request) -> Completion:
        with self.lock:
            self.started += 1
        self.release.wait(10)
        return Completion(text="late")


async def test_an_abandoned_thread_still_counts_against_worker_threads() -> None:
    """A call left behind keeps its thread running: with ``worker_threads=1`` the next
    calls wait for that thread (and time out waiting) instead of starting more; once the
    thread ends its slot is free again."""
    async with isolated_kernel(worker_threads=1) as kernel:
        stuck = Stuck()
        pipeline = kernel.compose({"stuck": stuck}, timeout=0.05)
        patient = kernel.compose({"stuck": stuck}, name="patient", timeout=None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(patient.run, "hi")
            await settle(lambda: stuck.started == 1)
            tg.cancel_scope.cancel()  # abandons the thread, which runs on
        for _ in range(3):
            # It never ran: the error says no thread was free, not that the impl was slow.
            with pytest.raises(HookError, match="no worker thread free within 0.05 s") as err:
                await pipeline.run("hi")
            assert "worker_threads" in err.value.hint and isinstance(err.value.cause, TimeoutError)
        assert stuck.started == 1
        limiter = kernel.thread_limiter
        assert limiter is not None and limiter.borrowed_tokens == 1
        stuck.release.set()
        await settle(lambda: limiter.borrowed_tokens == 0)
        assert (await patient.run("hi")).answer == "late"
        assert limiter.borrowed_tokens == 0


async def test_a_cancelled_call_holds_its_thread_slot_until_the_thread_ends() -> None:
    """A caller's cancellation abandons the thread too; its slot is held until it ends."""
    async with isolated_kernel(worker_threads=2) as kernel:
        stuck = Stuck()
        pipeline = kernel.compose({"stuck": stuck}, timeout=None)
        # Cancelled once the thread runs the call (a fixed delay raced the thread's start
        # on a busy machine: the call was given up before it ran, its slot at once free).
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.run, "hi")
            await settle(lambda: stuck.started == 1)
            tg.cancel_scope.cancel()
        limiter = kernel.thread_limiter
        assert limiter is not None and limiter.borrowed_tokens == 1
        stuck.release.set()
        await settle(lambda: limiter.borrowed_tokens == 0)


async def test_calls_cancelled_at_any_point_give_every_slot_back() -> None:
    """Many calls cancelled at once, some before their thread took them, some while it runs:
    once the threads end, no slot is left borrowed and the next call runs."""
    async with isolated_kernel(worker_threads=2) as kernel:
        stuck = Stuck()
        pipeline = kernel.compose({"stuck": stuck}, timeout=None)
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(pipeline.run, "hi")
            await settle(lambda: stuck.started == 2)
            tg.cancel_scope.cancel()
        limiter = kernel.thread_limiter
        assert limiter is not None and limiter.borrowed_tokens == 2
        stuck.release.set()
        await settle(lambda: limiter.borrowed_tokens == 0)
        assert stuck.started == 2  # the ten that never got a thread never ran
        assert (await pipeline.run("hi")).answer == "late"


async def test_a_blocking_impl_that_ran_too_long_is_the_one_that_timed_out() -> None:
    """An impl that got its thread and overran is "timed out after N s" with the
    stage-timeout hint; the "no worker thread free" message is kept for calls that
    never ran."""
    async with isolated_kernel(worker_threads=2) as kernel:
        stuck = Stuck()
        pipeline = kernel.compose({"stuck": stuck}, timeout=0.05)
        with pytest.raises(HookError, match="timed out after 0.05 s") as err:
            await pipeline.run("hi")
        assert "raise [stage.generate] timeout or [pipeline] timeout" in err.value.hint
        stuck.release.set()
