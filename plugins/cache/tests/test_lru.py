"""The in-process LRU: a hypothesis state machine against an OrderedDict model."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
from aieng_cache import LRU
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

KEYS = st.sampled_from([f"k{i}" for i in range(8)])


class LRUMachine(RuleBasedStateMachine):
    """Random puts, gets, deletes and clock moves agree with a reference model: an
    OrderedDict evicting its oldest entries until both bounds hold."""

    def __init__(self) -> None:
        super().__init__()
        self.max_entries, self.max_bytes = 4, 40
        self.lru: LRU[str] = LRU(self.max_entries, self.max_bytes)
        self.model: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        self.now = 0.0

    def _model_evict(self) -> None:
        while (len(self.model) > self.max_entries
               or sum(s for _, s, _ in self.model.values()) > self.max_bytes):
            self.model.popitem(last=False)

    @rule(key=KEYS, value=st.text(max_size=3), size=st.integers(0, 50),
          ttl=st.one_of(st.just(math.inf), st.floats(0.5, 10)))
    def put(self, key: str, value: str, size: int, ttl: float) -> None:
        stored = self.lru.put(key, value, size, self.now + ttl)
        self.model.pop(key, None)
        assert stored == (size <= self.max_bytes)
        if stored:
            self.model[key] = (value, size, self.now + ttl)
            self._model_evict()

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        found = self.lru.get(key, self.now)
        expected = self.model.get(key)
        if expected is not None and expected[2] <= self.now:
            del self.model[key]
            expected = None
        if expected is None:
            assert found is None
        else:
            assert found is not None and found.value == expected[0]
            assert found.expires_at == expected[2]
            self.model.move_to_end(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.lru.delete(key) == (self.model.pop(key, None) is not None)

    @rule(seconds=st.floats(0, 5))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def purge(self) -> None:
        dead = [k for k, (_, _, exp) in self.model.items() if exp <= self.now]
        for key in dead:
            del self.model[key]
        assert self.lru.purge(self.now) == len(dead)

    @invariant()
    def same_entries_in_same_order(self) -> None:
        assert self.lru.keys() == list(self.model)
        assert self.lru.nbytes == sum(s for _, s, _ in self.model.values())
        assert len(self.lru) <= self.max_entries and self.lru.nbytes <= self.max_bytes


TestLRUMachine = LRUMachine.TestCase
TestLRUMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_count_bound_evicts_least_recent() -> None:
    """Past max_entries the least recently *used* entry goes, not the oldest stored."""
    lru: LRU[int] = LRU(max_entries=2, max_bytes=1000)
    lru.put("a", 1, 1)
    lru.put("b", 2, 1)
    assert lru.get("a", 0.0) is not None  # a is now the most recent
    lru.put("c", 3, 1)
    assert lru.keys() == ["a", "c"] and lru.evictions == 1


def test_byte_bound_evicts_until_it_fits() -> None:
    """A large entry evicts as many old ones as its bytes need; one over the bound alone
    is refused and leaves the rest untouched."""
    lru: LRU[int] = LRU(max_entries=100, max_bytes=10)
    for i in range(5):
        lru.put(f"k{i}", i, 2)
    lru.put("big", 9, 7)
    assert lru.keys() == ["k4", "big"] and lru.nbytes == 9
    assert lru.put("huge", 0, 11) is False
    assert lru.keys() == ["k4", "big"]


def test_bad_bounds_are_refused() -> None:
    """Bounds below 1 are errors naming both values."""
    with pytest.raises(ValueError, match="max_entries and max_bytes"):
        LRU(0, 10)
