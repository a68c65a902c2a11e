"""Tables as documents: a schema document, one per row, from files, bytes or text."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from aieng_hookspecs.types import Document
from aieng_tables import Format, TableError, read_tables, table_documents
from hypothesis import given, settings
from hypothesis import strategies as st

PEOPLE = ('name,age,joined,notes\n"Smith, J",42,2024-01-05,"said ""hi""\nthen left"\n'
          "Doe,,2023-12-31,\n\n,,,\nRoe,7,2024-02-01,late,extra\n")


def test_rows_and_schema() -> None:
    """A schema document comes first, then one document per non-blank row with its
    non-blank cells as ``column: value`` lines and the table in its metadata."""
    schema, *rows = table_documents(PEOPLE, name="people")
    assert schema == Document(
        id="people#schema", title="people (table schema)",
        text=("Table people: 3 rows, 4 columns.\n"
              "1 row(s) had more or fewer cells than the header; cells beyond it are kept "
              "in their rows as column_N.\n"
              "Columns:\n"
              '- name: text; e.g. "Smith, J", "Doe", "Roe"\n'
              "- age: integer, 1 blank; e.g. 42, 7\n"
              "- joined: date; e.g. 2024-01-05, 2023-12-31, 2024-02-01\n"
              '- notes: text, 1 blank; e.g. "said "hi" then left", "late"'),
        metadata={"table": "people", "columns": ["name", "age", "joined", "notes"],
                  "kind": "table-schema", "rows": 3, "ragged_rows": 1,
                  "types": {"name": "text", "age": "integer", "joined": "date",
                            "notes": "text"}})
    assert [d.id for d in rows] == ["people#row-1", "people#row-2", "people#row-3"]
    assert rows[0].title == "people, row 1"
    assert rows[0].text == ('name: Smith, J\nage: 42\njoined: 2024-01-05\nnotes: said "hi"\n'
                            "  then left")
    assert rows[1].text == "name: Doe\njoined: 2023-12-31"
    assert rows[2].text.endswith("notes: late\ncolumn_5: extra")
    assert rows[1].metadata == {"table": "people", "kind": "table-row", "row": 2,
                                "columns": ["name", "age", "joined", "notes"]}


def test_from_a_file(tmp_path: Path) -> None:
    """A file is named by its stem, its ids start with its path (as the kernel's readers
    name documents), a BOM is dropped, and the format comes from the suffix."""
    file = tmp_path / "sales.tsv"
    file.write_bytes("\ufeffregion\tunits\nNorth\t\"12\"\n".encode())
    schema, row = table_documents(file)
    assert schema.id == f"{file}#schema" and row.id == f"{file}#row-1"
    assert row.title == "sales, row 1" and row.text == 'region: North\nunits: "12"'
    assert row.metadata["source"] == str(file)
    assert table_documents(str(file)) == [schema, row]  # a str naming a file reads it


def test_non_utf8_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 fails naming the file, the line and the byte, and how to
    read it; with its encoding it reads."""
    file = tmp_path / "legacy.csv"
    file.write_bytes("city\nZürich\n".encode("cp1252"))
    with pytest.raises(TableError, match=r"legacy.csv is not utf-8 text \(line 2, byte 6.*"
                                         r"encoding=.*aieng index.*iconv"):
        table_documents(file)
    assert table_documents(file, encoding="cp1252")[1].text == "city: Zürich"
    with pytest.raises(ValueError, match=r"the bytes are not utf-8 text \(line 3, byte 4 cannot"):
        table_documents(b"a\r\n\n\xff\n", name="b")
    # A quoted field's line break counts: the line is the file's, as an editor shows it.
    with pytest.raises(TableError, match=r"line 4, byte 12 cannot"):
        table_documents(b'a,b\n"x\ny",1\n\xe9,2\n', name="q")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_file_is_read_by_its_bom(tmp_path: Path, codec: str) -> None:
    """Excel's "Unicode text" and Windows tools write UTF-16 with a byte order mark: the
    mark says the encoding, so such a file reads without encoding=."""
    file = tmp_path / "export.tsv"
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(codec, "")
    file.write_bytes((bom + "city\tpeople\r\nZürich\t421878\r\n").encode(codec))
    schema, row = table_documents(file)
    assert row.text == "city: Zürich\npeople: 421878"
    assert schema.metadata["types"] == {"city": "text", "people": "integer"}
    # An encoding given is used as it is (Python's "utf-16" reads the mark itself).
    assert table_documents(file, encoding=codec)[1] == row


