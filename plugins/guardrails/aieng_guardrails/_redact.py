"""Replace detections with numbered placeholders, keep the mapping, and restore it.

``redact`` turns ``"mail a@b.co"`` into ``"mail <EMAIL_1>"`` and returns the mapping
``{"<EMAIL_1>": "a@b.co"}``; ``restore`` puts the values back. A placeholder that already
occurs in the text is never reused, so ``restore(redact(x)) == x`` holds for any text.
The :class:`Vault` keeps mappings between the input guard and the output guard of one run.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from ._pii import KINDS, PLACEHOLDER_LABELS, Detection, find_pii

__all__ = ["PLACEHOLDER", "Redaction", "Vault", "redact", "redact_texts", "restore"]

#: What a placeholder looks like: ``<EMAIL_1>``.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*)_([0-9]+)>")


class Redaction:
    """The result of :func:`redact`.

    :param text: the text with every detection replaced by its placeholder.
    :param mapping: placeholder -> original value.
    :param detections: what was replaced, with spans in the *original* text.
    """

    __slots__ = ("detections", "mapping", "text")

    def __init__(self, text: str, mapping: dict[str, str],
                 detections: list[Detection]) -> None:
        self.text = text
        self.mapping = mapping
        self.detections = detections


def redact(text: str, kinds: Iterable[str] = KINDS, *, min_entropy: float = 4.0,
           detections: list[Detection] | None = None,
           reserved: Iterable[str] = ()) -> Redaction:
    """Replace personal data and secrets in ``text`` with placeholders.

    The same value gets the same placeholder; numbers count per label from 1, skipping
    any placeholder the text already contains.

    :param kinds: the kinds to redact.
    :param detections: what to replace, when already found (``find_pii``'s result).
    :param reserved: placeholders not to use (those of a mapping still to be restored).
    """
    found = find_pii(text, kinds, min_entropy=min_entropy) if detections is None else detections
    if not found:
        return Redaction(text, {}, [])
    texts, mapping = redact_texts([text], [found], reserved=reserved)
    return Redaction(texts[0], mapping, found)


def redact_texts(texts: Sequence[str], detections: Sequence[Sequence[Detection]], *,
                 reserved: Iterable[str] = (), assigned: Mapping[str, str] | None = None
                 ) -> tuple[list[str], dict[str, str]]:
    """Replace each text's detections with placeholders shared across the texts (the same
    value gets the same placeholder in every text: a conversation's messages).

    :param detections: each text's detections (``find_pii``'s result), in order.
    :param reserved: placeholders not to use.
    :param assigned: placeholders given earlier (placeholder -> value: an agent run's
        earlier steps): a value among them keeps its placeholder, and that placeholder
        found in a text stands for it (the mapping returned holds it).
    :returns: the texts after redaction and the mapping placeholder -> value.
    """
    assigned = dict(assigned or {})
    present = {group for text in texts for group in PLACEHOLDER.findall(text)}
    # The placeholders the texts hold, read once (not each assigned one searched for in
    # each text: an agent run's placeholders times its conversation, at every step).
    in_texts = frozenset(present)
    present.update(m.groups() for p in reserved if (m := PLACEHOLDER.fullmatch(p)))
    counters: dict[str, int] = {}
    by_value: dict[tuple[str, str], str] = {}
    mapping: dict[str, str] = {}
    for given, value in assigned.items():
        if (match := PLACEHOLDER.fullmatch(given)) is not None:
            present.add(match.groups())  # never given to another value
            by_value[(match.group(1), value)] = given
            if match.groups() in in_texts:
                mapping[given] = value
    out: list[str] = []
    for text, found in zip(texts, detections, strict=True):
        pieces: list[str] = []
        at = 0
        for detection in found:
            label = PLACEHOLDER_LABELS[detection.kind]
            key = (label, detection.value)
            placeholder = by_value.get(key)
            if placeholder is None:
                number = counters.get(label, 0) + 1
                while (label, str(number)) in present:
                    number += 1
                counters[label] = number
                placeholder = by_value[key] = f"<{label}_{number}>"
            mapping[placeholder] = detection.value  # an assigned one too: used here
            pieces.append(text[at:detection.start])
            pieces.append(placeholder)
            at = detection.end
        pieces.append(text[at:])
        out.append("".join(pieces))
    return out, mapping


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put the values of ``mapping`` back in place of their placeholders."""
    if not mapping:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


class Vault:
    """Placeholder mappings kept between the guards of one run: bounded and expiring.

    Keys are chosen by the caller (the run id, and a digest of the redacted prompt);
    several keys may name one mapping. A key given two different mappings (two callers
    whose prompts redact alike) is ambiguous: it gives nothing until it expires, so no
    caller gets another's values. Thread-safe (guards may run in worker threads).

    :param max_entries: the most mappings kept; the least recently stored goes first.
    :param ttl: seconds a mapping lives.
    :param clock: the time source, monotonic (the default, :func:`time.monotonic`): the
        entries expire in the order they were stored, which a clock stepping back would
        break (tests pass a fake one).
    """

    def __init__(self, max_entries: int = 1024, ttl: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not 0 < ttl < math.inf:  # NaN too: every mapping would expire at once
            raise ValueError(f"ttl must be a positive, finite number of seconds, got {ttl}")
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        # key -> (expires, mapping); ``None``: ambiguous, two different mappings were put.
        self._entries: OrderedDict[str, tuple[float, dict[str, str] | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                break
            del self._entries[key]

    def put(self, keys: Iterable[str], mapping: Mapping[str, str]) -> None:
        """Add ``mapping`` under each key. A key that holds another mapping becomes
        ambiguous (it gives nothing until it expires): a key is one run's, and two
        mappings under it are two callers' values (outside a run, the same redacted
        prompt), which must never be restored into each other's answers."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            for key in keys:
                held = self._entries.pop(key, None)
                kept: dict[str, str] | None = dict(mapping)
                if held is not None and held[1] != kept:  # an empty mapping is one too
                    kept = None
                self._entries[key] = (now + self.ttl, kept)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, keys: Iterable[str]) -> dict[str, str]:
        """The mapping of the first key that holds one (empty when none does)."""
        with self._lock:
            self._expire(self._clock())
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    return dict(entry[1] or {})  # an ambiguous key gives nothing
        return {}

    def pop(self, keys: Iterable[str]) -> None:
        """Forget the mappings under ``keys`` (an ambiguous key stays so until it
        expires: a caller still waiting on it must not get a later caller's values)."""
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry[1] is not None:
                    del self._entries[key]
