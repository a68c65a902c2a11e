"""Untrusted table files: a cell crafted against the type patterns must not hang a read."""

from __future__ import annotations

import re

import pytest
from aieng_tables import cell_type, table_documents
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.testing import hang_guard

# The number pattern before it was made possessive: the reference for what a number is.
_OLD_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@pytest.mark.parametrize("cell", [
    "1" * 200_000 + "x",
    "1" * 100_000 + "." + "1" * 100_000 + "x",
    "1" * 100_000 + "e" + "1" * 100_000 + "x",
])
def test_a_long_cell_of_digits_is_typed_in_one_pass(cell: str) -> None:
    """A 200,000-digit cell ending in a letter (a ReDoS input: the number pattern split
    the run between ``[0-9]+`` and ``[0-9]*`` in every way, quadratic time: minutes for
    this cell, and a table file of such cells hung ``aieng index``) is text, found in one
    pass."""
    with hang_guard():
        assert cell_type(cell) == "text"
        documents = table_documents(f"a,b\n{cell},2\n", name="t")
    assert documents[0].metadata["types"] == {"a": "text", "b": "integer"}


@given(st.text(alphabet="0123456789.eE+-x ", max_size=30))
def test_numbers_are_what_they_were(cell: str) -> None:
    """The possessive number pattern accepts exactly what the backtracking one did."""
    stripped = cell.strip()
    expected = bool(_OLD_NUMBER.fullmatch(stripped)) and cell_type(cell) != "integer"
    assert (cell_type(cell) == "number") == expected
