"""ONNX Runtime sessions and the encoder loop: tokenize, batch by length, pool, normalize."""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aieng_transformers._text import clean

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one engine folder, unlocked
    fcntl = None  # type: ignore[assignment]

from ._options import PROVIDERS

__all__ = ["ENCODE_CHUNK", "PASS_COST", "OnnxEncoder", "batch_bounds", "engine_slot",
           "nvidia_driver", "open_session", "shared_session", "tensorrt_version"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]

log = structlog.get_logger(__name__)

#: What one more forward pass costs, in padded tokens, when cutting batches: high enough
#: that batches stay close to ``batch_size`` (tiny batches run the GEMMs less well), low
#: enough that a batch is cut where its longest text would pad many short ones.
PASS_COST = 64
#: The most texts of one call tokenized and padded at once: a longer call is encoded in
#: slices of this many, each sorted and cut into batches on its own, so its memory (the
#: tokenizer's encodings, ~170 bytes a token, and the padded inputs) stays that of one
#: slice however many texts it holds. Slices this long lose almost nothing to sorting
#: (fp32 vectors do not depend on the cuts).
ENCODE_CHUNK = 4096


def batch_bounds(lengths: Sequence[int], batch_size: int,
                 pass_cost: int = PASS_COST) -> list[tuple[int, int]]:
    """Cut texts sorted by token count (longest first) into batches of at most
    ``batch_size``, as ``(start, stop)`` index pairs, so that the padded tokens (each
    batch pads to its first, longest text) plus ``pass_cost`` per batch are the fewest.

    Dynamic programming over the cut points, ``O(len(lengths) * batch_size)``; with
    ``pass_cost`` 0 no token is padded, with ``pass_cost`` large the batches are the
    fewest possible.
    """
    n = len(lengths)
    best = [0] * (n + 1)
    cut = [0] * (n + 1)
    for stop in range(1, n + 1):
        chosen, cost = -1, 0
        for start in range(max(0, stop - batch_size), stop):
            value = best[start] + (stop - start) * lengths[start] + pass_cost
            if chosen < 0 or value < cost:
                chosen, cost = start, value
        best[stop], cut[stop] = cost, chosen
    bounds = []
    stop = n
    while stop > 0:
        bounds.append((cut[stop], stop))
        stop = cut[stop]
    return bounds[::-1]


#: The providers that need an NVIDIA GPU and its driver.
GPU_PROVIDERS = frozenset({"tensorrt", "cuda"})


@functools.cache
def nvidia_driver() -> bool:
    """Whether the NVIDIA driver's CUDA library loads here (``libcuda.so.1``, on Windows
    ``nvcuda.dll``): without it no GPU provider can start, whatever the onnxruntime build
    offers. Asked once per process."""
    import ctypes

    for name in ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


#: The distributions that install TensorRT's libraries, the pip ways.
_TENSORRT_DISTRIBUTIONS = ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs",
                           "tensorrt")


def tensorrt_version() -> str:
    """The version of the TensorRT libraries installed by pip (``tensorrt-cu12-libs``
    and the like), or ``system`` when none is (libraries from the system's packages)."""
    import importlib.metadata

    for name in _TENSORRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "system"


def open_session(model: Path, *, providers: Sequence[str], threads: int,
                 cache: Path | None = None) -> Any:
    """An ``InferenceSession`` on ``model`` trying ``providers`` (option names) in order;
    blocking. What it really got is ``session.get_providers()``: ONNX Runtime drops a
    provider whose libraries (CUDA, cuDNN, TensorRT) or device are missing. On a machine
    without the NVIDIA driver (:func:`nvidia_driver`) the GPU providers are not asked for
    at all, so ONNX Runtime prints no error about libraries it could never load.

    :param cache: where TensorRT keeps its engines (rebuilding one takes minutes), in
        ``cache/tensorrt/<the model's folder name>/ort<version>-trt<version>/slot-<n>``:
        an export's folder name carries its key, ONNX Runtime would load an engine of
        another ONNX Runtime or TensorRT (:func:`tensorrt_version`) as its own, and each
        live session has a slot of its own (:func:`engine_slot`).
    """
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    skipped: list[str] = []
    held: int | None = None
    for name in providers:
        full = PROVIDERS[name]
        if full not in available:
            continue
        if name in GPU_PROVIDERS and not nvidia_driver():
            skipped.append(full)
            continue
        if name == "tensorrt" and cache is not None:
            # One folder per export: ONNX Runtime names an engine by the file's name and
            # the graph's value names, never by its weights, so two models of one
            # architecture (or a model changed since: a new export folder) would share an
            # engine, and one would run with the other's weights.
            # And one per ONNX Runtime and TensorRT: ONNX Runtime neither names nor checks
            # an engine by the versions that built it (one of another TensorRT fails to
            # deserialize, failing the session).
            if any(isinstance(c, tuple) for c in chosen):  # listed twice: one slot
                continue
            engines, held = engine_slot(cache / "tensorrt" / model.parent.name /
                                        f"ort{ort.__version__}-trt{tensorrt_version()}")
            chosen.append((full, {"trt_engine_cache_enable": True,
                                  "trt_engine_cache_path": str(engines)}))
        else:
            chosen.append(full)
    if skipped:
        log.info("onnx.gpu_providers_skipped", providers=skipped,
                 reason="no NVIDIA driver here (libcuda does not load)")
    if not chosen:
        chosen.append(PROVIDERS["cpu"])
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=chosen)
    except BaseException:
        if held is not None:
            os.close(held)
        raise
    if held is not None:
        _hold_while_alive(session, held)
    return session


