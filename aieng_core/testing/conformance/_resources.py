"""What a component opens it gives back: file descriptors, threads and tasks, after close.

A snapshot (:func:`snapshot`) is taken before the component is built and another after its
pipeline closed; what the second has and the first has not is a leak. File descriptors are
read from ``/proc/self/fd`` (Linux), tasks from ``asyncio.all_tasks`` under asyncio and from
trio's task tree under trio (both of anyio's backends); where either cannot be seen,
:attr:`Resources.unobserved` says why.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

import anyio
import attrs

__all__ = ["Resources", "leaks", "open_files", "released", "snapshot"]

_FD_DIR = "/proc/self/fd"
# Threads of the event loop's own pools, shared by every caller and kept idle for a while
# after their last job: the kernel runs @blocking impls in anyio's (under trio, trio's
# thread cache: "Trio thread N" while idle), and ``loop.run_in_executor(None, ...)`` uses
# asyncio's default executor.
_POOL_THREAD_PREFIXES = ("AnyIO worker thread", "asyncio_", "Trio thread ")


@attrs.frozen
class Resources:
    """The process's open file descriptors, live threads and the loop's tasks, at a moment."""

    #: descriptor -> what it refers to (``readlink``); ``None`` when it cannot be seen.
    fds: Mapping[int, str] | None
    threads: frozenset[threading.Thread]
    #: the loop's tasks (``asyncio.Task`` or ``trio.lowlevel.Task`` objects); ``None`` when
    #: they cannot be seen.
    tasks: frozenset[Any] | None
    #: what this snapshot could not see, and why.
    unobserved: tuple[str, ...] = ()


def _fds() -> dict[int, str] | None:
    if not sys.platform.startswith("linux") or not os.path.isdir(_FD_DIR):
        return None
    fds: dict[int, str] = {}
    for entry in os.listdir(_FD_DIR):
        try:
            fds[int(entry)] = os.readlink(f"{_FD_DIR}/{entry}")
        except OSError:  # closed since the listing (the listing's own descriptor)
            continue
    return fds


def open_files() -> list[str]:
    """What the process's open file descriptors refer to (``readlink`` of each, one entry
    per descriptor: a file opened twice is listed twice); empty where they cannot be seen
    (not Linux). For tests of what a component leaves open."""
    return sorted((_fds() or {}).values())


def _tasks() -> frozenset[Any] | None:
    try:
        current = asyncio.current_task()
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no asyncio loop runs in this thread (trio, or no loop at all)
        return _trio_tasks()
    return frozenset(t for t in tasks if t is not current and not t.done()
                     and not _of_test_runner(t))


def _trio_tasks() -> frozenset[Any] | None:
    """Every live task of the trio run of this thread but the current one (trio keeps them
    in a tree: a task's nurseries hold its children); ``None`` outside a trio run."""
    trio = sys.modules.get("trio")  # a trio run has imported it; never imported here
    if trio is None or not trio.lowlevel.in_trio_task():
        return None
    current = trio.lowlevel.current_task()
    found: set[Any] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is not current:
            found.add(task)
        stack += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return frozenset(found)


def _of_test_runner(task: asyncio.Task[Any]) -> bool:
    """Whether the task is one of anyio's pytest runner (each fixture and test is awaited
    in a task of its own)."""
    return getattr(task.get_coro(), "__qualname__", "").startswith("TestRunner.")


def snapshot() -> Resources:
    """What the process holds now (call it inside the event loop to see its tasks)."""
    fds, tasks = _fds(), _tasks()
    unobserved = []
    if fds is None:
        unobserved.append(f"file descriptors (no {_FD_DIR} on {sys.platform})")
    if tasks is None:
        unobserved.append("tasks (no asyncio or trio loop runs in this thread)")
    threads = frozenset(t for t in threading.enumerate() if t.is_alive())
    return Resources(fds, threads, tasks, tuple(unobserved))


def _thread(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    runs = f" running {getattr(target, '__qualname__', target)!s}" if target else ""
    return f"thread {thread.name!r} ({type(thread).__name__}{runs})"


def _live(task: Any) -> bool:
    """Whether a task still runs (a trio task is in the tree only while it runs)."""
    return not task.done() if isinstance(task, asyncio.Task) else True


def _task(task: Any) -> str:
    if isinstance(task, asyncio.Task):
        coro, name = task.get_coro(), task.get_name()
    else:  # trio's
        coro, name = task.coro, task.name
    return f"task {name!r} ({getattr(coro, '__qualname__', type(coro).__name__)})"


def leaks(before: Resources, after: Resources) -> list[str]:
    """What ``after`` holds that ``before`` did not, described (empty: nothing leaked)."""
    found: list[str] = []
    if before.fds is not None and after.fds is not None:
        found += [f"file descriptor {fd} -> {target}" for fd, target in sorted(after.fds.items())
                  if before.fds.get(fd) != target]
    found += [_thread(t) for t in sorted(after.threads - before.threads, key=lambda t: t.name)
              if t.is_alive() and not t.name.startswith(_POOL_THREAD_PREFIXES)]
    if before.tasks is not None and after.tasks is not None:
        found += sorted(_task(t) for t in after.tasks - before.tasks if _live(t))
    return found


async def released(before: Resources, *, grace: float = 2.0) -> list[str]:
    """What is still held, of what was not held at ``before``, once ``grace`` seconds passed
    (returns as soon as nothing is: a thread told to stop, a socket's peer closing, a task
    being cancelled get the time to end). Unreachable objects are collected first: a file
    object nobody references is closed by the collector, and is no leak.
    """
    gc.collect()
    with anyio.move_on_after(grace):
        while leaks(before, snapshot()):
            await anyio.sleep(0.01)
    gc.collect()
    return leaks(before, snapshot())
