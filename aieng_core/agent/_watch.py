"""Online loop and stall detection over an agent's steps."""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Sequence

from aieng_hookspecs.types import ToolCall, ToolResult

__all__ = ["LoopWatch", "StallWatch", "signature"]


def signature(call: ToolCall) -> str:
    """A tool call's identity for loop detection: its name and canonical JSON arguments
    (sorted keys, no whitespace), so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` match."""
    arguments = json.dumps(call.arguments, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return f"{call.name}({arguments})"


class LoopWatch:
    """Counts tool calls over the last ``window`` steps.

    :meth:`check` says whether a step's calls repeat one call ``repeats`` times within the
    window. The runner notes the first repetition to the model and stops at the next.
    """

    def __init__(self, repeats: int, window: int) -> None:
        self.repeats = repeats
        self._steps: deque[tuple[str, ...]] = deque(maxlen=window)
        self.warned = False

    def check(self, calls: Sequence[ToolCall]) -> str | None:
        """Record a step's calls; the signature of a call repeated ``repeats`` times within
        the window (this step included), or ``None``."""
        mine = tuple(signature(call) for call in calls)
        self._steps.append(mine)
        if not mine:
            return None
        counts = Counter(s for step in self._steps for s in step)
        for sig in mine:  # a call of this step: an old repetition the model left is no loop
            if counts[sig] >= self.repeats:
                return sig
        return None

    def forget(self) -> None:
        """Drop the last recorded step (one whose calls did not run)."""
        if self._steps:
            self._steps.pop()


class StallWatch:
    """Counts consecutive tool steps that made no progress: every result an error, or no
    observation text that was not seen before in the run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.run = 0
        self._seen: set[str] = set()

    def check(self, results: Sequence[ToolResult]) -> bool:
        """Record a tool step's results; whether ``limit`` steps in a row made no progress."""
        fresh = {r.content.strip() for r in results if not r.is_error} - self._seen
        self._seen.update(r.content.strip() for r in results)
        failed = bool(results) and all(r.is_error for r in results)
        self.run = self.run + 1 if failed or not fresh else 0
        return self.run >= self.limit