def shared_session(model: Path, *, providers: Sequence[str], threads: int,
                   cache: Path | None = None, share: bool = True) -> Any:
    """:func:`open_session`'s session, one per process for one file (its path, size and
    modification time, and its external data's) and the same ``providers``, ``threads``
    and ``cache``: the live one when a component of this process has it open, else a new
    one (held weakly: it closes when the last component lets go). ``InferenceSession.run``
    is thread-safe, and the components keep their tokenizers and I/O bindings apart.
    ``share`` false: a new session, private."""
    from aieng_transformers._shared import files_identity, shared

    files = [f for f in model.parent.iterdir()
             if f.name == model.name or (f.name.startswith(model.name) and f.is_file())]
    key = ("onnx-session", files_identity(files), tuple(providers), threads,
           None if cache is None else str(cache))
    return shared(key, lambda: open_session(model, providers=providers, threads=threads,
                                            cache=cache), share=share)


#: The engine folders of one export and version pair: ``slot-<n>`` under it.
_SLOT = "slot-{}"


def engine_slot(engines: Path) -> tuple[Path, int | None]:
    """A folder under ``engines`` for one session's TensorRT engines, ``slot-<n>``: the
    first whose lock file (``.slot-<n>.lock``) no other session holds, with the descriptor
    holding that lock (``None``: unlocked, without ``fcntl`` or where the lock file cannot
    be made: a read-only cache, which nobody writes to).

    ONNX Runtime writes an engine in place (no temporary name, no lock) while the session
    runs (an input of a new shape builds one), and reads it back as it is: two sessions
    sharing a folder (two ``aieng serve`` workers) would read each other's engine half
    written, or write one into the other (TensorRT's builds are not deterministic), and
    a damaged engine fails every later session on it. One writer per folder avoids both;
    a later session (a restart) takes the first free slot again, and its engines.
    """
    if fcntl is None:  # pragma: no cover - Windows: one folder, as before
        return engines / _SLOT.format(0), None
    for number in itertools.count():
        slot = engines / _SLOT.format(number)
        lock = engines / f".{slot.name}.lock"
        try:
            slot.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:  # a read-only cache: its engines are read, none written
            log.debug("onnx.engine_slot_unlocked", folder=str(slot), error=str(exc))
            return slot, None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another session's, in this process or another
            os.close(fd)
            continue
        except OSError as exc:  # ENOLCK: a file system without locks
            os.close(fd)
            log.debug("onnx.engine_slot_unlocked", folder=str(slot), error=str(exc))
            return slot, None
        return slot, fd
    raise AssertionError("unreachable")  # pragma: no cover


def _hold_while_alive(session: Any, fd: int) -> None:
    # The slot's lock lasts as long as the session (released when it is collected, or
    # with the process); an object that cannot be weakly referenced releases it now.
    try:
        weakref.finalize(session, os.close, fd)
    except TypeError:
        os.close(fd)


