"""Steady state: what a long-running process keeps of each call it served.

A server, a chat loop or a batch job calls the same component millions of times in one
process. Whatever one call leaves behind (a trace, a per-key bucket, a cached automaton, a
mapping never released, a thread, a descriptor) adds up to an out-of-memory kill days
later, long after every test passed. :func:`measure_growth` (sync) and
:func:`ameasure_growth` (async) call a function ``warmup`` times, so that whatever is
bounded fills up (caches to their size, pools to their width, lazy imports), take a
snapshot, call it ``calls`` more times and report what the second stretch retained:

- **bytes** still allocated (``tracemalloc``, after a full collection) that were allocated
  during the measured calls, net of what they freed of the warm-up's, by source line;
- **file descriptors**, **threads** and **tasks** held after the calls and not before (the
  snapshots of the conformance suites' resource check).

A call's index is passed to the function, so each call can differ (a new API key, a new
user, a new document), which is how unbounded per-key state is found::

    growth = measure_growth(lambda i: limiter.admit(f"key-{i}"), warmup=200, calls=2_000)
    assert growth.per_call < 32, growth.report()

Reading the number: a retained dict entry, a list slot or a small object costs 50-200
bytes, so a per-call leak shows as tens of bytes per call or more; bounded noise (a dict
resized once, an interned string, allocator free lists) is a few kilobytes in all, which
many calls divide down. Give ``warmup`` more calls than any bounded cache the calls fill
holds (or configure the cache smaller for the test), and ``calls`` at least 1,000.
Tracing slows Python code about twofold while it runs; nothing is traced outside the
measurement unless tracing was on before (``PYTHONTRACEMALLOC``), and then it stays on.
"""

from __future__ import annotations

import fnmatch
import gc
import linecache
import os
import tracemalloc
from collections.abc import Awaitable, Callable

import attrs

from .conformance._resources import Resources, leaks, snapshot

__all__ = ["Growth", "ameasure_growth", "measure_growth"]

# Frames of the measurement itself; their allocations are not the component's.
_OWN_FILES = (tracemalloc.__file__, linecache.__file__, __file__)
# The snapshot filter matches file names with fnmatch, which compiles each pattern once
# (through ``re``) and keeps it: done here, untraced, or the first measurement's filter
# would count its own compiled patterns as the calls' growth.
for _path in _OWN_FILES:
    fnmatch.fnmatch(_path, _path)
_TOP = 10


@attrs.frozen
class Growth:
    """What ``calls`` calls retained, past a warm-up (see the module's documentation)."""

    calls: int
    #: net bytes allocated during the calls and alive after them.
    bytes: int
    #: the largest retaining source lines: ``"path:line: +N B in k blocks"``.
    top: tuple[str, ...]
    #: descriptors, threads and tasks held after the calls and not before them.
    held: tuple[str, ...]

    @property
    def per_call(self) -> float:
        """Retained bytes per measured call (negative when the calls freed more)."""
        return self.bytes / self.calls

    def report(self) -> str:
        """A message for a failed assertion: the totals and where the memory was allocated."""
        head = (f"{self.calls} calls retained {self.bytes:+,} B ({self.per_call:+.1f} B a "
                f"call) and {len(self.held)} resources")
        lines = [head]
        lines += [f"  {line}" for line in self.top]
        lines += [f"  held: {item}" for item in self.held]
        return "\n".join(lines)


def _check(warmup: int, calls: int) -> None:
    for name, value in (("warmup", warmup), ("calls", calls)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (name == "calls"):
            raise ValueError(f"{name} must be a whole number of calls (calls at least 1), "
                             f"got {value!r}")


def _settled() -> tracemalloc.Snapshot:
    gc.collect()
    gc.collect()  # what the first collection's finalizers released
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, path) for path in _OWN_FILES])


def _growth(calls: int, first: tracemalloc.Snapshot, second: tracemalloc.Snapshot,
            before: Resources, after: Resources) -> Growth:
    stats = second.compare_to(first, "lineno")
    total = sum(stat.size_diff for stat in stats)
    top = []
    for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:_TOP]:
        if stat.size_diff <= 0:
            break
        frame = stat.traceback[0]
        top.append(f"{_short(frame.filename)}:{frame.lineno}: +{stat.size_diff:,} B in "
                   f"{stat.count_diff:+,} blocks")
    return Growth(calls, total, tuple(top), tuple(leaks(before, after)))


def _short(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


class _Tracing:
    """Tracing on for the measurement; left as it was found."""

    def __enter__(self) -> None:
        self.started = not tracemalloc.is_tracing()
        if self.started:
            tracemalloc.start(1)

    def __exit__(self, *exc: object) -> None:
        if self.started:
            tracemalloc.stop()


def measure_growth(call: Callable[[int], object], *, warmup: int = 100,
                   calls: int = 1_000) -> Growth:
    """Call ``call(i)`` for ``i`` in ``range(warmup + calls)`` and report what the last
    ``calls`` of them retained (module documentation). For an async function use
    :func:`ameasure_growth`."""
    _check(warmup, calls)
    with _Tracing():
        for i in range(warmup):
            call(i)
        before = snapshot()
        first = _settled()
        for i in range(warmup, warmup + calls):
            call(i)
        second = _settled()
        after = snapshot()
    return _growth(calls, first, second, before, after)


async def ameasure_growth(call: Callable[[int], Awaitable[object]], *, warmup: int = 100,
                          calls: int = 1_000) -> Growth:
    """:func:`measure_growth` for an async function, awaited in the running event loop
    (its tasks are part of the resources compared)."""
    _check(warmup, calls)
    with _Tracing():
        for i in range(warmup):
            await call(i)
        before = snapshot()
        first = _settled()
        for i in range(warmup, warmup + calls):
            await call(i)
        second = _settled()
        after = snapshot()
    return _growth(calls, first, second, before, after)
