"""The run directory's ``results.jsonl``: one JSON object per finished item, appended.

Each record is written and flushed as its item finishes, and the file is fsynced on close,
so a crash loses at most the items in flight; a partial last line (the write the crash
interrupted) is ignored when the file is read back.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import structlog

__all__ = ["NOTE_SUFFIX", "ItemResult", "ResultsFile", "finite_json", "read_finite",
           "read_results", "strict_json"]

log = structlog.get_logger(__name__)


@attrs.frozen
class ItemResult:
    """The outcome of one dataset item.

    :param id: the item's id.
    :param status: ``ok``, ``blocked`` (a guard stopped the run) or ``error``.
    :param output: the pipeline's answer.
    :param scores: metric name -> value (a name two judges share is the first judge's in
        the run, and ``name@judge`` for the others).
    :param judges: metric name -> the judge component that produced it.
    :param error: for a failed item, the error with its type.
    :param duration_s: seconds the item took (pipeline and judges).
    :param models: ``component/model`` ids of the item's model calls.
    :param metadata: the item's slicing fields.
    :param label: the item's human label, when it has one.
    :param line: the item's line in the dataset.
    :param judge_failures: each time a judge gave no score on the item though it should
        have (an AI judge's answer unreadable after the retry, a judge that raised under
        a ``fallback`` / ``skip`` policy): ``{"judge", "metric", "error"}`` (``metric``
        empty when the whole judge failed). The item stays ``ok``; the metric's n is lower.
    :param judge_context: on an item with judge failures and no ``context`` of its own, the
        passages the judges saw (the pipeline's retrieved hits), so that
        ``--retry-judge-failures`` judges the stored answer on them again; ``None``
        elsewhere (not written), and in records of older versions.
    :param judge_input: beside ``judge_context``: the input the pipeline's judge stage
        saw (the question after the input guards: redacted, where a guard redacts), so
        that a retried judge sees what the others saw, never the raw text.
    :param agent: in agent mode (``run_eval(agent=...)``), how the agent's run went:
        ``status``, ``reason``, ``steps``, ``tokens``, ``cost`` and ``tools`` (the tools
        called, in order); ``None`` otherwise (not written), and in records of older
        versions.
    """

    id: str
    status: str
    output: str = ""
    scores: dict[str, float] = attrs.field(factory=dict)
    judges: dict[str, str] = attrs.field(factory=dict)
    error: str = ""
    duration_s: float = 0.0
    models: tuple[str, ...] = ()
    metadata: dict[str, str] = attrs.field(factory=dict)
    label: float | dict[str, float] | None = None
    line: int = 0
    judge_failures: list[dict[str, str]] = attrs.field(factory=list)
    judge_context: tuple[str, ...] | None = None
    judge_input: str | None = None
    agent: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """Whether a rerun skips it: failed items are retried."""
        return self.status != "error"

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``results.jsonl``."""
        data = attrs.asdict(self)
        data["models"] = list(self.models)
        if self.judge_context is None:
            del data["judge_context"]
        else:
            data["judge_context"] = list(self.judge_context)
        if self.judge_input is None:
            del data["judge_input"]
        if self.agent is None:
            del data["agent"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemResult:
        """A record read back from ``results.jsonl``.

        :raises TypeError: when the record lacks a string ``id`` or ``status``, or a field
            has another type than every version wrote (a damaged file, a later layout).
        """
        if not isinstance(data.get("id"), str) or not isinstance(data.get("status"), str):
            raise TypeError("a result record needs a string 'id' and 'status'")
        names = {f.name for f in attrs.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        for key, kinds in _TYPES.items():
            value = known.get(key)
            if key in known and (not isinstance(value, kinds) or isinstance(value, bool)
                                 and key in ("line", "duration_s")):
                raise TypeError(f"a result record's {key!r} is {type(value).__name__}, not "
                                f"{' or '.join(k.__name__ for k in kinds)}")
        for key, values, kinds in (("models", known.get("models", ()), (str,)),
                                   ("judges", known.get("judges", {}).values(), (str,)),
                                   ("label", known["label"].values() if isinstance(
                                       known.get("label"), dict) else (), (int, float))):
            if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in values):
                raise TypeError(f"a result record's {key!r} holds a value of another type")
        known["models"] = tuple(known.get("models", ()))
        # A score written ``null`` (not finite: :func:`finite_json`) reads back as the
        # float its note names (``nan`` without one); the note is no metric.
        known["scores"] = {str(k): math.nan if v is None else float(v)
                           for k, v in read_finite(known.get("scores", {})).items()}
        failures = known.get("judge_failures") or []  # absent in records of older versions
        known["judge_failures"] = [
            {key: str(f.get(key) or "") for key in ("judge", "metric", "error")}
            for f in (failures if isinstance(failures, list) else []) if isinstance(f, dict)]
        context = known.get("judge_context")
        known["judge_context"] = (tuple(str(c) for c in context)
                                  if isinstance(context, list) else None)
        judged = known.get("judge_input")
        known["judge_input"] = judged if isinstance(judged, str) else None
        agent = known.get("agent")  # absent in records of older versions and plain runs
        known["agent"] = dict(agent) if isinstance(agent, dict) else None
        return cls(**known)


#: The types every version wrote each field of a record with (``label``: ``None``, a
#: number or a metric -> number object; ``judge_failures`` and ``judge_context`` are read
#: leniently, as records of older versions lack them).
_TYPES: dict[str, tuple[type, ...]] = {
    "output": (str,), "error": (str,), "scores": (dict,), "judges": (dict,),
    "metadata": (dict,), "models": (list,), "line": (int,), "duration_s": (int, float),
    "label": (int, float, dict, type(None))}


def read_results(path: Path) -> dict[str, ItemResult]:
    """The latest record of each item in a results file (empty when there is none).

    A last line without its newline is an interrupted write and is ignored; a malformed
    line elsewhere is logged and skipped, naming its line number.
    """
    if not path.exists():
        return {}
    found: dict[str, ItemResult] = {}
    # Line by line: only the records stay in memory, never the file's bytes (a run of
    # 100k items has a results file of hundreds of MB).
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):  # the last line, cut short by a crash
                log.warning("eval.results.partial_line", path=str(path), bytes=len(line))
                break
            if not line.strip():
                continue
            try:
                record = ItemResult.from_json(json.loads(line))
            except (ValueError, TypeError) as exc:
                log.warning("eval.results.bad_line", path=str(path), line=number,
                            error=str(exc))
                continue
            found[record.id] = record
    return found


#: The suffix of the field beside a number written ``null`` because it is not finite:
#: ``"mean": null, "mean_note": "not finite (inf)"`` (``inf``, ``-inf`` or ``nan``).
NOTE_SUFFIX = "_note"
_NOTE = re.compile(r"not finite \((inf|-inf|nan)\)")


def finite_json(value: Any) -> Any:
    """``value`` as strict JSON reads it (JavaScript's ``JSON.parse``, jq, Go, serde refuse
    ``NaN`` and ``Infinity``): every float that is not finite becomes ``None``; in an
    object, its key ``K`` gets a sibling ``K_note``, ``"not finite (inf)"`` (``-inf``,
    ``nan``), saying why (in a list, the ``null`` alone). :func:`read_finite` undoes it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            out[key] = finite_json(item)
            if isinstance(item, float) and not math.isfinite(item):
                out[f"{key}{NOTE_SUFFIX}"] = f"not finite ({item})"
        return out
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def strict_json(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as strict JSON text (``comparison.json``, ``--json``): a number that is
    not finite is ``null`` with a note beside it (:func:`finite_json`)."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False)


def read_finite(value: Any) -> Any:
    """A JSON value :func:`finite_json` wrote, read back: each ``null`` with its note
    (``"not finite (inf)"``) is the float again, and the note is dropped; anything else
    is as read."""
    if isinstance(value, list):
        return [read_finite(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(key, str) and key.endswith(NOTE_SUFFIX) and isinstance(item, str):
            owner = key[:-len(NOTE_SUFFIX)]
            if owner in value and value[owner] is None and _NOTE.fullmatch(item):
                continue
        note = value.get(f"{key}{NOTE_SUFFIX}") if isinstance(key, str) else None
        found = _NOTE.fullmatch(note) if item is None and isinstance(note, str) else None
        out[key] = float(found.group(1)) if found else read_finite(item)
    return out


def utf8_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as strict JSON text that UTF-8 encodes: other scripts as they are, unless a
    string holds a lone surrogate (half an emoji in an error, an undecodable byte of a file
    name), when every character beyond ASCII is a JSON escape (which reads back the same).
    A number that is not finite is ``null`` with a note (:func:`finite_json`)."""
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or Infinity, which strict readers refuse
        value = finite_json(value)
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, indent=indent, allow_nan=False)
    return text


