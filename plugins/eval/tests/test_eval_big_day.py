"""The big day: datasets, results and reports 100x to 1000x larger.

Growth is shown with counts (calls of a wrapped function, memory peaks for n and 4n
items), never with timings.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from aieng_eval import DatasetError, _svg, parse_dataset
from aieng_eval._results import ItemResult, ResultsFile, read_results


def _line(metadata: str) -> bytes:
    return f'{{"input": "q", "metadata": {{"x": {metadata}}}}}'.encode()


@pytest.mark.parametrize("depth", [350, 900])
def test_deeply_nested_metadata_the_reader_takes_is_no_crash(depth: int) -> None:
    """Metadata nested hundreds deep (JSON Python reads) is a judge's data, as given: the
    check for NaN walked it by recursion and crashed (a RecursionError traceback) from
    about 350 levels."""
    nested = "[" * depth + "1" + "]" * depth
    item = parse_dataset(_line(nested)).items[0]
    value: Any = item.judge_data["x"]
    for _ in range(depth):
        value = value[0]
    assert value == 1


def test_a_non_finite_number_deep_in_metadata_is_still_refused() -> None:
    """The walk without recursion still finds a NaN at the bottom of a deep nesting."""
    nested = '[{"a": ' * 400 + "NaN" + "}]" * 400
    with pytest.raises(DatasetError, match="not finite"):
        parse_dataset(_line(nested))


def _count_min(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the ``min`` calls of the SVG module (a wrapped built-in)."""
    calls = {"min": 0}

    def counting_min(*args: Any, **kwargs: Any) -> Any:
        calls["min"] += 1
        return min(*args, **kwargs)

    monkeypatch.setattr(_svg, "min", counting_min, raising=False)
    return calls


def test_scatter_takes_the_ranges_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The label-against-score scatter of the report took each axis' range again for
    every point: quadratic, minutes for 100k labelled items. The range is taken a fixed
    number of times whatever the number of points."""
    calls = _count_min(monkeypatch)
    counts = []
    for n in (2_000, 8_000):
        calls["min"] = 0
        svg = _svg.scatter([(float(i % 5), i / n) for i in range(n)], title="t",
                           x_label="x", y_label="y")
        assert svg.count("<circle") == n
        counts.append(calls["min"])
    assert counts[0] == counts[1] <= 2


def test_scatter_places_points_as_before() -> None:
    """The extreme points sit at the plot's edges (the ranges are the points')."""
    svg = _svg.scatter([(1.0, 0.0), (3.0, 1.0), (2.0, 0.5)], title="t", x_label="x",
                       y_label="y")
    circles = [part.split('"') for part in svg.split("<circle")[1:]]
    xs = [float(part[1]) for part in circles]
    assert xs[0] < xs[2] < xs[1]
    assert xs[2] == pytest.approx((xs[0] + xs[1]) / 2)


def _results_file(path: Path, n: int, *, partial: bool = False) -> int:
    """A results file of ``n`` records with answers of 1 KB; its size."""
    with path.open("wb") as handle:
        for i in range(n):
            record = ItemResult(id=f"item-{i}", status="ok", output="x" * 1000,
                                scores={"em": 1.0}, line=i + 1)
            handle.write(json.dumps(record.to_json()).encode("utf-8") + b"\n")
        if partial:
            handle.write(b'{"id": "cut", "sta')
    return path.stat().st_size


def _transient_peak(call: Any) -> tuple[Any, int]:
    """``call()``'s value and the memory it held at its peak beyond what it keeps."""
    tracemalloc.start()
    try:
        value = call()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return value, peak - current


def test_reading_results_does_not_hold_the_whole_file(tmp_path: Path) -> None:
    """A resume reads ``results.jsonl`` line by line: beyond the records it returns, it
    holds about one line, not the file's bytes and their split lines (twice the file:
    hundreds of MB for a run of 100k items)."""
    extra = []
    for n in (400, 1_600):
        path = tmp_path / f"results-{n}.jsonl"
        size = _results_file(path, n, partial=True)
        records, held = _transient_peak(lambda path=path: read_results(path))
        assert len(records) == n and "cut" not in records
        assert held < size / 4, (n, held, size)
        extra.append(held)
    assert extra[1] < 2 * extra[0] + 256 * 1024


def test_appending_reads_only_the_end_of_the_file(tmp_path: Path) -> None:
    """Opening ``results.jsonl`` to append cuts a partial last line off reading from the
    end, not the whole file (it read every byte, at each resume)."""
    path = tmp_path / "results.jsonl"
    size = _results_file(path, 4_000, partial=True)
    writer = ResultsFile(path)
    _, held = _transient_peak(writer.open)
    writer.close()
    assert held < 256 * 1024 < size
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b'"cut"' not in raw and raw.count(b"\n") == 4_000


@pytest.mark.parametrize("tail", [b"", b"\n", b"no newline at all"])
def test_appending_after_any_tail(tmp_path: Path, tail: bytes) -> None:
    """An empty file, a file of one newline and a file of one partial line (no newline:
    cut to nothing) open for appending as before."""
    path = tmp_path / "results.jsonl"
    path.write_bytes(tail)
    writer = ResultsFile(path)
    writer.open()
    writer.write([ItemResult(id="a", status="ok")])
    writer.close()
    assert list(read_results(path)) == ["a"]
    assert path.read_bytes().startswith(b"\n" if tail == b"\n" else b"{")


def test_a_partial_line_longer_than_a_chunk_is_cut(tmp_path: Path) -> None:
    """A partial last line of 200 KB (the end is read backwards 64 KB at a time) is cut
    back to the last complete record."""
    path = tmp_path / "results.jsonl"
    _results_file(path, 3)
    whole = path.read_bytes()
    path.write_bytes(whole + b"y" * 200_000)
    writer = ResultsFile(path)
    writer.open()
    writer.close()
    assert path.read_bytes() == whole


def _dataset_bytes(n: int) -> bytes:
    return "".join(json.dumps({"id": f"q{i}", "input": "a question " * 20,
                               "context": ["a passage " * 50], "metadata": {"t": str(i % 7)}})
                   + "\n" for i in range(n)).encode("utf-8")


def test_parsing_a_dataset_holds_no_second_copy_of_it() -> None:
    """The dataset's lines are taken one at a time: beyond the bytes given and the items
    returned, parsing held a list of every line (a second copy of the file: 150 MB more at
    the peak for a 150 MB dataset), now about one line."""
    held = []
    for n in (500, 2_000):
        raw = _dataset_bytes(n)
        data, extra = _transient_peak(lambda raw=raw: parse_dataset(raw))
        assert len(data.items) == n
        assert extra < len(raw) / 4, (n, extra, len(raw))
        held.append(extra)
    assert held[1] < 2 * held[0] + 256 * 1024


def test_dataset_lines_and_errors_read_as_before() -> None:
    """Line numbers count blank lines and CRLF endings read as before; an error at a
    line's end names its column on that line (the line's end is not part of it)."""
    raw = b'\xef\xbb\xbf{"input": "a"}\r\n\n{"input": "b", "id": 7}\n{"input": "c"}'
    data = parse_dataset(raw)
    assert [item.line for item in data.items] == [1, 3, 4]
    assert data.items[1].id == "7" and data.items[2].input == "c"
    with pytest.raises(DatasetError,
                       match=r"line 2: invalid JSON: Expecting value \(column 11\)"):
        parse_dataset(b'{"input": "a"}\n{"input": \n')