def test_unclosed_quote_is_a_clear_error() -> None:
    """A stray quote fails with its line rather than eating the rest of the table."""
    with pytest.raises(TableError, match="line 2"):
        table_documents('a,b\n"1,2\n3,4\n', name="t")


def test_markdown_tables() -> None:
    """Each pipe table of markdown is a table; several are numbered in names and ids."""
    text = "# Doc\n\n| k | v |\n|---|---|\n| a | 1 |\n\ntext\n\n| x |\n|---|\n| y |\n"
    documents = table_documents(text, name="doc")
    assert [d.id for d in documents] == ["doc#table-1#schema", "doc#table-1#row-1",
                                         "doc#table-2#schema", "doc#table-2#row-1"]
    assert documents[1].title == "doc (table 1), row 1" and documents[1].text == "k: a\nv: 1"
    single = table_documents("| k |\n|---|\n| a |\n", name="one")
    assert [d.id for d in single] == ["one#schema", "one#row-1"]


def test_headers_made_unique_and_named() -> None:
    """Duplicate headers get suffixes, blank ones a position name; whitespace in a header
    is collapsed. A cell beyond the header is no column (see test_ragged.py)."""
    (table,) = read_tables('a,a, ,"b\n  x"\n,1,2,3,4\n', name="t")
    assert table.columns == ("a", "a_2", "column_3", "b x")


def _names_by_search(header: list[str], width: int) -> tuple[str, ...]:
    """The naming rule spelled out: each name takes the first free ``base``, ``base_2``..."""
    names: list[str] = []
    for index in range(width):
        base = (" ".join(header[index].split()) if index < len(header) else "") \
            or f"column_{index + 1}"
        name, copy = base, 2
        while name in names:
            name, copy = f"{base}_{copy}", copy + 1
        names.append(name)
    return tuple(names)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "a_2", "a_3", "a_2_2", "", " ", "column_2", "b"]),
                max_size=12), st.integers(0, 4))
def test_unique_names_follow_the_rule(header: list[str], extra: int) -> None:
    """Names are made unique as the rule says, whatever the collisions (a header that is
    already some name's suffixed form, blank headers, cells beyond the header)."""
    from aieng_tables._documents import _names

    assert _names(header, len(header) + extra) == _names_by_search(header, len(header) + extra)


def test_many_duplicate_headers_are_named_in_linear_time() -> None:
    """Thousands of equal headers are numbered without retrying every earlier suffix (that
    was cubic: an 8 kB header took over 20 s)."""
    (table,) = read_tables(",".join(["a"] * 5000) + "\n" + ",".join(["1"] * 5000) + "\n",
                           name="t")
    assert table.columns[:3] == ("a", "a_2", "a_3")
    assert table.columns[-1] == "a_5000"
    assert len(set(table.columns)) == 5000


def test_sniffed_delimiter_and_explicit_format() -> None:
    """Semicolon CSV is sniffed; an explicit format and delimiter win."""
    assert table_documents("a;b\n1;2\n", name="t")[1].text == "a: 1\nb: 2"
    assert table_documents("a;b\n1;2\n", name="t", delimiter=",")[1].text == "a;b: 1;2"
    with pytest.raises(ValueError, match="format must be one of"):
        table_documents("a\n1\n", name="t", format="xlsx")  # type: ignore[arg-type]


