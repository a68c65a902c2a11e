"""The big day, leftovers: the reports' slice cap recorded with the run, the scatter of
10k labelled items, and the dataset hash of a file of CRLF lines without a whole copy.

Growth is shown with counts (circles drawn) and ``tracemalloc`` peaks, never timings.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

from _evalkit import invoke, sliced_run
from aieng_eval import _dataset
from aieng_eval._dataset import (
    content_sha256,
    content_sha256_chunks,
    file_sha256s,
    load_dataset,
)
from aieng_eval._results import ItemResult
from aieng_eval.html import SCATTER_POINTS, run_page
from aieng_eval.report import locked_max_slices, locked_samples, summarize
from hypothesis import given, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------------------------------
# 1. --max-slices is recorded in lock.json; report and replay use the run's


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_report_rebuilds_with_the_runs_own_max_slices(tmp_path: Path) -> None:
    """A run made with ``--max-slices 1`` rebuilt by ``aieng eval report`` (no
    ``--max-slices``) used 50: four slices, not the run's one. The lockfile records it;
    ``report`` uses it, and an explicit ``--max-slices`` still wins (not recorded)."""
    out = sliced_run(tmp_path, "--max-slices", "1")
    assert _json(out / "lock.json")["max_slices"] == 1
    written = _json(out / "summary.json")
    assert list(written["slices"]["topic"]) == ["t0"]
    result = invoke("report", str(out), "--samples", "10")
    assert result.exit_code == 0, result.output
    assert _json(out / "summary.json") == written
    assert invoke("report", str(out), "--samples", "10", "--max-slices", "3").exit_code == 0
    assert len(_json(out / "summary.json")["slices"]["topic"]) == 3
    assert _json(out / "lock.json")["max_slices"] == 1  # a report records nothing


def test_a_lockfile_without_max_slices_reads_as_fifty(tmp_path: Path) -> None:
    """A run of an earlier version (no ``max_slices`` in its lockfile) is reported with 50
    slices per field, as it was made; a value no cap can be (``true``, 0, text) too."""
    out = sliced_run(tmp_path, "--max-slices", "2")
    lock = _json(out / "lock.json")
    for value in (None, True, 0, "2"):
        if value is None:
            lock.pop("max_slices")
        else:
            lock["max_slices"] = value
        (out / "lock.json").write_text(json.dumps(lock), encoding="utf-8")
        assert locked_max_slices(lock) == 50
        assert invoke("report", str(out), "--samples", "10").exit_code == 0
        summary = _json(out / "summary.json")
        assert summary["max_slices"] == 50 and len(summary["slices"]["topic"]) == 4


def test_replay_uses_the_runs_max_slices(tmp_path: Path) -> None:
    """``replay`` ran with 50 slices whatever the run had: its reports and lockfile now
    carry the run's."""
    out = sliced_run(tmp_path, "--max-slices", "1")
    again = tmp_path / "again"
    result = invoke("replay", str(out), "--out", str(again), "-q", "--json")
    assert result.exit_code == 0, result.output
    assert _json(again / "lock.json")["max_slices"] == 1
    assert list(_json(again / "summary.json")["slices"]["topic"]) == ["t0"]


# ---------------------------------------------------------------------------------------
# 2. the label-against-score scatter draws a bounded, reproducible sample


def _labelled(n: int) -> list[ItemResult]:
    return [ItemResult(id=f"i{i}", status="ok", line=i + 1, scores={"m": (i % 5) / 4},
                       label=float((i * 7) % 5) / 4) for i in range(n)]


def _scatter_part(page: str) -> str:
    """The agreement section's plots (the scatter, its caption)."""
    start = page.index("Judge agreement with human labels")
    return page[start:page.index("<h2>", start + 1)]


def test_the_scatter_of_10k_labels_draws_a_capped_sample() -> None:
    """report.html drew one circle per labelled item: 100k circles, a multi-MB SVG. It
    draws at most SCATTER_POINTS, the same ones each time, says so in the caption, and the
    agreement statistics still count every item."""
    records = _labelled(10_000)
    summary = summarize(records, samples=10)
    assert summary["agreement"]["m"]["n"] == 10_000
    page = run_page(summary, records, {})
    part = _scatter_part(page)
    assert part.count("<circle") == SCATTER_POINTS == 2000
    assert "2,000 of 10,000 points drawn" in part
    assert run_page(summary, records, {}) == page  # reproducible


def test_a_scatter_under_the_cap_draws_every_point_without_a_caption() -> None:
    records = _labelled(300)
    part = _scatter_part(run_page(summarize(records, samples=10), records, {}))
    assert part.count("<circle") == 300 and "points drawn" not in part


