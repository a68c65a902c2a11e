"""Deadlines in worker threads: a long scan stops at its next window once its caller left.

Guards scan long texts in a worker thread (``_guards._off_loop``). A thread cannot be
stopped from outside, and anyio's ``to_thread.run_sync`` waits for it, shielded: a host's
``anyio.fail_after`` (or a stage's timeout) around a guard used to wait for the whole scan,
seconds for a text of a few megabytes, and then got the verdict as if no deadline had
passed. The scans are windowed, so they call :func:`checkpoint` between windows (and
between the texts and decoded layers they scan): the cancellation is raised there, the
thread ends, and the caller's deadline takes effect within one window's work.
"""

from __future__ import annotations

from anyio.from_thread import check_cancelled

__all__ = ["checkpoint"]


def checkpoint() -> None:
    """Raise the cancellation of the task waiting for this worker thread, if its cancel
    scope was cancelled; a no-op outside anyio's worker threads (a direct call, or a short
    text scanned on the event loop)."""
    try:
        check_cancelled()
    except RuntimeError:  # anyio.NoEventLoopError: no task waits for this thread
        return
