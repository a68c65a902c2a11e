"""Ragged rows, and the inputs spreadsheets and exports really produce: quoted line breaks,
semicolon dialects, a BOM, header-less tables."""

from __future__ import annotations

import csv
import io

from aieng_tables import read_tables, table_documents
from hypothesis import given, settings
from hypothesis import strategies as st


def test_one_very_wide_row_does_not_widen_the_table() -> None:
    """One row of 4,000 cells among rows of 3 keeps its cells in its own document; the
    other rows are not padded to its width, and neither the schema nor any row's metadata
    lists 3,997 columns no other row has (that took seconds and 160 MB for 5,000 rows)."""
    lines = ["a,b,c", *(["1,2,3"] * 2000)]
    lines[1000] = ",".join(f"x{n}" for n in range(4000))
    (table,) = read_tables("\n".join(lines), name="t")
    assert table.columns == ("a", "b", "c")
    assert table.ragged_rows == 1
    assert {len(row) for n, row in enumerate(table.rows, start=1) if n != 1000} == {3}
    assert table.rows[999] == tuple(f"x{n}" for n in range(4000))
    schema, *rows = table_documents("\n".join(lines), name="t")
    assert schema.metadata["columns"] == ["a", "b", "c"]
    assert schema.metadata["types"] == {"a": "text", "b": "text", "c": "text"}
    assert schema.text.count("\n- ") == 3 and len(schema.text) < 400
    assert all(row.metadata["columns"] == ["a", "b", "c"] for row in rows)
    wide = rows[999].text.split("\n")
    assert wide[:4] == ["a: x0", "b: x1", "c: x2", "column_4: x3"]
    assert wide[-1] == "column_4000: x3999" and len(wide) == 4000
    assert rows[0].text == "a: 1\nb: 2\nc: 3"


def test_cells_beyond_the_header_are_named_in_their_row() -> None:
    """A cell past the header is named ``column_N`` in its row's text, made unique against
    the header's names (a header may itself say ``column_3``); short rows are padded to
    the header's width; the schema says where the extra cells went."""
    (table,) = read_tables("a,column_3\n1,2,3,4\n5\n", name="t")
    assert table.columns == ("a", "column_3")
    assert table.rows == (("1", "2", "3", "4"), ("5", ""))
    schema, first, second = table_documents("a,column_3\n1,2,3,4\n5\n", name="t")
    assert first.text == "a: 1\ncolumn_3: 2\ncolumn_3_2: 3\ncolumn_4: 4"
    assert second.text == "a: 5"
    assert "2 row(s) had more or fewer cells than the header" in schema.text
    assert "cells beyond it are kept in their rows as column_N" in schema.text
    assert schema.metadata["ragged_rows"] == 2
    short_only = table_documents("a,b\n1\n", name="t")[0].text
    assert "fewer cells" in short_only and "beyond" not in short_only


def test_quoted_line_breaks_semicolons_and_a_bom() -> None:
    """An export from a European spreadsheet: a BOM, ``;`` between fields, decimal commas,
    ``\\r\\n`` line ends and a quoted cell holding a line break read as written."""
    data = ('\ufeffName;Preis;Notiz\r\n"Müller; A.";2,50;"erste\r\nzweite"\r\n'
            "Öz;3,75;\r\n").encode()
    schema, first, second = table_documents(data, name="preise")
    assert schema.metadata["columns"] == ["Name", "Preis", "Notiz"]
    assert first.text == "Name: Müller; A.\nPreis: 2,50\nNotiz: erste\n  zweite"
    assert second.text == "Name: Öz\nPreis: 3,75"


def test_a_table_without_a_header_uses_its_first_row() -> None:
    """There is no way to tell a header from data: the first non-blank record names the
    columns (as documented), and a numeric "header" is still a name."""
    schema, row = table_documents("1,2\n3,4\n", name="t")
    assert schema.metadata["columns"] == ["1", "2"] and row.text == "1: 3\n2: 4"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.text(st.sampled_from(list('ab ;,"\n\r')), max_size=4),
                         min_size=1, max_size=6), min_size=1, max_size=8))
def test_every_non_blank_cell_reaches_its_row(rows: list[list[str]]) -> None:
    """Whatever the raggedness, each row's document holds one line per non-blank cell, in
    order, and every table row has at least the header's width."""
    out = io.StringIO()
    csv.writer(out).writerows([["h1", "h2", "h3"], *rows])
    (table,) = read_tables(out.getvalue(), name="t", delimiter=",")
    kept = [row for row in rows if any(cell.strip() for cell in row)]
    assert [list(row[: len(cells)]) for row, cells in zip(table.rows, kept)] == kept
    assert all(len(row) == max(3, len(cells)) for row, cells in zip(table.rows, kept))
    documents = table_documents(out.getvalue(), name="t", delimiter=",")[1:]
    for document, cells in zip(documents, kept, strict=True):
        lines = [line for line in document.text.split("\n") if not line.startswith("  ")]
        assert len(lines) == sum(1 for cell in cells if cell.strip())
