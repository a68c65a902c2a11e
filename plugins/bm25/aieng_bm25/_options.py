"""The typed options of the ``bm25`` component."""

from __future__ import annotations

import math

import attrs

__all__ = ["ANALYZER", "ANALYZERS", "MEMORY", "SCORERS", "BM25Options"]

#: The ``path`` that asks for an index held in RAM, gone with the component.
MEMORY = ":memory:"

#: The analyzers an index can be made with, newest first (see _index._split_cjk). The name
#: is written into the index's schema: an index keeps the analyzer it was made with.
ANALYZERS = ("aieng_v2", "aieng_en_v1")
#: The analyzer of a new index by default: English words, and Chinese, Japanese and Korean
#: cut into characters.
ANALYZER = ANALYZERS[0]

# tantivy gives each indexing thread a share of the writer's heap and refuses less than
# 15 MiB per thread or 4 GiB or more per thread (its MEMORY_BUDGET_NUM_BYTES_MIN / _MAX).
_MIN_HEAP_MB_PER_THREAD = 15
_MAX_HEAP_MB_PER_THREAD = 4095
# A boost beyond this adds nothing a user could want and risks float32 overflow in scores.
_MAX_TITLE_BOOST = 1000.0


def _path(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(
            f"{attribute.name} must name the index folder (created when missing), or be "
            f"{MEMORY!r} for an index held in memory that is lost when the component closes")
    if "\x00" in value:
        raise ValueError(f"{attribute.name} must not contain a NUL character")


def _title_boost(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not 0.0 <= value <= _MAX_TITLE_BOOST:
        raise ValueError(
            f"{attribute.name} must be a number from 0 to {_MAX_TITLE_BOOST:g}, got {value!r}")


def _count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 (off) or more, got {value!r}")


#: The search engines: tantivy's own, or precomputed BM25 term weights (see _impacts).
SCORERS = ("tantivy", "impacts")


class _OneOf:
    """Validator: a string among ``choices`` (the error lists them)."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
        if value not in self.choices:
            raise ValueError(f"{attribute.name} must be one of "
                             f"{', '.join(map(repr, self.choices))}, got {value!r}")


_scorer = _OneOf(SCORERS)
_analyzer = _OneOf(ANALYZERS)


def _lock_timeout(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        unit = " (the unit is always seconds: write the number alone)" \
            if isinstance(value, str) else ""
        raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}{unit}")
    if not 0.0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number of seconds of at least 0 "
                         f"(0: fail at once when another writer holds the index), got "
                         f"{value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


@attrs.frozen
class BM25Options:
    """Options of the ``bm25`` retriever.

    BM25's ``k1`` and ``b`` are not options: tantivy fixes them at ``k1 = 1.2`` and
    ``b = 0.75`` and its Python binding offers no way to change them.

    :param path: the folder of the index, created (with its parents) when missing; an
        existing tantivy index there is opened and kept. ``":memory:"`` keeps the index in
        RAM instead, for tests and throw-away experiments: it is lost when the component
        is garbage-collected. There is no default, so that no pipeline loses its index by
        forgetting to name a folder.
    :param title_boost: weight of a match in the title relative to one in the text (both
        score with BM25 over their own field); ``0`` searches the text only.
    :param writer_heap_mb: the indexing memory budget in MiB, shared by the writer's
        threads; at least 15 per thread. A larger budget makes fewer, larger segments.
    :param writer_threads: the indexing threads.
    :param document_cache: the most documents whose stored fields (id, text, title,
        metadata JSON) are kept in RAM, so that a hit does not read and decode tantivy's
        document store; filled as documents are written or first returned, emptied on
        :meth:`close`. About the documents' text size plus ~300 bytes each. ``0`` turns it
        off (each hit reads the store: ~5 µs a hit more).
    :param scorer: ``"tantivy"`` (tantivy's BM25 search) or ``"impacts"``: every term's
        BM25 weight per document precomputed in RAM from the committed index, with exact
        document lengths, and summed per query (see the README); searches with filters
        still go to tantivy.
    :param lock_timeout: seconds a write (or the making of a new index) waits for another
        process's writer to release the index folder before it fails with
        ``IndexLockedError``; ``0``: not at all.
    :param analyzer: the analyzer a *new* index is made with: ``"aieng_v2"`` (English
        words as ``"aieng_en_v1"`` cuts them, and every Chinese, Japanese or Korean
        character a term of its own) or ``"aieng_en_v1"`` (words only). An existing index
        keeps the analyzer it was made with, whatever this says: its terms were cut by it.
    """

    path: str = attrs.field(validator=_path)
    title_boost: float = attrs.field(default=1.0, validator=_title_boost)
    writer_heap_mb: int = attrs.field(default=64, validator=_positive_int)
    writer_threads: int = attrs.field(default=1, validator=_positive_int)
    document_cache: int = attrs.field(default=100_000, validator=_count)
    scorer: str = attrs.field(default="tantivy", validator=_scorer)
    analyzer: str = attrs.field(default=ANALYZER, validator=_analyzer)
    lock_timeout: float = attrs.field(default=5.0, validator=_lock_timeout)

    def __attrs_post_init__(self) -> None:
        per_thread = self.writer_heap_mb / self.writer_threads
        if per_thread < _MIN_HEAP_MB_PER_THREAD:
            raise ValueError(
                f"writer_heap_mb must give each of the {self.writer_threads} writer thread(s) "
                f"at least {_MIN_HEAP_MB_PER_THREAD} MiB (tantivy's minimum); got "
                f"{self.writer_heap_mb} MiB: raise writer_heap_mb to at least "
                f"{_MIN_HEAP_MB_PER_THREAD * self.writer_threads} or lower writer_threads")
        if per_thread > _MAX_HEAP_MB_PER_THREAD:
            raise ValueError(
                f"writer_heap_mb must give each writer thread less than 4 GiB (tantivy's "
                f"maximum); got {self.writer_heap_mb} MiB for {self.writer_threads} thread(s)")
