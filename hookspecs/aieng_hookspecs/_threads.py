"""Work in worker threads: stopping when the caller left, and waking the event loop.

A ``@blocking`` impl (or any work a component hands to ``anyio.to_thread.run_sync``) runs
in a thread that nothing can stop from outside: when its caller's deadline passes (a
stage's timeout, the host's ``anyio.fail_after``), the thread runs on, holding whatever it
holds. Work done in steps (windows of a scan, batches, blocks of rows, polls of a lock)
calls :func:`stop_if_cancelled` between them and ends within one step. anyio is not a
dependency of this package: it is looked for only where the program imported it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

__all__ = ["loop_waker", "stop_if_cancelled"]


def stop_if_cancelled() -> None:
    """In an anyio worker thread whose caller was cancelled, raise the caller's
    cancellation (the thread then ends, and the caller's deadline takes effect); nothing
    elsewhere: a direct call, the event loop's own thread, a program without anyio."""
    anyio = sys.modules.get("anyio")
    if anyio is None:
        return
    try:
        anyio.from_thread.check_cancelled()
    except RuntimeError:  # not a worker thread of anyio's: no caller to have left
        return


def loop_waker() -> Callable[..., object] | None:
    """The running event loop's way to schedule a call from another thread without waiting
    for it (asyncio's ``call_soon_threadsafe``, trio's ``run_sync_soon``); ``None`` under
    another loop. Called in the loop's thread. ``anyio.from_thread.run_sync`` waits until
    the loop has run the call: a thread that must not wait for a loop (one stuck loop
    would hold up every other caller) posts through this instead."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        soon: Callable[..., object] = trio.lowlevel.current_trio_token().run_sync_soon
        return soon
    return None
