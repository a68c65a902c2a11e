"""Windows and detectors: a reference window frozen from the first N items (or set), a
sliding current window of M items, a check every K items; and the drift monitor holding
one detector per signal, with its metrics."""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import structlog
from aieng_hookspecs import word_chars

from ._options import DriftOptions
from ._reference import FORMAT, VERSION, ReferenceFileError, ReferenceStore, SavedReference
from ._stats import categorical_psi, centroid_permutation_test, ks_2samp, psi

__all__ = ["DriftMonitor", "DriftResult", "Window", "tokenize"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


#: The vocabulary's stand-in for a request without a word (no ``\w+`` token can equal it):
#: a window of only such requests is a distribution to compare, not an empty table.
NO_WORDS = "\x00"


#: How words are told apart (:func:`tokenize`), recorded in the reference file: 2 keeps a
#: word's combining marks in it (files without the mark split words at them).
WORDS = 2


#: The vocabulary's bucket for a request's tokens past its ``vocabulary_size`` most frequent
#: ones (no ``\w+`` token can equal it either).
OTHER_WORDS = "\x01"
#: The most judge metrics watched (``score:NAME`` detectors, those of the reference file
#: included): a metric name that varies per request (an id in it) would otherwise add a
#: window, a file entry and metric series per request. Later names are not watched (one
#: warning); they are not folded into one detector, whose window would mix metrics.
MAX_SCORE_DETECTORS = 100


def _vocabulary(tokens: list[str], most: int | None = None) -> Counter[str]:
    """A request's token counts: its ``most`` most frequent tokens (ties: the first seen;
    ``None``: every token), the others counted together under :data:`OTHER_WORDS`, so that
    a request of many distinct words (a hostile one, a pasted document) keeps a bounded
    table in the windows and the reference file. The PSI counts only the reference's ``vocabulary_size`` most
    frequent tokens as categories anyway."""
    if not tokens:
        return Counter({NO_WORDS: 1})
    counts = Counter(tokens)
    if most is None or len(counts) <= most:
        return counts
    kept = Counter(dict(counts.most_common(most)))
    kept[OTHER_WORDS] = len(tokens) - sum(kept.values())
    return kept


def _tally(counts: Iterable[Counter[str]]) -> Counter[str]:
    # One table updated in place: linear in the window's tokens (``sum(counts,
    # Counter())`` copies the growing total at every text, quadratic in the window).
    total: Counter[str] = Counter()
    for table in counts:
        total.update(table)
    return total


@functools.cache
def _token_pattern() -> re.Pattern[str]:
    """A word: a run of ``\\w`` characters and combining marks (``word_chars``)."""
    return re.compile(word_chars() + "+")


def tokenize(text: str) -> list[str]:
    """The lower-cased words of a text (Unicode NFC; runs of ``\\w`` characters and
    combining marks): the vocabulary and length unit. A word whose letters carry marks
    (हिन्दी, a decomposed "café") is one token, whether the text came composed or not."""
    return [word.lower() for word in
            _token_pattern().findall(unicodedata.normalize("NFC", text))]


@attrs.frozen
class DriftResult:
    """One check of one detector.

    :param detector: ``length``, ``vocabulary``, ``embedding`` or ``score:NAME``.
    :param method: ``ks+psi``, ``psi`` or ``centroid-permutation``.
    :param statistic: the KS statistic, the PSI (vocabulary) or the centroid distance.
    :param p_value: the p-value, when the method has one.
    :param psi: the PSI, when the method has one.
    :param fired: whether the thresholds say drift.
    :param reason: which threshold was crossed (empty when not fired).
    :param reference_size: items in the reference window.
    :param window_size: items in the current window.
    """

    detector: str
    method: str
    statistic: float
    p_value: float | None
    psi: float | None
    fired: bool
    reason: str
    reference_size: int
    window_size: int


class Window(Generic[T]):
    """A frozen reference window and a sliding current window.

    The first ``reference_size`` items fill the reference, which then freezes; later items
    slide through the current window of ``window_size``. :meth:`due` says when a check is
    due: the reference is frozen, the current window full, and ``check_every`` items came
    since the last check.
    """

    def __init__(self, reference_size: int, window_size: int, check_every: int) -> None:
        self.reference_size = reference_size
        self.check_every = check_every
        self.reference: list[T] = []
        self.frozen = False
        self.current: deque[T] = deque(maxlen=window_size)
        self.since_check = 0

    def add(self, item: T) -> None:
        """Add one item to the reference (until frozen) or to the current window."""
        if not self.frozen:
            self.reference.append(item)
            self.frozen = len(self.reference) >= self.reference_size
            return
        self.current.append(item)
        self.since_check += 1

    def set_reference(self, items: Iterable[T]) -> None:
        """Freeze the reference on ``items`` and empty the current window."""
        reference = list(items)
        if len(reference) < 2:
            raise ValueError("a reference window needs at least 2 items")
        self.reference, self.frozen = reference, True
        self.current.clear()
        self.since_check = 0

    def reset(self) -> None:
        """Forget the reference and the current window: the next items fill a new
        reference."""
        self.reference, self.frozen = [], False
        self.current.clear()
        self.since_check = 0

    def due(self) -> bool:
        """Whether a check is due."""
        return (self.frozen and len(self.current) == self.current.maxlen
                and self.since_check >= self.check_every)


def _fires(options: DriftOptions, p_value: float, value: float) -> tuple[bool, str]:
    low_p = p_value < options.alpha
    high_psi = value >= options.psi_threshold
    fired = {"any": low_p or high_psi, "both": low_p and high_psi, "ks": low_p,
             "psi": high_psi}[options.fire_on]
    if not fired:
        return False, ""
    parts = [f"KS p-value {_shown(p_value, options.alpha)}"] if low_p else []
    if high_psi:
        parts.append(f"PSI {_shown(value, options.psi_threshold, below=False)}")
    return True, "; ".join(parts)


def _shown(value: float, bound: float, *, below: bool = True) -> str:
    """``"value < bound"`` (``below``) or ``"value >= bound"``, true of the numbers as
    shown: 3 significant digits, more where 3 would round the value onto (or across) the
    bound (``0.0099996 < 0.01``, not ``0.01 < 0.01``)."""
    limit = f"{bound:g}" if float(f"{bound:g}") == bound else repr(float(bound))
    for digits in range(3, 18):
        shown = f"{value:.{digits}g}"
        if (float(shown) < float(limit)) if below else (float(shown) >= float(limit)):
            break
    return f"{shown} {'<' if below else '>='} {limit}"


class DriftMonitor:
    """Drift detection without a pipeline: feed it texts, embeddings and scores.

    Each detector has its own :class:`Window`. ``observe_*`` adds an item and returns the
    checks it triggered (fired or not); ``on_drift`` is called with each fired one.

    With ``options.reference_path``, the frozen reference windows are saved to that file
    whenever one freezes or :meth:`set_reference` sets one, and read back by
    :meth:`load_reference` (see :mod:`aieng_drift._reference` for the format). A save of
    a window frozen by ``observe_*`` that fails is logged (``drift.reference_save_failed``)
    and retried at the next item, so a full disk does not stop the checks.

    :param options: the typed options.
    :param on_drift: called with every fired :class:`DriftResult`.
    :param defer_io: with ``options.reference_path``, leave the file's reading and the
        saves of windows that freeze to the caller (the ``drift`` component does both in a
        worker thread: :meth:`ReferenceStore.read` then :meth:`adopt`, and
        :meth:`claim_save` when :attr:`unsaved`); ``False``: read it now
        (:meth:`load_reference`) and save a window as it freezes.
    :raises ReferenceFileError: when reading, for a file that cannot be used.
    """

    def __init__(self, options: DriftOptions | None = None, *,
                 on_drift: Callable[[DriftResult], None] | None = None,
                 defer_io: bool = False) -> None:
        self.options = options if options is not None else DriftOptions()
        self.on_drift = on_drift
        self.windows: dict[str, Window[Any]] = {}
        #: the last check of each detector
        self.last: dict[str, DriftResult] = {}
        self.checks: Counter[str] = Counter()
        self.detections: Counter[str] = Counter()
        path = self.options.reference_path
        #: the reference file (``None`` without ``reference_path``)
        self.store = ReferenceStore(path) if path is not None else None
        #: a reference changed since the last save (with a store)
        self.unsaved = False
        #: the detectors whose reference came from the file
        self.loaded: set[str] = set()
        self._generation = 0  # reference changes so far: orders the file's writes
        # The file's windows of detectors that do not run: kept in the file, so turning a
        # detector off for a while does not lose its reference.
        self._dormant: dict[str, list[Any]] = {}
        self._dormant_model: str | None = None  # the embedding_model of a dormant window
        self._capped = False  # drift.score_metrics_capped was said
        self.defer_io = defer_io
        if self.store is not None and not defer_io:
            self.load_reference()

    def window(self, detector: str) -> Window[Any]:
        """The detector's window (created empty)."""
        found = self.windows.get(detector)
        if found is None:
            o = self.options
            found = self.windows[detector] = Window(o.reference_size, o.window_size,
                                                    o.check_every)
        return found

    def _enabled(self, kind: str) -> bool:
        return kind in self.options.detectors

    # -- observing -----------------------------------------------------------------------

    def observe_text(self, text: str, *, check: bool = True) -> list[DriftResult]:
        """Add one request text to the length and vocabulary detectors.

        :param check: run the checks that fall due (``False``: leave them to :meth:`due`).
        """
        tokens = tokenize(text)
        results: list[DriftResult] = []
        if self._enabled("length"):
            results += self._add("length", len(tokens), check)
        if self._enabled("vocabulary"):
            results += self._add("vocabulary",
                                 _vocabulary(tokens, self.options.vocabulary_size), check)
        return results

    def observe_embedding(self, vector: Sequence[float], *, check: bool = True
                          ) -> list[DriftResult]:
        """Add one request embedding to the embedding detector.

        :raises ValueError: when the vector is empty, holds NaN or infinity, or has
            another length than the detector's earlier vectors (not added).
        """
        if not self._enabled("embedding"):
            return []
        row = [float(x) for x in vector]
        if not row or not all(math.isfinite(x) for x in row):
            # refused here: kept, it would make every later check of the detector fail
            raise ValueError(f"an embedding must be a non-empty vector of finite numbers, "
                             f"got {list(vector)[:8]!r}")
        window = self.window("embedding")
        earlier = window.reference[0] if window.reference else None
        if earlier is not None and len(earlier) != len(row):
            where = (f"; the reference was loaded from {str(self.store.path)!r}: "
                     "reset_reference('embedding') or delete the file to take a new one"
                     if self.store is not None and "embedding" in self.loaded else "")
            raise ValueError(f"an embedding of {len(row)} dimensions, after ones of "
                             f"{len(earlier)} (another embedder?): not added{where}")
        return self._add("embedding", row, check)

    def observe_score(self, name: str, value: float, *, check: bool = True
                      ) -> list[DriftResult]:
        """Add one judge score of metric ``name`` to that metric's detector.

        :raises ValueError: when the score is NaN or infinite (not added).
        """
        if not self._enabled("score"):
            return []
        if not math.isfinite(float(value)):
            # refused here: kept, it would make every later check of the detector fail
            raise ValueError(f"score {name!r} must be a finite number, got {value!r}")
        detector = f"score:{name}"
        if detector not in self.windows and self._score_detectors() >= MAX_SCORE_DETECTORS:
            if not self._capped:  # said once: a name per request would say it per request
                self._capped = True
                log.warning("drift.score_metrics_capped", metric=name,
                            limit=MAX_SCORE_DETECTORS,
                            hint=f"{MAX_SCORE_DETECTORS} judge metrics are watched already: "
                                 "later metric names are not (give judges fixed metric "
                                 "names, without a per-request id)")
            return []
        return self._add(detector, float(value), check)

    def _score_detectors(self) -> int:
        return sum(name.startswith("score:") for name in self.windows)

    def _add(self, detector: str, item: Any, check: bool) -> list[DriftResult]:
        window = self.window(detector)
        frozen = window.frozen
        window.add(item)
        if window.frozen and not frozen:
            self._reference_changed()
        if self.unsaved and not self.defer_io:
            try:
                self.save_reference()
            except OSError as error:  # the checks go on; the next item retries the save
                log.warning("drift.reference_save_failed", path=str(self.options.reference_path),
                            error=str(error))
        if not check or not window.due():
            return []
        return [self.check_one(detector)]

    def due(self) -> list[str]:
        """The detectors whose check is due (see :meth:`Window.due`)."""
        return [name for name, window in sorted(self.windows.items()) if window.due()]

    def set_reference(self, *, texts: Iterable[str] | None = None,
                      embeddings: Iterable[Sequence[float]] | None = None,
                      scores: Mapping[str, Iterable[float]] | None = None) -> None:
        """Freeze reference windows explicitly (the current windows start empty); those of
        detectors that do not run are checked but not set. With ``reference_path``, the
        file is written now.

        :raises ValueError: when a window would get fewer than 2 items, a score or an
            embedding component is NaN or infinite, or the embeddings are empty or of
            several lengths (nothing is changed: kept, such a reference would make every
            later check of its detector fail).
        :raises OSError: when the file cannot be written (the windows are set; the old
            file is kept; :meth:`save_reference` retries).
        """
        references: dict[str, list[Any]] = {}
        if texts is not None:
            token_lists = [tokenize(text) for text in texts]
            references["length"] = [len(t) for t in token_lists]
            most = self.options.vocabulary_size
            references["vocabulary"] = [_vocabulary(t, most) for t in token_lists]
        if embeddings is not None:
            rows = [[float(x) for x in row] for row in embeddings]
            if any(not row or len(row) != len(rows[0]) for row in rows):
                raise ValueError("reference embeddings must be non-empty vectors of one "
                                 f"length, got lengths {sorted({len(r) for r in rows})}")
            if not all(math.isfinite(x) for row in rows for x in row):
                raise ValueError("reference embeddings must hold finite numbers only")
            references["embedding"] = rows
        for name, values in (scores or {}).items():
            floats = [float(x) for x in values]
            if not all(math.isfinite(x) for x in floats):
                raise ValueError(f"reference scores {name!r} must be finite numbers")
            references[f"score:{name}"] = floats
        for detector, items in references.items():
            if len(items) < 2:
                raise ValueError(f"a reference window needs at least 2 items ({detector}: "
                                 f"{len(items)})")
        for detector, items in references.items():
            if self._enabled(detector.partition(":")[0]):  # a window is a series in /metrics
                self.window(detector).set_reference(items)
                self.loaded.discard(detector)
        self._reference_changed()
        if self.store is not None:
            self.save_reference()

    # -- the reference file --------------------------------------------------------------

    def _reference_changed(self) -> None:
        self._generation += 1
        self.unsaved = self.store is not None

    def _document(self) -> dict[str, Any]:
        o = self.options
        windows = dict(self._dormant)
        model = self._dormant_model if "embedding" in windows else o.embedding_model
        for name, window in sorted(self.windows.items()):
            if window.frozen:
                windows[name] = list(window.reference)
        return {"format": FORMAT, "version": VERSION,
                "options": {"detectors": list(o.detectors), "reference_size": o.reference_size,
                            "embedding_model": model, "words": WORDS},
                "windows": windows}

    def claim_save(self) -> Callable[[], bool] | None:
        """Start a save of the frozen reference windows: take a copy of them now and
        return the write, to run elsewhere (a worker thread); ``None`` without
        ``reference_path``. The write returns ``False`` when a newer save or a reset got
        there first; should it fail, set :attr:`unsaved` again to retry later."""
        if self.store is None:
            return None
        self.unsaved = False
        return functools.partial(self.store.write, self._generation, self._document())

    def save_reference(self) -> bool:
        """Write the frozen reference windows to ``reference_path`` now (atomically: temp
        file, fsync, rename); ``False`` without ``reference_path``.

        :raises OSError: when the file cannot be written (the old file is kept).
        """
        write = self.claim_save()
        if write is None:
            return False
        try:
            write()
        except BaseException:
            self.unsaved = True
            raise
        return True

    def load_reference(self) -> bool:
        """Read ``reference_path`` and freeze the windows saved there (:meth:`adopt`);
        ``False`` when there is no path or no file yet.

        :raises ReferenceFileError: when the file cannot be read, is corrupt, of another
            format or a newer version, or holds an embedding window of another
            ``embedding_model`` (nothing is changed).
        """
        if self.store is None:
            return False
        return self.adopt(self.store.read())

    def adopt(self, saved: SavedReference | None) -> bool:
        """Freeze the windows of a file read by :meth:`ReferenceStore.read` (those of the
        detectors that run; the others are kept for the file) and empty their current
        windows; ``False`` for ``None`` (no file). The other detectors' windows are left
        as they are (a detector added since the file was written takes its reference
        from the coming items).

        :raises ReferenceFileError: for an embedding window of another
            ``embedding_model`` (nothing is changed).
        """
        if saved is None:
            log.info("drift.reference_missing", path=str(self.store.path)
                     if self.store is not None else None)
            return False
        o, written = self.options, saved.options
        if ("embedding" in saved.windows and self._enabled("embedding")
                and written.get("embedding_model") != o.embedding_model):
            raise ReferenceFileError(saved.path, (
                f"its embedding window comes from embedding_model "
                f"{written.get('embedding_model')!r}, this monitor embeds with "
                f"{o.embedding_model!r}: remove the file's \"embedding\" window (or the "
                "file) to take a new reference"))
        for detector, items in saved.windows.items():
            if self._enabled(detector.partition(":")[0]):
                self.window(detector).set_reference(items)
                self.loaded.add(detector)
                self._dormant.pop(detector, None)
            else:
                self._dormant[detector] = items
                if detector == "embedding":
                    self._dormant_model = written.get("embedding_model")
        words = sorted({"length", "vocabulary"} & self.loaded & set(saved.windows))
        if words and written.get("words") != WORDS:
            log.warning("drift.reference_words_changed", path=str(saved.path),
                        detectors=words,
                        hint="the file was written by an aieng-drift that split words at "
                             "combining marks (Indic scripts, decomposed accents): if your "
                             "requests hold such words, reset_reference('length', "
                             "'vocabulary') takes new references")
        if written.get("reference_size", o.reference_size) != o.reference_size:
            log.warning("drift.reference_size_changed", path=str(saved.path),
                        saved=written.get("reference_size"), configured=o.reference_size,
                        hint="the saved windows are used; reset_reference() takes new ones")
        log.info("drift.reference_loaded", path=str(saved.path),
                 detectors=sorted(self.loaded), kept=sorted(self._dormant))
        return True

    def reset_reference(self, *detectors: str) -> None:
        """Take a new reference deliberately: forget the reference (and current window)
        of the given detectors (``"length"``, ``"score:faithfulness"``; none: all), so
        the next N items freeze new ones, and drop their last check. With
        ``reference_path``, resetting all deletes the file; resetting some rewrites it
        without them.

        :raises ValueError: for a name that is no detector's window.
        :raises OSError: when the file cannot be rewritten or deleted.
        """
        for name in detectors:
            if name not in ("length", "vocabulary", "embedding") and not name.startswith(
                    "score:"):
                raise ValueError(f"no detector window {name!r} (length, vocabulary, "
                                 "embedding or score:NAME)")
        names = set(detectors) or set(self.windows) | set(self._dormant)
        for name in names:
            if name in self.windows:
                self.windows[name].reset()
            self._dormant.pop(name, None)
            self.last.pop(name, None)
        self.loaded -= names
        self._reference_changed()
        if self.store is None:
            return
        if detectors:
            self.save_reference()
        else:
            self.store.delete(self._generation)
            self.unsaved = False

    # -- checking ------------------------------------------------------------------------

    def check_one(self, detector: str) -> DriftResult:
        """Check one detector now (its reference frozen, its current window non-empty).

        :raises ValueError: when the detector has no frozen reference or no current items.
        """
        return self.record(self.compute(*self.claim(detector)))

    def claim(self, detector: str) -> tuple[str, list[Any], list[Any]]:
        """Start a check of ``detector``: copy its windows and restart its count of new
        items, so the check can run elsewhere (a worker thread: :meth:`compute`) while
        items keep arriving, without a second caller finding the same check due.

        :returns: the detector, a copy of its reference and of its current window.
        :raises ValueError: when the detector has no frozen reference or no current items.
        """
        window = self.window(detector)
        if not window.frozen or not window.current:
            raise ValueError(f"detector {detector!r} needs a frozen reference and at least "
                             f"one current item ({len(window.reference)} reference, "
                             f"{len(window.current)} current)")
        window.since_check = 0
        return detector, list(window.reference), list(window.current)

    def compute(self, detector: str, reference: list[Any], current: list[Any]
                ) -> DriftResult:
        """The check of ``detector`` over the given windows (CPU work; changes nothing)."""
        o = self.options
        sizes = {"reference_size": len(reference), "window_size": len(current)}
        if detector == "vocabulary":
            value = categorical_psi(_tally(reference), _tally(current),
                                    top=o.vocabulary_size, epsilon=o.epsilon)
            fired = value >= o.psi_threshold
            reason = f"PSI {_shown(value, o.psi_threshold, below=False)}" if fired else ""
            return DriftResult(detector, "psi", value, None, value, fired, reason, **sizes)
        if detector == "embedding":
            distance, p_value = centroid_permutation_test(
                reference, current, permutations=o.permutations, seed=o.seed)
            fired = p_value < o.alpha and distance >= o.min_distance
            reason = (f"permutation p-value {_shown(p_value, o.alpha)} at cosine distance "
                      f"{distance:.3g}") if fired else ""
            return DriftResult(detector, "centroid-permutation", distance, p_value, None,
                               fired, reason, **sizes)
        ks = ks_2samp(reference, current)
        value = psi(reference, current, bins=o.bins, epsilon=o.epsilon)
        fired, reason = _fires(o, ks.p_value, value)
        return DriftResult(detector, "ks+psi", ks.statistic, ks.p_value, value, fired,
                           reason, **sizes)

    def record(self, result: DriftResult) -> DriftResult:
        """Count a computed check, keep it as the detector's last, call ``on_drift`` when
        it fired; returns it."""
        detector = result.detector
        self.last[detector] = result
        self.checks[detector] += 1
        if result.fired:
            self.detections[detector] += 1
            if self.on_drift is not None:
                self.on_drift(result)
        return result

    def check(self) -> list[DriftResult]:
        """Check every detector that has a frozen reference and current items."""
        return [self.check_one(name) for name, window in sorted(self.windows.items())
                if window.frozen and window.current]

    # -- metrics -------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict[str, float]]:
        """Gauges and counters by metric name, then detector.

        ``aieng_drift_psi``, ``aieng_drift_ks_statistic``, ``aieng_drift_p_value``,
        ``aieng_drift_cosine_distance`` (from each detector's last check, where the method
        has the value), ``aieng_drift_detected`` (1 when the last check fired, else 0),
        ``aieng_drift_checks_total`` and ``aieng_drift_detections_total`` (counters),
        ``aieng_drift_window_items`` (items in the current window).
        """
        out: dict[str, dict[str, float]] = {
            "aieng_drift_psi": {}, "aieng_drift_ks_statistic": {}, "aieng_drift_p_value": {},
            "aieng_drift_cosine_distance": {}, "aieng_drift_detected": {},
            "aieng_drift_checks_total": {}, "aieng_drift_detections_total": {},
            "aieng_drift_window_items": {}}
        for name, window in sorted(self.windows.items()):
            out["aieng_drift_window_items"][name] = float(len(window.current))
            out["aieng_drift_checks_total"][name] = float(self.checks[name])
            out["aieng_drift_detections_total"][name] = float(self.detections[name])
            last = self.last.get(name)
            if last is None:
                continue
            out["aieng_drift_detected"][name] = 1.0 if last.fired else 0.0
            if last.psi is not None:
                out["aieng_drift_psi"][name] = last.psi
            if last.p_value is not None:
                out["aieng_drift_p_value"][name] = last.p_value
            if last.method == "ks+psi":
                out["aieng_drift_ks_statistic"][name] = last.statistic
            elif last.method == "centroid-permutation":
                out["aieng_drift_cosine_distance"][name] = last.statistic
        return out

    def prometheus_text(self, labels: Mapping[str, str] | None = None) -> str:
        """:meth:`metrics` in the Prometheus text exposition format (version 0.0.4).

        :param labels: extra labels on every sample (``{"pipeline": "qa"}``).
        """
        return prometheus_text(self.metrics(), labels)


_HELP = {
    "aieng_drift_psi": "Population stability index of the last check",
    "aieng_drift_ks_statistic": "Kolmogorov-Smirnov statistic of the last check",
    "aieng_drift_p_value": "p-value of the last check",
    "aieng_drift_cosine_distance": "Cosine distance between window centroids",
    "aieng_drift_detected": "1 when the last check found drift",
    "aieng_drift_checks_total": "Checks run",
    "aieng_drift_detections_total": "Checks that found drift",
    "aieng_drift_window_items": "Items in the current window",
}


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(value: str) -> str:
    # A lone surrogate (a JSON "\ud800" escape in a name) as U+FFFD: no UTF-8 text holds
    # one, and the whole exposition (the gateway's /metrics) could not be encoded.
    value = _SURROGATE.sub("\ufffd", value)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """A sample value as the text format spells it (``NaN``, ``+Inf``, ``-Inf``; numpy
    scalars as plain numbers)."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)


def prometheus_text(metrics: Mapping[str, Mapping[str, float]],
                    labels: Mapping[str, str] | None = None) -> str:
    """Render ``{metric: {detector: value}}`` as Prometheus text (``# HELP``, ``# TYPE``,
    one sample per detector with a ``detector`` label; metrics without samples are left
    out).

    :raises ValueError: for an extra label name the text format does not allow (or one
        starting with ``__``, reserved), or an extra ``detector`` label.
    """
    for name in labels or {}:
        if not _LABEL_NAME.match(name) or name.startswith("__") or name == "detector":
            raise ValueError(f"invalid extra Prometheus label name {name!r}")
    extra = "".join(f',{k}="{_escape(v)}"' for k, v in sorted((labels or {}).items()))
    lines: list[str] = []
    for metric, samples in metrics.items():
        if not samples:
            continue
        kind = "counter" if metric.endswith("_total") else "gauge"
        lines.append(f"# HELP {metric} {_HELP.get(metric, metric)}")
        lines.append(f"# TYPE {metric} {kind}")
        for detector, value in sorted(samples.items()):
            lines.append(f'{metric}{{detector="{_escape(detector)}"{extra}}} {_number(value)}')
    return "\n".join(lines) + ("\n" if lines else "")
