"""Finding the pipe tables of markdown text (GitHub Flavored Markdown's table extension)."""

from __future__ import annotations

import re

__all__ = ["markdown_tables"]

# The delimiter row under the header: cells of dashes, optionally with alignment colons.
# Possessive throughout: two blank runs side by side (around an absent ``|``) were retried
# against each other, quadratic in a long blank line.
_DELIMITER_ROW = re.compile(r"\s*+\|?\s*+:?-++:?\s*+(?:\|\s*+:?-++:?\s*+)*+\|?\s*+")
_PIPE = re.compile(r"(?<!\\)\|")
# A fence (CommonMark): 3 or more '`' or '~' after at most 3 spaces (a tab makes indented
# code); a backtick fence's info string holds no backtick, else the line is inline code.
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
# A closing fence: nothing after it but spaces and tabs (an info string makes it text).
_CLOSING_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
# Markdown's line endings only: str.splitlines would also break a row at a form feed, a
# line or paragraph separator or NEL inside a cell.
_LINE_END = re.compile(r"\r\n|\r|\n")


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The pipe tables of markdown text, in order, each as its rows of cells (the header
    row first, the delimiter row left out). Tables inside code fences are skipped.

    A table is a line holding a ``|``, then a delimiter row (``| --- | :-: |``) with as many
    cells, then the body rows: the following lines that hold a ``|``, up to a blank line
    or a line without one. Cells are trimmed and ``\\|`` is a literal ``|``.
    """
    lines = _LINE_END.split(text)
    tables: list[list[list[str]]] = []
    fence: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if fence is not None:
            closing = _CLOSING_FENCE.fullmatch(line)
            if closing and closing[1][0] == fence[0] and len(closing[1]) >= len(fence):
                fence = None
            index += 1
            continue
        opened = _FENCE.fullmatch(line)
        if opened and not (opened[1][0] == "`" and "`" in opened[2]):
            fence = opened.group(1)
            index += 1
            continue
        if ("|" in line and index + 1 < len(lines)
                and _DELIMITER_ROW.fullmatch(lines[index + 1])
                and "-" in lines[index + 1]):
            header = _cells(line)
            if len(header) == len(_cells(lines[index + 1])):
                rows = [header]
                index += 2
                while index < len(lines) and "|" in lines[index] and lines[index].strip():
                    rows.append(_cells(lines[index]))
                    index += 1
                tables.append(rows)
                continue
        index += 1
    return tables


def _cells(line: str) -> list[str]:
    row = line.strip()
    row = row.removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _PIPE.split(row)]
