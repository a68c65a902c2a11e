"""The big day for the agent runner: long arrays in tool arguments, long runs, many tools.

Growth is shown by counts (comparisons made, texts scanned), never by timings."""

from __future__ import annotations

import math
from typing import Any

import pytest

from aieng_core.agent import _arguments
from aieng_core.agent._arguments import argument_errors

UNIQUE = {"type": "object", "properties": {"ids": {"type": "array", "uniqueItems": True}}}


def _comparisons(monkeypatch: pytest.MonkeyPatch, items: list[Any]) -> tuple[list[str], int]:
    """The errors of ``{"ids": items}`` under :data:`UNIQUE`, and how many pairwise
    equality checks they took."""
    calls = 0
    equal = _arguments._equal

    def counted(a: Any, b: Any) -> bool:
        nonlocal calls
        calls += 1
        return equal(a, b)

    monkeypatch.setattr(_arguments, "_equal", counted)
    return argument_errors({"ids": items}, UNIQUE), calls


def test_unique_items_of_a_long_array_are_checked_in_linear_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``uniqueItems`` on an array of n distinct items compared each item with every item
    before it (n²/2 checks: 2M for 2,000 ids); it now takes a number of checks that grows
    at most linearly, and still finds the first repeat, at the end."""
    small, n_small = _comparisons(monkeypatch, list(range(500)))
    large, n_large = _comparisons(monkeypatch, list(range(2000)))
    assert small == large == []
    assert n_large <= 4 * max(n_small, 500)
    errors, _ = _comparisons(monkeypatch, [*range(2000), 1999.0])
    assert errors == ["$.ids: items must be unique; 1999.0 repeats"]


@pytest.mark.parametrize(("items", "repeat"), [
    ([1, 1.0], "1.0"),  # JSON numbers: 1 == 1.0
    ([True, 1, False, 0, None], None),  # a boolean is not a number, null is neither
    ([math.nan, math.nan], None),  # NaN equals nothing, itself included
    ([math.inf, math.inf], "Infinity"),
    ([10**400, 10**400, 1e308], "1" + "0" * 38 + "…"),  # past a float
    ([{"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1}], '{"b": [1.0, 2], "a": 1}'),
    ([{"a": 1}, {"a": True}, {"a": "1"}], None),
    ([[1, [2]], (1, (2,))], "[1, [2]]"),  # a tuple is an array too
    ([[1, 2], [2, 1]], None),  # arrays in order
    (["a", "A", "a\u0301", "\u00e1"], None),  # strings as written
    ([{1, 2}, {1, 2}], '"{1, 2}"'),  # no JSON type, unhashable: compared pairwise
])
def test_unique_items_follow_json_equality(items: list[Any], repeat: str | None) -> None:
    """The one-pass check calls equal exactly what the pairwise one did."""
    errors = argument_errors({"ids": items}, UNIQUE)
    if repeat is None:
        assert errors == []
    else:
        assert errors == [f"$.ids: items must be unique; {repeat} repeats"]
