"""Sorted strings searched by prefix: the JSON automaton's keys and enum values.

Every character of a key or an ``enum`` value asks which of the schema's strings still
start with the text so far, and the first-character mask asks it once per distinct first
character of the vocabulary (452 for SmolLM2) at each new state. A scan of all of them
made that O(values) per question: an ``enum`` of 10,000 values cost ~0.7 s a token
(integers ~4 s), 500 properties ~0.2 s. Sorted, the strings starting with a prefix are
one run found by two bisections.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator

__all__ = ["Prefixes"]


class Prefixes:
    """Distinct strings, sorted.

    :param strings: the strings (repeats are dropped).
    """

    __slots__ = ("_heads", "strings")

    def __init__(self, strings: Iterable[str]) -> None:
        #: The strings in ascending order.
        self.strings: tuple[str, ...] = tuple(sorted(set(strings)))
        self._heads: frozenset[str] | None = None

    @property
    def heads(self) -> frozenset[str]:
        """The first characters of the (non-empty) strings."""
        if self._heads is None:
            self._heads = frozenset(s[0] for s in self.strings if s)
        return self._heads

    def span(self, prefix: str) -> tuple[int, int]:
        """The indices ``lo, hi`` of the run of :attr:`strings` that start with ``prefix``
        (cutting each string to the prefix's length keeps the order, so the run is where
        the cut equals it)."""
        size = len(prefix)
        low = bisect_left(self.strings, prefix)
        return low, bisect_right(self.strings, prefix, lo=low, key=lambda s: s[:size])

    def starting(self, prefix: str) -> Iterator[str]:
        """The strings that start with ``prefix``, in ascending order."""
        low, high = self.span(prefix)
        strings = self.strings
        return (strings[i] for i in range(low, high))

    def any_starting(self, prefix: str, excluded: Collection[str] = ()) -> bool:
        """Whether a string not in ``excluded`` starts with ``prefix`` (a run longer than
        ``excluded`` holds one without looking)."""
        low, high = self.span(prefix)
        if high - low > len(excluded):
            return True
        return any(self.strings[i] not in excluded for i in range(low, high))

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        at = bisect_left(self.strings, text)
        return at < len(self.strings) and self.strings[at] == text

    def __len__(self) -> int:
        return len(self.strings)