def test_empty_and_header_only() -> None:
    """An empty source gives no document; a header alone gives the schema only."""
    assert table_documents("", name="t") == []
    assert table_documents("\n\n,,\n", name="t") == []
    (schema,) = table_documents("a,b\n", name="t")
    assert schema.metadata["rows"] == 0 and "0 rows" in schema.text


def test_name_is_needed_for_text() -> None:
    """Text has no file name to default to: a name is required, and not blank."""
    with pytest.raises(ValueError, match="name is required"):
        table_documents("a\n1\n")
    with pytest.raises(ValueError, match="blank"):
        table_documents("a\n1\n", name=" ")


def test_a_missing_file_named_by_a_string_is_named(tmp_path: Path) -> None:
    """A ``str`` naming a table file that does not exist (a typo) fails saying no such
    file exists, not only that text needs a name."""
    missing = str(tmp_path / "peopel.csv")
    with pytest.raises(ValueError, match=r"no file .*peopel\.csv.* exists"):
        table_documents(missing)


def test_long_single_line_text_is_a_table() -> None:
    """A ``str`` without line breaks that is too long to be a file name (a wide header
    alone) is read as the table's text, not an ``OSError`` from the file system."""
    header = ",".join(f"column{n}" for n in range(100))
    (table,) = read_tables(header, name="wide")
    assert table.columns == tuple(f"column{n}" for n in range(100)) and table.rows == ()


def test_name_of_the_wrong_type_is_a_type_error() -> None:
    """A name that is not a string is refused with a ``TypeError`` naming it."""
    with pytest.raises(TypeError, match="name must be a string"):
        read_tables("a\n1\n", name=5)  # type: ignore[arg-type]


def test_an_empty_delimiter_is_refused() -> None:
    """``delimiter=""`` is a mistake named as one, not a silent request to sniff."""
    formats: tuple[Format, ...] = ("csv", "tsv")
    for format in formats:
        with pytest.raises(ValueError, match="delimiter must be one character"):
            read_tables("a;b\n1;2\n", name="t", format=format, delimiter="")


def test_huge_field_example_is_clipped() -> None:
    """A huge cell is kept whole in its row, and clipped in the schema's examples."""
    blob = "word " * 100_000
    schema, row = table_documents(f'id,body\n1,"{blob}"\n', name="big")
    assert row.text == f"id: 1\nbody: {blob.strip()}"
    assert len(schema.text) < 300


CELL = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
                        min_size=1, max_size=6).filter(str.strip), min_size=1, max_size=4,
                unique_by=lambda h: " ".join(h.split())),
       st.lists(st.lists(CELL, min_size=1, max_size=5), max_size=6))
def test_any_written_table_reads_back(header: list[str], rows: list[list[str]]) -> None:
    """For any table the csv module writes: one schema document, then one per row with a
    non-blank cell, numbered from 1, each line naming a column and holding a cell; every
    document passes the contract's validators and its metadata lists the columns."""
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    documents = table_documents(out.getvalue(), name="t", delimiter=",")
    kept = [row for row in rows if any(cell.strip() for cell in row)]
    assert len(documents) == 1 + len(kept)
    schema = documents[0]
    columns = schema.metadata["columns"]
    assert schema.metadata["rows"] == len(kept)
    assert columns == [" ".join(h.split()) for h in header]
    for number, (document, row) in enumerate(zip(documents[1:], kept), start=1):
        assert document.id == f"t#row-{number}" and document.metadata["columns"] == columns
        lines = [line for line in document.text.split("\n") if not line.startswith("  ")]
        names = columns + [f"column_{n}" for n in range(len(columns) + 1, len(row) + 1)]
        filled = [column for column, cell in zip(names, row) if cell.strip()]
        assert len(lines) == len(filled)
        assert all(line.startswith(f"{column}: ") for line, column in zip(lines, filled))
