"""Markdown pipe tables, and the column types inferred from cells."""

from __future__ import annotations

import pytest
from aieng_tables import cell_type, column_type, markdown_tables


def test_pipe_tables_are_found() -> None:
    """Header, delimiter row (with alignment colons) and body rows up to a blank line;
    outer pipes optional, cells trimmed, ``\\|`` a literal pipe."""
    text = ("Intro | not a table\n\n| a | b \\| c |\n|:---|--:|\n| 1 | `x` |\n|2|\n\n"
            "x | y\n--- | ---\nu | v\nafter\n")
    assert markdown_tables(text) == [
        [["a", "b | c"], ["1", "`x`"], ["2"]],
        [["x", "y"], ["u", "v"]]]


def test_only_markdown_line_endings_end_a_row() -> None:
    """Rows end at ``\n``, ``\r\n`` or ``\r`` (markdown's line endings); a line or
    paragraph separator, form feed or other character that ``str.splitlines`` breaks at
    stays inside its cell."""
    text = ("| a | b |\r\n|---|---|\r\n| x\u2028y | 2 |\r| p\x0cq | r\x1ds |\n"
            "| u\x85v | w\u2029z |")
    assert markdown_tables(text) == [
        [["a", "b"], ["x\u2028y", "2"], ["p\x0cq", "r\x1ds"], ["u\x85v", "w\u2029z"]]]


def test_tables_in_code_fences_are_skipped() -> None:
    """A table inside a ``` or ~~~ fence is code, not a table."""
    text = "```md\n| a | b |\n|---|---|\n| 1 | 2 |\n```\n~~~~\n|c|\n|-|\n~~~~\n|d|\n|-|\n|3|\n"
    assert markdown_tables(text) == [[["d"], ["3"]]]


def test_only_real_fences_hide_tables() -> None:
    """Fences follow CommonMark: a line starting with inline code (a backtick fence's info
    string holds no backtick) opens none, a fence with an info string closes none, and a
    tab-indented fence is indented code; the tables after them are found."""
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert markdown_tables("```pip install x``` installs it.\n\n" + table) == [
        [["a", "b"], ["1", "2"]]]
    assert markdown_tables("```\ncode\n```python\n|c|\n|-|\n```\n\n" + table) == [
        [["a", "b"], ["1", "2"]]]
    assert markdown_tables("\t```\n" + table) == [[["a", "b"], ["1", "2"]]]
    assert markdown_tables("~~~\n" + table + "~~~ \t\n|d|\n|-|\n") == [[["d"]]]


def test_a_mismatched_delimiter_row_is_no_table() -> None:
    """The delimiter row must have as many cells as the header."""
    assert markdown_tables("| a | b |\n|---|\n| 1 | 2 |\n") == []
    assert markdown_tables("Heading\n---\n") == []


@pytest.mark.parametrize(("cell", "kind"), [
    ("42", "integer"), (" -7 ", "integer"), ("+0", "integer"), ("3.14", "number"),
    ("1e-3", "number"), (".5", "number"), ("nan", "text"), ("inf", "text"),
    ("1,000", "text"), ("TRUE", "boolean"), ("false", "boolean"), ("yes", "text"),
    ("2024-02-29", "date"), ("2023-02-29", "text"), ("2024-01-05T10:30:00", "datetime"),
    ("2024-01-05 10:30+02:00", "datetime"), ("٣", "text"), ("hello", "text"),
])
def test_cell_types(cell: str, kind: str) -> None:
    """Each cell gets its narrowest type; only ASCII digits make numbers, only real dates
    make dates."""
    assert cell_type(cell) == kind


def test_column_types() -> None:
    """Integers and decimals make numbers, dates and datetimes make datetimes, other
    mixes make text; blank cells are ignored, and an all-blank column is empty."""
    assert column_type(["1", "", "2"]) == "integer"
    assert column_type(["1", "2.5"]) == "number"
    assert column_type(["2024-01-01", "2024-01-01T00:00"]) == "datetime"
    assert column_type(["1", "true"]) == "text"
    assert column_type(["", "  "]) == "empty"


@pytest.mark.parametrize("line", [
    " " * 200_000 + "x",
    "|-" + " " * 200_000 + "x",
    "-" + " " * 100_000 + "|" + " " * 100_000 + "x",
])
def test_a_long_blank_run_under_a_pipe_line(line: str) -> None:
    """A line of 200,000 blanks under a line holding a ``|`` (a ReDoS input: the
    delimiter-row pattern retried the run from each of its blanks, quadratic time:
    minutes for these lines) is no delimiter row, and the text has no table."""
    assert markdown_tables("| a |\n" + line + "\n| b |\n") == []
