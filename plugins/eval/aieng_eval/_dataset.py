"""Evaluation datasets: JSON Lines files of items, validated line by line."""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from aieng_hookspecs import did_you_mean
from aieng_hookspecs.types import Message, Request

__all__ = ["DATASET_KEYS", "Dataset", "DatasetError", "DatasetItem", "load_dataset",
           "parse_dataset"]

#: The keys a dataset line may have.
DATASET_KEYS: tuple[str, ...] = ("id", "input", "reference", "context", "metadata", "slice",
                                 "label")


#: The UTF-8 byte-order mark (Windows editors write one): it starts a file, not its first item.
_BOM = b"\xef\xbb\xbf"
#: The bytes a dataset's hash takes at a time.
_CHUNK = 1 << 16


class DatasetError(ValueError):
    """A dataset line is malformed; the message names the file, the line and the problem."""


@attrs.frozen
class DatasetItem:
    """One dataset line, validated.

    :param id: the item's id: the line's ``id``, or a stable hash of the line's content.
    :param line: the 1-based line number in the file.
    :param input: the prompt, or a chat as :class:`Message` values.
    :param reference: the expected answer(s), for the judges.
    :param context: passages the answer should be grounded in (the judges' ``Sample.context``).
    :param metadata: slicing fields (``metadata``'s strings, numbers, booleans and nulls,
        as text, plus ``slice`` under that key).
    :param label: a human judgement: one number for every metric, or one per metric.
    :param judge_data: ``metadata``'s lists and objects, as given: no slice, but part of
        the judges' ``Sample.metadata`` (the ``instructions`` judge's per-item checks).
    """

    id: str
    line: int
    input: str | tuple[Message, ...]
    reference: str | tuple[str, ...] | None = None
    context: tuple[str, ...] = ()
    metadata: dict[str, str] = attrs.field(factory=dict)
    label: float | dict[str, float] | None = None
    judge_data: dict[str, Any] = attrs.field(factory=dict)

    @property
    def sample_metadata(self) -> dict[str, Any]:
        """What the judges see as ``Sample.metadata``: the slicing fields and the lists and
        objects of the line's ``metadata``."""
        return {**self.metadata, **self.judge_data}

    @property
    def prompt(self) -> str:
        """The input as text: the string, or the last user message of a chat."""
        if isinstance(self.input, str):
            return self.input
        users = [m.content for m in self.input if m.role == "user"]
        return users[-1] if users else self.input[-1].content

    def request(self, seed: int | None = None) -> str | Request:
        """What the pipeline runs on: the text as is, or a :class:`Request` carrying the
        chat and the sampling seed."""
        if seed is None and isinstance(self.input, str):
            return self.input
        messages = ((Message("user", self.input),) if isinstance(self.input, str)
                    else self.input)
        return Request(messages=messages, seed=seed)

    def label_for(self, metric: str) -> float | None:
        """The human label that applies to ``metric`` (``None`` when there is none)."""
        if isinstance(self.label, dict):
            return self.label.get(metric)
        return self.label


@attrs.frozen
class Dataset:
    """A loaded dataset: its items in file order and the file's SHA-256.

    :param sha256: the SHA-256 of the file's text with CRLF line endings read as LF and
        without a UTF-8 byte-order mark (both of which the parser ignores), so a checkout
        converting line endings (git's ``autocrlf``) changes no hash: what a resume
        compares.
    :param file_sha256: the SHA-256 of the bytes as they are (what lockfiles of earlier
        versions hold as ``sha256``; the same for a file with LF endings and no mark).
    """

    path: str
    sha256: str
    items: tuple[DatasetItem, ...]
    file_sha256: str = ""

    def __len__(self) -> int:
        return len(self.items)


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a JSON Lines dataset (blank lines are skipped).

    :raises DatasetError: naming the file, the line number and what is wrong with it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the dataset: {exc.strerror}") from None
    return parse_dataset(raw, source=str(path))


