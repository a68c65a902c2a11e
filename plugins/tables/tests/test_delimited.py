"""The delimited-text reader: RFC 4180 quoting, line breaks, sniffing, no field limit."""

from __future__ import annotations

import csv
import io

import pytest
from aieng_tables import TableError, read_records, sniff_delimiter
from hypothesis import given, settings
from hypothesis import strategies as st

PROPERTY = settings(max_examples=300, deadline=None)
# Characters that matter to CSV, so quoting and line breaks are frequent.
TRICKY = st.text(alphabet=st.sampled_from(list('ab,"\n\r ;\t|x\x00é')), max_size=40)
CELLS = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\t;é\x00')) | st.characters(),
                max_size=12)


def test_quoting_rules() -> None:
    """Quoted fields hold delimiters, doubled quotes and line breaks; every line ending
    ends a record; text after a closing quote is kept; blank lines read as ``[""]``."""
    text = 'a,"b,c","say ""hi""","two\nlines"\r\n1,2\r3\n\n"x"y,'
    assert list(read_records(text)) == [
        ["a", "b,c", 'say "hi"', "two\nlines"], ["1", "2"], ["3"], [""], ["xy", ""]]


def test_unclosed_quote_names_its_line() -> None:
    """A quoted field never closed fails with the line it starts on, instead of silently
    swallowing the rest of the file into one cell."""
    with pytest.raises(TableError, match=r"line 3: a quoted field is never closed"):
        list(read_records('a,b\n1,2\n3,"oops\n4,5\n'))


def test_a_huge_field_is_read() -> None:
    """A field far beyond the csv module's 128 KiB limit is read whole."""
    blob = "x" * 3_000_000
    assert list(read_records(f'id,blob\n1,"{blob}"\n2,{blob}\n')) == [
        ["id", "blob"], ["1", blob], ["2", blob]]


def test_tsv_without_quoting() -> None:
    """With quoting off, quotes are ordinary characters."""
    assert list(read_records('a\t"b\n"c\td', "\t", quoting=False)) == [
        ["a", '"b'], ['"c', "d"]]


def test_sniffing() -> None:
    """The delimiter most frequent in the first line (outside quotes) wins; ``,`` when
    none appears."""
    assert sniff_delimiter("a;b;c\n1;2;3") == ";"
    assert sniff_delimiter("a\tb\n") == "\t"
    assert sniff_delimiter('"x;y;z",b\n') == ","
    assert sniff_delimiter("\n\na|b|c") == "|"
    assert sniff_delimiter("single") == ","


def test_sniffing_with_carriage_return_line_ends() -> None:
    """Records may end with a lone ``\r`` (old Mac files): the first line ends there too,
    so the delimiters of later lines do not outvote the header's."""
    text = "a;b\r1,5;2,5\r3,5;4,5\r"
    assert sniff_delimiter(text) == ";"
    assert list(read_records(text, sniff_delimiter(text))) == [
        ["a", "b"], ["1,5", "2,5"], ["3,5", "4,5"]]


def test_sniffing_reads_the_whole_header_record() -> None:
    """The delimiter is sniffed from the header record as the reader sees it: a quoted
    header cell spanning lines (a spreadsheet's two-line heading) is skipped whole, blank
    lines before it are skipped, and a quote inside a field is an ordinary character."""
    text = 'id;"Umsatz, netto,\n(EUR, brutto)";Menge\n1;2,5;3\n'
    assert sniff_delimiter(text) == ";"
    assert list(read_records(text, sniff_delimiter(text))) == [
        ["id", "Umsatz, netto,\n(EUR, brutto)", "Menge"], ["1", "2,5", "3"]]
    assert sniff_delimiter("  \n \t \na;b;c\n") == ";"
    assert sniff_delimiter('size 5" disk;b;c\n1;2;3\n') == ";"


def test_unclosed_quote_line_counts_every_line_end() -> None:
    """The line named by an unclosed quote counts ``\r`` and ``\r\n`` line ends as one
    line each, as the reader does."""
    with pytest.raises(TableError, match=r"line 3: a quoted field"):
        list(read_records('a,b\r1,2\r\n3,"oops\r4,5\r'))


def test_bad_delimiter() -> None:
    """A delimiter that is not one ordinary character is refused."""
    for bad in ("", ";;", '"', "\n"):
        with pytest.raises(ValueError, match="delimiter"):
            list(read_records("a", bad))


@PROPERTY
@given(TRICKY)
def test_reads_like_the_csv_module(text: str) -> None:
    """On any text, the records are the csv module's (blank lines as ``[""]``), except
    that an unclosed quote is an error here where csv takes the rest of the file."""
    try:
        ours = list(read_records(text))
    except TableError:
        return
    reference = [row or [""] for row in csv.reader(io.StringIO(text, newline=""))]
    assert ours == reference


@PROPERTY
@given(st.lists(st.lists(CELLS, min_size=1, max_size=5), max_size=6),
       st.sampled_from([",", ";", "\t"]))
def test_round_trips_what_csv_writes(rows: list[list[str]], delimiter: str) -> None:
    """Whatever the csv module writes (any cells, quotes, delimiters, line breaks, NUL)
    reads back as the same records."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    assert list(read_records(out.getvalue(), delimiter)) == rows
