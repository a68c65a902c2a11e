"""Worker threads for ``@blocking`` impls, bounded even when abandoned.

``anyio.to_thread.run_sync(..., abandon_on_cancel=True)`` gives its limiter's token back as
soon as the caller stops waiting, while the thread runs on: impls that time out again and
again would pile up threads past any bound. Here the token is held until the thread itself
ends, so ``worker_threads`` bounds the threads that run, abandoned ones included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
from aieng_hookspecs import loop_waker

__all__ = ["NO_THREAD_HINT", "Running", "Slot", "run_in_worker"]

#: The hint of a ``@blocking`` call whose deadline passed before any thread was free.
NO_THREAD_HINT = ("every worker thread is held by @blocking impls still running (timed-out "
                  "ones run on to their end): raise the kernel's worker_threads, or find the "
                  "impl that hangs (its hook.failed timeouts)")


class Slot:
    """Whether a call is still waiting for a worker thread (a deadline that passes then
    did not find the impl slow: every thread was taken)."""

    waiting = True


class Running:
    """The worker threads of one pipeline's calls still running, those whose caller left
    (a deadline, a timeout) included: closing the pipeline waits for them, so that no
    component is closed under a thread still using it. Counted on the event loop."""

    def __init__(self) -> None:
        #: label -> threads of it still running
        self.labels: dict[str, int] = {}
        self._idle: anyio.Event | None = None

    def __len__(self) -> int:
        return sum(self.labels.values())

    def started(self, label: str) -> None:
        self.labels[label] = self.labels.get(label, 0) + 1

    def ended(self, label: str) -> None:
        left = self.labels[label] - 1
        if left:
            self.labels[label] = left
        else:
            del self.labels[label]
        if not self.labels and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        """Wait until no thread is running."""
        while self.labels:
            self._idle = anyio.Event()
            await self._idle.wait()


async def run_in_worker(call: Callable[[], Any],
                        limiter: anyio.CapacityLimiter | None = None,
                        slot: Slot | None = None, running: Running | None = None,
                        label: str = "") -> Any:
    """Run ``call`` in a worker thread, holding a token of ``limiter`` (anyio's default
    limiter when ``None``) until the thread ends; cancelling the caller abandons the
    thread, whose token is given back from the thread's end through the event loop.
    A call that works in steps ends its abandoned thread early by calling
    ``anyio.from_thread.check_cancelled()`` between them.

    :param slot: told when the call got its thread (``slot.waiting`` turns false).
    :param running: counts the call under ``label`` from its token to the thread's end.
    """
    if limiter is None:
        limiter = anyio.to_thread.current_default_thread_limiter()
    borrower = object()
    await limiter.acquire_on_behalf_of(borrower)
    if running is not None:
        running.started(label)
    if slot is not None:
        slot.waiting = False
    soon = loop_waker()
    lock = threading.Lock()
    # pending -> running -> ended, or pending -> given up (the call never starts), or
    # running -> abandoned (the caller left; the thread gives the token back at its end).
    state = "pending"

    def release() -> None:
        limiter.release_on_behalf_of(borrower)
        if running is not None:
            running.ended(label)

    def work() -> list[Any]:
        nonlocal state
        with lock:
            if state == "given up":  # the caller left before the thread took the call
                return [None]
            state = "running"
        try:
            # Boxed: trio refuses a coroutine returned from a thread ("expected a sync
            # function"), and an impl may return one for the part that awaits.
            return [call()]
        finally:
            with lock:
                late, state = state == "abandoned", "ended"
            if late:
                try:
                    soon(release)  # type: ignore[misc]
                except RuntimeError:  # the loop has closed: nobody waits for the token
                    pass

    try:
        # The token above bounds the threads; this limiter only satisfies run_sync's.
        boxed = await anyio.to_thread.run_sync(work, limiter=anyio.CapacityLimiter(1),
                                               abandon_on_cancel=True)
        return boxed[0]
    finally:
        with lock:
            if state == "pending":
                state = "given up"
            elif state == "running" and soon is not None:
                state = "abandoned"
            now = state != "abandoned"
        if now:
            release()