def _line(record: ItemResult) -> bytes:
    """The record as one UTF-8 line; a lone surrogate in it (a model's output cut in the
    middle of a UTF-16 pair) is written as its JSON escape, which reads back the same."""
    return utf8_json(record.to_json()).encode("utf-8") + b"\n"


def _after_last_newline(handle: IO[bytes], end: int, chunk: int = 1 << 16) -> int:
    """The offset just after the last ``\\n`` before ``end`` (0 when there is none), read
    backwards a chunk at a time."""
    position = end
    while position > 0:
        start = max(0, position - chunk)
        handle.seek(start)
        found = handle.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


class ResultsFile:
    """Appends records to ``results.jsonl``; blocking, so call it from a worker thread.

    A file that ends in a partial line (a crash mid-write) is cut back to its last complete
    line before appending, so the next record starts on a line of its own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def open(self) -> None:
        """Open for appending, dropping a partial last line (found from the file's end:
        the records before it are not read)."""
        if self.path.exists():
            with self.path.open("r+b") as handle:
                end = handle.seek(0, os.SEEK_END)
                if end:
                    handle.seek(end - 1)
                    if handle.read(1) != b"\n":
                        handle.truncate(_after_last_newline(handle, end))
        self._handle = self.path.open("ab")

    def write(self, records: Iterable[ItemResult]) -> None:
        """Append records and flush them to the operating system."""
        assert self._handle is not None, "open() first"
        data = b"".join(_line(r) for r in records)
        self._handle.write(data)
        self._handle.flush()

    def close(self) -> None:
        """Flush, fsync and close (closed even when the flush fails: a full disk)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            try:
                handle.close()  # flushes again: what a full disk refused is dropped
            except OSError:
                pass