class OnnxEncoder:
    """An ONNX encoder (``last_hidden_state`` out) and its tokenizer; ``encode`` is
    blocking and serialized by a lock.

    :param session: an ONNX Runtime session on the encoder.
    :param tokenizer: a ``tokenizers.Tokenizer``; its own padding and truncation settings
        are replaced (no padding, truncation at ``max_length``).
    :param batch_size: the most texts in one forward pass.
    :param fixed_batches: cut the length-sorted texts every ``batch_size`` texts, instead
        of where :func:`batch_bounds` finds the least padding.
    :param workers: forward passes of one call run at once, each from a thread of a pool
        of this many (made on the first call that has more than one batch); the passes
        with the most padded tokens go first.
    :param chunk: the most texts tokenized and padded at once (:data:`ENCODE_CHUNK`): a
        longer call is encoded slice by slice, in bounded memory.
    """

    def __init__(self, session: Any, tokenizer: Any, *, dimension: int, batch_size: int,
                 max_length: int, fixed_batches: bool = False, workers: int = 1,
                 chunk: int = ENCODE_CHUNK) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.session = session
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.batch_size = batch_size
        self.max_length = max_length
        self.fixed_batches = fixed_batches
        self.workers = workers
        self.chunk = chunk
        self.dimension = dimension
        self.inputs = {i.name for i in session.get_inputs()}
        self.output = session.get_outputs()[0].name
        #: The execution providers the session really got, best first.
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def batches(self, texts: Sequence[str]) -> list[tuple[list[int], dict[str, Any]]]:
        """The forward passes that encode ``texts``: each batch's text indices and its
        padded feed (``input_ids``, ``attention_mask``, ``token_type_ids``), longest
        batch first."""
        import numpy as np

        encodings = self.tokenizer.encode_batch([clean(t) for t in texts])
        # Longest first, by tokens, so each batch pads to lengths close to its own.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids), reverse=True)
        if self.fixed_batches:
            bounds = [(start, min(start + self.batch_size, len(order)))
                      for start in range(0, len(order), self.batch_size)]
        else:
            bounds = batch_bounds([len(encodings[i].ids) for i in order], self.batch_size)
        out = []
        for start, stop in bounds:
            rows = order[start:stop]
            width = len(encodings[rows[0]].ids)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                enc = encodings[i]
                n = len(enc.ids)
                ids[r, :n] = enc.ids
                types[r, :n] = enc.type_ids
                mask[r, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out.append((rows, feed))
        return out

    def _pooled(self, feed: dict[str, Any]) -> Vectors:
        import numpy as np

        mask = feed["attention_mask"]
        hidden = self.session.run(
            [self.output], {k: a for k, a in feed.items() if k in self.inputs})[0]
        # Mask-weighted mean as one batched product: (b, 1, l) @ (b, l, d).
        weights = mask.astype(np.float32)[:, None, :]
        pooled: Vectors = np.matmul(weights, hidden)[:, 0, :]
        pooled /= np.maximum(weights.sum(axis=2), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled / norms  # type: ignore[no-any-return]

    def encode(self, texts: Sequence[str],
               checkpoint: Callable[[], None] | None = None) -> Vectors:
        """One L2-normalized mean-pooled vector per text, in input order; at most
        ``chunk`` texts are tokenized and padded at once. ``checkpoint`` is called before
        each slice and each forward pass, and raises to stop the call there (its caller
        is gone: the passes not started are not run, and the lock is free for the next
        call)."""
        import numpy as np

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.chunk):
            if checkpoint is not None:
                checkpoint()
            stop = min(start + self.chunk, len(texts))
            self._encode_into(out[start:stop], texts[start:stop], checkpoint)
        return out

    def _encode_into(self, out: Vectors, texts: Sequence[str],
                     checkpoint: Callable[[], None] | None = None) -> None:
        # The vectors of ``texts`` (one slice of a call) written into ``out``, a view.
        batches = self.batches(texts)

        def pooled(feed: dict[str, Any]) -> Vectors:
            if checkpoint is not None:
                checkpoint()
            return self._pooled(feed)

        with self.lock:
            if self.workers == 1 or len(batches) == 1:
                for rows, feed in batches:
                    out[rows] = pooled(feed)
            else:
                if self._pool is None or self._pool_pid != os.getpid():
                    # A pool made before an os.fork() has no threads in the child: its
                    # work would never run (the child would hang), so the child makes its
                    # own (the parent's is not shut down: its threads are the parent's).
                    self._pool = ThreadPoolExecutor(self.workers,
                                                    thread_name_prefix="aieng-onnx-encode")
                    self._pool_pid = os.getpid()
                # The costliest passes (most padded tokens) first, so the last ones to
                # start are short; map() yields in submission order, and each batch
                # writes its own rows. A checkpoint that raises fails its pass; map()
                # then cancels the passes not started.
                batches.sort(key=lambda batch: batch[1]["input_ids"].size, reverse=True)
                for (rows, _), vectors in zip(
                        batches, self._pool.map(pooled, [f for _, f in batches]),
                        strict=True):
                    out[rows] = vectors

    def close(self) -> None:
        """End the worker threads (a later call makes new ones)."""
        with self.lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=True)