def test_the_scatter_sample_keeps_the_axes_of_every_point() -> None:
    """The axes span every point, drawn or not: a point a quarter of the way along sits a
    quarter of the way along whichever points the sample drew (``x = 50 + 228 * 0.25``)."""
    from aieng_eval._svg import drawn_points, scatter

    points = [(0.0, 0.0)] + [(0.25, 0.25)] * 4998 + [(1.0, 1.0)]
    chosen = drawn_points(len(points), 10)
    assert len(chosen) == 10 and chosen == sorted(set(chosen)) == drawn_points(5000, 10)
    svg = scatter(points, title="t", x_label="x", y_label="y", max_points=10)
    xs = [part.split('"')[1] for part in svg.split("<circle")[1:]]
    assert len(xs) == 10 and "107.0" in xs and set(xs) <= {"50.0", "107.0", "278.0"}
    assert scatter(points, title="t", x_label="x", y_label="y").count("<circle") == 5000


# ---------------------------------------------------------------------------------------
# 3. the dataset hash, a chunk at a time


def _old_content_sha256(raw: bytes) -> str:
    """The hash as it was computed before (one whole copy of the file)."""
    return hashlib.sha256(raw.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
                          ).hexdigest()


_PIECES = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xef",
                                    b"\xbb", b"a", b"{}", b" "]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(pieces=_PIECES, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_the_chunked_hash_is_the_whole_files_hash(pieces: list[bytes],
                                                   cuts: list[int]) -> None:
    """Split anywhere (a CR ending one chunk and its LF starting the next, a mark split
    over the first chunks, empty chunks), the hash is the one a whole copy gave."""
    raw = b"".join(pieces)
    bounds = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    chunks.insert(len(chunks) // 2, b"")
    assert content_sha256_chunks(chunks) == _old_content_sha256(raw)
    assert content_sha256(raw) == _old_content_sha256(raw)


def test_the_chunked_hash_across_the_chunk_size(tmp_path: Path) -> None:
    """A CR at the last byte of a read (and its LF the first of the next) hashes as a
    CRLF: the file is read in real chunks; the bytes' own hash is the plain SHA-256."""
    size = _dataset._CHUNK
    for raw in (b"x" * (size - 1) + b"\r\n" + b"y\r\n",
                b"\xef\xbb\xbf" + b"x" * (size - 4) + b"\r\r\n\r",
                b"\r" * (2 * size + 1), b"\xef\xbb", b""):
        path = tmp_path / "d.jsonl"
        path.write_bytes(raw)
        assert file_sha256s(path) == (_old_content_sha256(raw), hashlib.sha256(raw).hexdigest())


def _peak(raw: bytes) -> int:
    tracemalloc.start()
    try:
        content_sha256(raw)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_hashing_a_crlf_dataset_makes_no_whole_copy() -> None:
    """The hash of a dataset with CRLF endings made a whole copy of the file (its ends
    replaced): a second 1 GB for a 1 GB dataset. The memory it takes does not grow with
    the file: the same bound for 1 MB and 4 MB."""
    line = b'{"input": "a question of some length"}\r\n'
    small = line * (1_000_000 // len(line))
    large = small * 4
    peaks = [_peak(small), _peak(large)]
    assert peaks[1] < 4 * _dataset._CHUNK and peaks[1] < len(small) // 2, peaks


def test_a_crlf_dataset_loads_with_the_lf_files_hash(tmp_path: Path) -> None:
    """End to end: the same items with CRLF endings (and a mark) hash as with LF."""
    rows = [json.dumps({"id": f"q{i}", "input": "é" * random.Random(i).randint(1, 50)})
            for i in range(2_000)]
    lf, crlf = tmp_path / "lf.jsonl", tmp_path / "crlf.jsonl"
    lf.write_bytes("\n".join(rows).encode() + b"\n")
    crlf.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    a, b = load_dataset(lf), load_dataset(crlf)
    assert a.sha256 == b.sha256 == a.file_sha256 != b.file_sha256
    assert file_sha256s(crlf) == (b.sha256, b.file_sha256)


def test_report_and_replay_use_the_runs_own_samples(tmp_path: Path) -> None:
    """``--samples`` had the gap ``--max-slices`` had: ``report`` without it and ``replay``
    used 1000 resamples whatever the run was made with. The lockfile records it; a
    lockfile without it reads as 1000; an explicit ``--samples`` still wins."""
    out = sliced_run(tmp_path)  # --samples 10
    assert _json(out / "lock.json")["bootstrap_samples"] == 10
    assert invoke("report", str(out)).exit_code == 0
    assert _json(out / "summary.json")["samples"] == 10
    assert invoke("report", str(out), "--samples", "20").exit_code == 0
    assert _json(out / "summary.json")["samples"] == 20
    again = tmp_path / "again"
    assert invoke("replay", str(out), "--out", str(again), "-q", "--json").exit_code == 0
    assert _json(again / "lock.json")["bootstrap_samples"] == 10
    assert _json(again / "summary.json")["samples"] == 10
    lock = _json(out / "lock.json")
    del lock["bootstrap_samples"]
    assert locked_samples(lock) == 1000