def parse_dataset(raw: bytes, *, source: str = "<dataset>") -> Dataset:
    """Validate the bytes of a JSON Lines dataset.

    :raises DatasetError: naming the source, the line number and the problem.
    """
    items: list[DatasetItem] = []
    seen: dict[str, int] = {}
    canonical_ids: dict[str, tuple[str, int]] = {}  # NFC form -> the id as given, its line
    # The next number to try per made-up id: those before it are taken, and stay taken (a
    # search from -2 for each repeat was quadratic in a prompt repeated many times).
    numbers: dict[str, int] = {}
    # A UTF-8 byte-order mark (Windows editors write one) starts the file, not its first item.
    # Lines are taken one at a time (a buffer over the bytes, not a copy): a list of every
    # line held a second copy of the file while the items were built.
    for number, line in enumerate(io.BytesIO(raw.removeprefix(_BOM)), start=1):
        if not line.strip():
            continue
        line = line.removesuffix(b"\n")
        item, generated = _parse_line(line, number, source)
        if item.id in seen:
            if generated:  # the same content twice: number the repeats
                count = numbers.get(item.id, 2)
                while f"{item.id}-{count}" in seen:
                    count += 1
                numbers[item.id] = count + 1
                item = attrs.evolve(item, id=f"{item.id}-{count}")
            else:
                raise DatasetError(f"{source} line {number}: duplicate id {item.id!r} "
                                   f"(first used on line {seen[item.id]})")
        # "café" composed (NFC) and decomposed (NFD) are two ids that every report shows
        # alike: the second is a duplicate too (kept as given otherwise, so results match
        # the file's ids byte for byte).
        canonical = unicodedata.normalize("NFC", item.id)
        first = canonical_ids.setdefault(canonical, (item.id, number))
        if first[0] != item.id:
            raise DatasetError(
                f"{source} line {number}: duplicate id {item.id!a} (line {first[1]}'s "
                f"id {first[0]!a} in another Unicode normalization: they look the "
                "same; normalize the ids, e.g. to NFC)")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise DatasetError(f"{source}: the dataset has no items")
    return Dataset(path=source, sha256=content_sha256(raw), items=tuple(items),
                   file_sha256=hashlib.sha256(raw).hexdigest())


def content_sha256(raw: bytes) -> str:
    """The SHA-256 of a dataset's bytes with CRLF line endings as LF and without a UTF-8
    byte-order mark: the same for a file whatever line endings a checkout gave it (a lone
    CR is kept: the parser does not split lines on it). No copy of the whole file: bytes
    without a CR are hashed as they are (after the mark), others a chunk at a time
    (:func:`content_sha256_chunks`)."""
    if b"\r" not in raw:
        return hashlib.sha256(memoryview(raw)[len(_BOM):] if raw.startswith(_BOM)
                              else raw).hexdigest()
    return content_sha256_chunks(raw[start:start + _CHUNK]
                                 for start in range(0, len(raw), _CHUNK))


def content_sha256_chunks(chunks: Iterable[bytes]) -> str:
    """:func:`content_sha256` of the bytes ``chunks`` join to, read one chunk at a time (a
    file's reads): a CR ending a chunk waits for the next one, which may start with its LF;
    the byte-order mark may be split across the first chunks too."""
    digest = hashlib.sha256()
    head = b""  # the first bytes, until they tell whether the file starts with the mark
    started = False
    cr = b""  # a CR that ended the previous chunk
    for chunk in chunks:
        if not started:
            head += chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                continue
            chunk, head, started = head.removeprefix(_BOM), b"", True
        if not chunk:
            continue
        if cr:
            chunk, cr = cr + chunk, b""
        if chunk.endswith(b"\r"):
            chunk, cr = chunk[:-1], b"\r"
        digest.update(chunk.replace(b"\r\n", b"\n"))
    digest.update(head + cr)  # a file shorter than the mark (or no chunk), a last CR
    return digest.hexdigest()


def file_sha256s(path: Path) -> tuple[str, str]:
    """``(sha256, file_sha256)`` of a dataset file (see :class:`Dataset`), read once, a
    chunk at a time."""
    whole = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                whole.update(chunk)
                yield chunk

    return content_sha256_chunks(chunks()), whole.hexdigest()


