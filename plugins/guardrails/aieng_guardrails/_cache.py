"""The guards' memory of what they scanned: an agent runs the pipeline at each step on the
whole conversation so far, and its input guards would scan every earlier message again at
every step (quadratic in the run's length). A scan is a pure function of the text (and of
the guard's options, fixed for a component), so each guard keeps its last results, by a
digest of the text: the conversation's texts are not kept, only what was found in them.

A conversation longer than the per-text memory (a chat of 10,000 turns holds 20,000
texts) would evict its own oldest texts before they come back, at every step: each step
would scan the whole conversation again. So each guard also remembers, for the
conversations it saw last, the digest of all their texts and what was found in them (only
the texts with findings): the next step of a conversation, its texts so far followed by
new ones, scans the new ones only, however long it has grown."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["ScanCache"]

_T = TypeVar("_T")

#: A conversation remembered: how many texts, and those whose result is not the empty one
#: (index, result), with their characters.
_Prefix = tuple[int, tuple[tuple[int, object], ...], int]


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ScanCache(Generic[_T]):
    """``scan(text)``, remembered for the last ``size`` texts (least recently used first
    out) whose lengths add up to at most ``max_chars`` (a result, PII values included, may
    hold as much as its text; a longer text is scanned every time). Thread-safe: guards
    scan long texts in worker threads.

    :meth:`many` scans the texts of a conversation: the last ``conversations``
    conversations are remembered whole (see the module's documentation), each by the
    results that differ from ``empty``; together at most ``size`` such results of texts
    of at most ``max_chars`` characters (a conversation holding more is not remembered,
    and its texts are looked up one by one).

    :param scan: the scan, a pure function of the text; its results are shared between
        callers, so they must not be changed (tuples, frozen classes).
    :param size: the most results kept (a chat of 8,000 turns fits, by text).
    :param max_chars: the most characters of the texts whose results are kept.
    :param empty: what ``scan`` finds in a text with nothing in it (``None``: no
        conversation is remembered).
    :param conversations: the most conversations remembered whole.
    """

    def __init__(self, scan: Callable[[str], _T], *, size: int = 16_384,
                 max_chars: int = 16_000_000, empty: _T | None = None,
                 conversations: int = 1_024) -> None:
        self.scan = scan
        self.size = size
        self.max_chars = max_chars
        self.empty = empty
        self.conversations = conversations
        self._results: OrderedDict[bytes, tuple[_T, int]] = OrderedDict()
        self._chars = 0
        # digest of a conversation's texts -> what was found in them.
        self._prefixes: OrderedDict[bytes, _Prefix] = OrderedDict()
        self._lengths: Counter[int] = Counter()  # how many remembered, by text count
        self._found = 0  # results and characters the remembered conversations hold
        self._found_chars = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def __call__(self, text: str) -> _T:
        if len(text) > self.max_chars:
            return self.scan(text)
        key = _digest(text)
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

    def many(self, texts: Sequence[str]) -> list[_T]:
        """Each text's scan, in order. The texts that follow a conversation remembered (the
        texts of an earlier step of it) are the only ones looked up or scanned; the
        conversation is then remembered with them, in place of its earlier step."""
        if self.empty is None or len(texts) < 2:
            return [self(text) for text in texts]
        with self._lock:
            lengths = set(self._lengths)
        hasher = hashlib.blake2b(digest_size=16)
        candidates: list[bytes] = []  # digests of the prefixes as long as one remembered
        for count, text in enumerate(texts, start=1):
            data = text.encode("utf-8", "surrogatepass")
            hasher.update(len(data).to_bytes(8, "little"))
            hasher.update(data)
            if count in lengths:
                candidates.append(hasher.copy().digest())
        whole = hasher.digest()
        matched: bytes | None = None
        known: _Prefix = (0, (), 0)
        with self._lock:
            for digest in reversed(candidates):  # the longest first
                if (held := self._prefixes.get(digest)) is not None:
                    matched, known = digest, held
                    break
        start, found, chars = known
        results: list[_T] = [self.empty] * start
        for index, result in found:
            results[index] = result  # type: ignore[assignment]  # stored from a _T
        fresh = [(index, self(text)) for index, text in enumerate(texts[start:], start=start)]
        results.extend(result for _, result in fresh)
        added = tuple((index, result) for index, result in fresh if result != self.empty)
        found = found + added
        chars += sum(len(texts[index]) for index, _ in added)
        with self._lock:
            if matched is not None and matched != whole:
                self._forget(matched)  # the conversation moved on
            if whole in self._prefixes:
                self._prefixes.move_to_end(whole)
            elif len(found) <= self.size and chars <= self.max_chars:
                self._prefixes[whole] = (len(texts), found, chars)
                self._lengths[len(texts)] += 1
                self._found += len(found)
                self._found_chars += chars
            while self._prefixes and (len(self._prefixes) > self.conversations
                                      or self._found > self.size
                                      or self._found_chars > self.max_chars):
                self._forget(next(iter(self._prefixes)))
        return results

    def _forget(self, digest: bytes) -> None:
        """Drop a remembered conversation (under the lock)."""
        held = self._prefixes.pop(digest, None)
        if held is None:
            return
        count, found, chars = held
        self._lengths[count] -= 1
        if not self._lengths[count]:
            del self._lengths[count]
        self._found -= len(found)
        self._found_chars -= chars
