"""The guards' memory of what they scanned: an agent runs the pipeline at each step on the
whole conversation so far, and its input guards would scan every earlier message again at
every step (quadratic in the run's length). A scan is a pure function of the text (and of
the guard's options, fixed for a component), so each guard keeps its last results, by a
digest of the text: the conversation's texts are not kept, only what was found in them."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ScanCache"]

_T = TypeVar("_T")


class ScanCache(Generic[_T]):
    """``scan(text)``, remembered for the last ``size`` texts (least recently used first
    out) whose lengths add up to at most ``max_chars`` (a result, PII values included, may
    hold as much as its text; a longer text is scanned every time). Thread-safe: guards
    scan long texts in worker threads.

    :param scan: the scan, a pure function of the text; its results are shared between
        callers, so they must not be changed (tuples, frozen classes).
    :param size: the most results kept (a chat of 10,000 turns fits).
    :param max_chars: the most characters of the texts whose results are kept.
    """

    def __init__(self, scan: Callable[[str], _T], *, size: int = 16_384,
                 max_chars: int = 16_000_000) -> None:
        self.scan = scan
        self.size = size
        self.max_chars = max_chars
        self._results: OrderedDict[bytes, tuple[_T, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def __call__(self, text: str) -> _T:
        if len(text) > self.max_chars:
            return self.scan(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key][0]
        found = self.scan(text)  # outside the lock: other threads scan their own texts
        with self._lock:
            if key not in self._results:  # (another thread may have scanned it meanwhile)
                self._results[key] = (found, len(text))
                self._chars += len(text)
            while len(self._results) > self.size or self._chars > self.max_chars:
                self._chars -= self._results.popitem(last=False)[1][1]
        return found