def _parse_line(line: bytes, number: int, source: str) -> tuple[DatasetItem, bool]:
    """The line's item, and whether its id was made from its content (no ``id`` key)."""
    where = f"{source} line {number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where}: not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise DatasetError(f"{where}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise DatasetError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {_kind(data)}")
    try:  # ``\ud83d`` alone (half an emoji) is valid JSON but no text: nothing could write it
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError:  # read near the limit, deeper than the writer can go from here
        raise DatasetError(f"{where}: invalid JSON: nested too deeply") from None
    except UnicodeEncodeError as exc:
        half = exc.object[exc.start:exc.end]
        raise DatasetError(f"{where}: a string holds a lone surrogate {half!r} (half of a "
                           "UTF-16 pair, not a character)") from None
    unknown = sorted(set(data) - set(DATASET_KEYS))
    if unknown:
        named = ", ".join(repr(key) + did_you_mean(key, DATASET_KEYS) for key in unknown)
        raise DatasetError(f"{where}: unknown key(s) {named}; valid keys: "
                           f"{', '.join(DATASET_KEYS)} (put extra fields in 'metadata')")
    if "input" not in data:
        raise DatasetError(f"{where}: missing 'input' (a string or a list of chat messages)")
    metadata, judge_data = _metadata(data.get("metadata"), where)
    if "slice" in data:
        if not isinstance(data["slice"], str) or not data["slice"]:
            raise DatasetError(f"{where}: 'slice' must be a non-empty string, "
                               f"got {_kind(data['slice'])}")
        metadata["slice"] = data["slice"]
    item = DatasetItem(
        id=_item_id(data, where),
        line=number,
        input=_input(data["input"], where),
        reference=_reference(data.get("reference"), where),
        context=_context(data.get("context"), where),
        metadata=metadata,
        label=_label(data.get("label"), where),
        judge_data=judge_data,
    )
    # Only a made-up id is renumbered on a repeat: a repeated id of the file is an error,
    # even one that looks like a made-up id ("item-1").
    return item, data.get("id") is None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _item_id(data: Mapping[str, Any], where: str) -> str:
    value = data.get("id")
    if value is None:
        # Stable across runs and machines: the hash of the line's content, canonicalised
        # so that whitespace or key order do not change it.
        canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "item-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(f"{where}: 'id' must be a string or an integer, got {_kind(value)}")
    if isinstance(value, str) and not value.strip():
        raise DatasetError(f"{where}: 'id' must not be empty")
    return str(value)


def _input(value: object, where: str) -> str | tuple[Message, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise DatasetError(f"{where}: 'input' is empty")
        return value
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: 'input' must be a string or a non-empty list of chat "
                           f"messages, got {_kind(value)}")
    messages = []
    for index, entry in enumerate(value):
        at = f"{where}: input[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"role", "content"}:
            raise DatasetError(f"{at} must be an object with 'role' and 'content' only")
        if not isinstance(entry.get("content"), str):
            raise DatasetError(f"{at}: 'content' must be a string")
        try:
            messages.append(Message(entry.get("role"), entry["content"]))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{at}: invalid message: {exc}") from None
    return tuple(messages)


def _strings(value: object, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DatasetError(f"{where}: '{key}' must be a string or a list of strings, "
                       f"got {_kind(value)}")


def _reference(value: object, where: str) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    refs = _strings(value, "reference", where)
    if not refs:
        raise DatasetError(f"{where}: 'reference' is an empty list")
    return refs


def _context(value: object, where: str) -> tuple[str, ...]:
    return () if value is None else _strings(value, "context", where)


def _metadata(value: object, where: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The slicing fields (scalars, as text) and the lists and objects (for the judges)."""
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: 'metadata' must be an object, got {_kind(value)}")
    out: dict[str, str] = {}
    structured: dict[str, Any] = {}
    for key, field in value.items():
        if isinstance(field, (dict, list)):
            if _has_non_finite(field):
                raise DatasetError(f"{where}: metadata.{key} holds a number that is not "
                                   "finite (NaN or Infinity)")
            structured[key] = field
            continue
        out[key] = "null" if field is None else (
            json.dumps(field) if not isinstance(field, str) else field)
    return out, structured


def _has_non_finite(value: object) -> bool:
    """Whether a JSON value holds NaN or an infinity (Python reads them; strict JSON, as
    the results file and the lockfile are written, has none). Walked with a stack of its
    own, not by recursion: nesting the JSON reader takes (hundreds deep) is no crash."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


_LARGEST = int(sys.float_info.max)


def _number(value: object, at: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int) and abs(value) <= _LARGEST:
        return float(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise DatasetError(f"{at} must be a finite number or a boolean, got {_kind(value)}")


def _label(value: object, where: str) -> float | dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _number(v, f"{where}: label.{k}") for k, v in value.items()}
    return _number(value, f"{where}: 'label'")
