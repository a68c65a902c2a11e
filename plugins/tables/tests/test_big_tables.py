"""Large tables: the schema document's examples cost what they show, not the column.

Growth is shown by memory counts (``tracemalloc``), never by timings.
"""

from __future__ import annotations

import tracemalloc

from aieng_tables import Table, read_tables
from aieng_tables._documents import _clip, _schema_text
from hypothesis import given
from hypothesis import strategies as st


def test_schema_examples_do_not_copy_the_column() -> None:
    """The schema shows three example values per column: finding them no longer keeps a
    whitespace-normalised copy of every distinct cell of the column (a table of 1M rows
    of 1 kB notes held another GB while its schema was written)."""
    rows, width = 2_000, 2_000  # a 4 MB column of distinct cells, each with line breaks
    text = "id,notes\n" + "".join(f'{i},"note {i}\n{"w " * (width // 2)}"\n'
                                  for i in range(rows))
    table = read_tables(text, name="t")[0]
    types = table.types()
    tracemalloc.start()
    try:
        schema = _schema_text(table, types)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert '- notes: text; e.g. "note 0 w w w' in schema
    assert schema.count("\u2026") == 3  # three examples, clipped
    assert peak < rows * width // 10, peak  # before: the whole column again (> 4 MB)


@given(st.lists(st.text(alphabet=" \t\n\u3000ab", max_size=5), max_size=12))
def test_schema_examples_and_blanks_are_what_they_were(cells: list[str]) -> None:
    """The one-pass count of blanks and choice of examples give the schema line the
    former list-and-dict code gave (the first three distinct normalised values)."""
    table = Table(name="t", columns=("c",), rows=tuple((cell,) for cell in cells))
    types = table.types()
    stripped = [cell.strip() for cell in cells]
    blank = sum(1 for cell in stripped if not cell)
    examples = list(dict.fromkeys(" ".join(c.split()) for c in stripped if c))[:3]
    quote = '"' if types["c"] == "text" else ""
    shown = ", ".join(f"{quote}{_clip(example)}{quote}" for example in examples)
    line = (f"- c: {types['c']}" + (f", {blank} blank" if blank else "")
            + (f"; e.g. {shown}" if shown else ""))
    assert _schema_text(table, types).splitlines()[-1] == line
