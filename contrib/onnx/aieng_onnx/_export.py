"""From a Hugging Face model folder (an encoder, or a causal LM with its KV cache) to ONNX
files on disk, once: the export, its offline BERT-fused variant and int8 variants.

An export is keyed by the model files' contents, the exporter's version and the opset, so
a changed model or exporter gives a new folder and an unchanged one is never exported
twice. Variants live beside ``model.onnx`` in that folder, named after what made them
(fusion level, ONNX Runtime version), so a new ONNX Runtime makes new files rather than
reusing ones it did not write. Every file is written under a temporary name and renamed
into place: a crash or a second process never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog
from aieng_hookspecs import MODEL_BUILD, build_lock, scratch_path
from aieng_hookspecs import remove_abandoned as shared_remove_abandoned
from aieng_transformers._digest import file_digest

from ._hoststate import host_state_kept
from ._quantize import (
    NBITS_BLOCK,
    Int8Weights,
    int8_weights,
    matmuls_named,
    optimize_bert,
    quantize,
)

if TYPE_CHECKING:
    import onnx

__all__ = ["BERT_FUSION_LEVEL", "CAUSAL_TASK", "ENCODER_TASK", "EXPORT_FILE", "KEEP_INPUT",
           "claim_scratch", "discard_damaged", "export_key", "exported",
           "finite_attention_masks", "int8_scheme", "int8_variant", "keep_logits_input",
           "open_export", "optimized_variant", "quantized_variant", "scratch_name",
           "unreadable", "weights_size"]

log = structlog.get_logger(__name__)

#: The ONNX file inside an export folder (fp32).
EXPORT_FILE = "model.onnx"
#: ``optimize_model``'s ``opt_level`` for the offline BERT fusions: 0 is the Python
#: fusions only (portable); ONNX Runtime's own optimizations still run when a session opens.
BERT_FUSION_LEVEL = 0
_CHUNK = 1 << 20


def scratch_name(folder: Path, prefix: str, suffix: str = "") -> Path:
    """A fresh hidden name in ``folder`` to write to before renaming into place:
    ``.<prefix>-<pid>-<random><suffix>`` (:func:`aieng_hookspecs.scratch_path`). Scratch
    files and folders of that prefix left by processes that are gone (killed before their
    cleanup ran: a whole export, hundreds of MB, never read again) are removed first
    (:func:`remove_abandoned`).
    """
    remove_abandoned(folder, prefix, suffix)
    return scratch_path(folder, prefix, suffix)


def remove_abandoned(folder: Path, prefix: str, suffix: str = "") -> int:
    """Remove the scratch files and folders of ``prefix`` in ``folder``
    (:func:`scratch_name`'s) whose process is gone and in which nothing changed for ten
    minutes (:func:`aieng_hookspecs.remove_abandoned`), logging each. Returns how many
    were removed."""
    removed = shared_remove_abandoned(folder, prefix, suffix)
    for scratch in removed:
        log.info("onnx.abandoned_scratch_removed", path=str(scratch))
    return len(removed)


def claim_scratch(folder: Path, prefix: str, suffix: str = "", *,
                  directory: bool = False) -> Path:
    """:func:`scratch_name` in ``folder`` (made first when missing), created now, empty:
    a cache that cannot be written fails here, before minutes of export or quantization,
    with an error naming the folder and what to set, instead of deep inside the exporter
    with the hidden scratch name.

    :raises OSError: of the same kind as the file system's (``PermissionError``…).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        scratch = scratch_name(folder, prefix, suffix)
        if directory:
            scratch.mkdir()
        else:
            scratch.touch(exist_ok=False)
    except OSError as exc:
        hint = (f"aieng-onnx keeps exports and their variants under {folder}, which cannot "
                f"be written: make it writable, or set the component's cache_dir (or "
                f"$AIENG_CACHE_DIR) to a writable folder")
        if exc.errno is None:
            raise OSError(f"{exc}; {hint}") from exc
        raise type(exc)(exc.errno, f"{exc.strerror} ({hint})",
                        exc.filename) from exc
    return scratch


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


#: The export of an encoder (last hidden states) and of a causal LM with its KV cache.
ENCODER_TASK = "feature-extraction"
CAUSAL_TASK = "text-generation-with-past"


def export_key(folder: Path, opset: int, task: str = ENCODER_TASK, *,
               memo: Path | None = None) -> str:
    """The cache key of ``folder``'s export at ``opset`` for ``task``: a hash of the
    folder's top-level files (config, weights, tokenizer), the exporter's versions, the
    opset and the task (the encoder's key is unchanged by the task's addition). With
    ``memo``, large files' digests are kept there per file version (see
    :func:`aieng_transformers._digest.file_digest`)."""
    files = {p.name: file_digest(p, memo) for p in sorted(folder.iterdir()) if p.is_file()}
    parts: dict[str, object] = {
        "files": files, "opset": opset, "optimum-onnx": _version("optimum-onnx"),
             "optimum": _version("optimum"), "torch": _version("torch"),
             "transformers": _version("transformers")}
    if task != ENCODER_TASK:
        parts["task"] = task
    if task == CAUSAL_TASK:
        parts["rewrite"] = f"{KEEP_INPUT}+{FINITE_MASKS}"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


#: The input a causal export gets (int64, shape ``[1]``): how many of the last positions
#: go through the output head. A decoding step needs one, a verifying pass the proposal's
#: length plus one; the head is the largest product of a small model's prompt pass (one
#: ``(positions, hidden) x (hidden, vocabulary)`` product: SmolLM2's vocabulary is 49,152).
KEEP_INPUT = "logits_to_keep"


def keep_logits_input(model: Path) -> bool:
    """Rewrite a causal LM's ONNX file in place so that its output head runs on the last
    ``logits_to_keep`` positions only (a ``Slice`` of the hidden states before the
    ``MatMul`` that makes ``logits``; starts at ``-logits_to_keep``, so a value of at least
    the sequence's length keeps all). Returns whether the graph had that shape (else it
    is left as it is). Weights stored as external data stay where they are."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    head = next((n for n in graph.node if "logits" in n.output), None)
    if head is None or head.op_type != "MatMul" or \
            any(i.name == KEEP_INPUT for i in graph.input):
        return False
    hidden = head.input[0]
    graph.input.append(helper.make_tensor_value_info(KEEP_INPUT, TensorProto.INT64, [1]))
    graph.initializer.extend([
        helper.make_tensor("aieng_keep_ends", TensorProto.INT64, [1], [2**63 - 1]),
        helper.make_tensor("aieng_keep_axes", TensorProto.INT64, [1], [1])])
    nodes = [helper.make_node("Neg", [KEEP_INPUT], ["aieng_keep_starts"], name="aieng_keep_neg"),
             helper.make_node("Slice", [hidden, "aieng_keep_starts", "aieng_keep_ends",
                                        "aieng_keep_axes"], ["aieng_kept_hidden"],
                              name="aieng_keep_slice")]
    head.input[0] = "aieng_kept_hidden"
    position = list(graph.node).index(head)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    onnx.save(proto, str(model))
    return True


#: The name of :func:`finite_attention_masks`' rewrite in export keys.
FINITE_MASKS = "finite-masks"


def finite_attention_masks(model: Path) -> int:
    """Rewrite a causal LM's ONNX file in place so that its attention masks use float32's
    lowest finite value instead of ``-inf``, and drop the guards that then have nothing to
    guard: ``Where(IsNaN(p), 0, p)`` after each ``Softmax`` (torch's SDPA export adds it
    because a row masked everywhere — a left-padded position — gives NaN with ``-inf``).

    A masked score becomes ``score + lowest`` (still the lowest float32), whose
    exponential after the softmax's shift is exactly 0 as ``-inf``'s is, so every row with
    a position to attend to gives the same probabilities; a row masked everywhere gives
    uniform weights instead of zeros, and only padding positions have such rows (the
    real positions never attend to them). transformers' own eager masks use the same
    value. The guards cost a full pass over each layer's ``(heads, queries, keys)``
    probabilities: on a long prompt's first pass, about a tenth of the time.

    Returns how many guards were dropped; 0 leaves the file as it is (the ``-inf``
    constants too), for a graph of another shape. Weights stored as external data stay
    where they are.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    lowest = np.finfo(np.float32).min

    def finite(value: np.ndarray) -> np.ndarray:
        return np.where(np.isneginf(value), lowest, value).astype(value.dtype)

    def constant(name: str) -> np.ndarray | None:
        node = producer.get(name)
        if node is None or node.op_type != "Constant":
            return None
        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
        return None

    guards: list[tuple[onnx.NodeProto, onnx.NodeProto, str]] = []
    for node in graph.node:
        if node.op_type != "Where" or len(node.input) != 3:
            continue
        check, zero, probabilities = (producer.get(node.input[0]), constant(node.input[1]),
                                      producer.get(node.input[2]))
        if check is None or check.op_type != "IsNaN" or check.input[0] != node.input[2] or \
                probabilities is None or probabilities.op_type != "Softmax" or \
                zero is None or zero.size != 1 or float(zero.reshape(-1)[0]) != 0.0:
            continue
        guards.append((node, check, node.input[2]))
    if not guards or any(o.name == where.output[0] for o in graph.output
                         for where, _, _ in guards):
        return 0
    # Every -inf the graph holds (Constant and ConstantOfShape values, small initializers)
    # becomes the lowest finite float32: then no softmax input can be -inf everywhere.
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                value = numpy_helper.to_array(attribute.t)
                if value.dtype.kind == "f" and np.isneginf(value).any():
                    attribute.t.CopyFrom(numpy_helper.from_array(finite(value),
                                                                 attribute.t.name))
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or \
                tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        value = numpy_helper.to_array(tensor)
        if value.size <= 1024 and np.isneginf(value).any():
            graph.initializer[index].CopyFrom(numpy_helper.from_array(finite(value),
                                                                      tensor.name))
    dropped = {id(where) for where, _, _ in guards} | {id(check) for _, check, _ in guards}
    renamed = {where.output[0]: source for where, _, source in guards}
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    # The guards' zero constants, now read by nothing (ONNX Runtime would warn at each
    # session's start that it drops them).
    read = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    kept = [node for node in kept
            if node.op_type != "Constant" or any(out in read for out in node.output)]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(proto, str(model))
    return len(guards)


#: One export at a time in a process: a pipeline opens its components concurrently, and
#: two threads importing optimum's lazily loaded exporter at once can fail with an
#: ImportError ("cannot import name 'main_export'"); two exports would also just compete
#: for the same cores.
_EXPORTING = threading.Lock()
#: One quantization or fusion at a time in a process: two components of one model opening
#: together would otherwise both make its file (the second waits, then finds it).
_MAKING_VARIANT = threading.Lock()


def _export(folder: Path, target: Path, opset: int, task: str) -> None:
    _export_now(folder, target, opset, task)


def _export_now(folder: Path, target: Path, opset: int, task: str) -> None:
    # The exporter builds the torch model with transformers: one build at a time in the
    # process, whichever plugin makes it (aieng_hookspecs.MODEL_BUILD says why).
    # host_state_kept: optimum's dummy inputs draw from the host's global ``random``.
    with MODEL_BUILD, host_state_kept():
        from optimum.exporters.onnx import main_export  # type: ignore[import-untyped]

        # library_name: a sentence-transformers folder would otherwise be exported with
        # its pooling head, which needs sentence-transformers; pooling happens in numpy.
        main_export(str(folder), str(target), task=task, opset=opset,
                    device="cpu", library_name="transformers", local_files_only=True,
                    do_validation=False)


def exported(folder: Path, cache: Path, *, opset: int,
             task: str = ENCODER_TASK) -> tuple[Path, bool]:
    """The export folder of the model in ``folder`` (``model.onnx``, config, tokenizer),
    exported now unless the cache holds it; blocking.

    :param folder: a Hugging Face model folder.
    :param cache: the cache root; exports go to ``cache/onnx/<name>-<key>``.
    :param opset: the ONNX opset to export with.
    :param task: the exporter's task: :data:`ENCODER_TASK` (last hidden states) or
        :data:`CAUSAL_TASK` (logits, with the KV cache as inputs and outputs).
    :returns: the folder, and whether it was exported by this call.
    """
    key = export_key(folder, opset, task, memo=cache / "digests")
    target = cache / "onnx" / f"{folder.name}-{key[:16]}"
    if (target / EXPORT_FILE).is_file():
        log.debug("onnx.export_cached", folder=str(target))
        return target, False
    with _EXPORTING, build_lock(target, log=log):
        # Looked at again under the locks: another thread, or another process (two
        # workers starting at once), may have just exported it.
        if (target / EXPORT_FILE).is_file():
            log.debug("onnx.export_cached", folder=str(target))
            return target, False
        return target, _export_into(folder, target, opset, task)


def _export_into(folder: Path, target: Path, opset: int, task: str) -> bool:
    started = time.perf_counter()
    scratch = claim_scratch(target.parent, "export", directory=True)
    try:
        _export(folder, scratch, opset, task)
        if task == CAUSAL_TASK and not keep_logits_input(scratch / EXPORT_FILE):
            log.info("onnx.logits_all_positions", folder=str(folder),
                     reason="the graph's logits do not come from one MatMul")
        if task == CAUSAL_TASK:
            guards = finite_attention_masks(scratch / EXPORT_FILE)
            log.debug("onnx.finite_masks", folder=str(folder), guards_dropped=guards)
        try:
            scratch.rename(target)
        except OSError:
            if (target / EXPORT_FILE).is_file():
                pass  # another process exported the same model meanwhile: keep its folder
            elif target.is_dir():
                # A folder without its model (deleted by hand, copied in half): not an
                # export to trust, nor its variants (made from the model that is gone).
                _replace_folder(scratch, target)
            else:
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("onnx.exported", source=str(folder), folder=str(target), opset=opset,
             task=task, seconds=round(time.perf_counter() - started, 3))
    return True


def _replace_folder(scratch: Path, target: Path) -> None:
    stale = scratch_name(target.parent, "stale")
    try:
        target.rename(stale)
    except OSError:
        pass  # another process moved it meanwhile
    shutil.rmtree(stale, ignore_errors=True)
    try:
        scratch.rename(target)
    except OSError:
        if not (target / EXPORT_FILE).is_file():
            raise
    log.warning("onnx.export_replaced", folder=str(target),
                reason=f"the folder had no {EXPORT_FILE}")


#: The JSON files of an export folder its loaders read (config, tokenizer), when present.
_EXPORT_JSON = ("config.json", "tokenizer.json", "tokenizer_config.json")
_Opened = TypeVar("_Opened")


def unreadable(file: Path) -> str | None:
    """Why ``file`` of an export folder is damaged, or ``None`` when it reads: an ONNX file
    must parse as a model with a graph and an opset (ONNX Runtime fails on a file cut
    short with ``INVALID_PROTOBUF``, on an empty one with "No graph was found"), a JSON
    file as JSON. Weights in external data files are not read. A file that cannot be
    opened at all (permissions) is not called damaged."""
    try:
        if file.suffix == ".onnx":
            import onnx

            proto = onnx.load(str(file), load_external_data=False)
            if not proto.graph.node or not proto.opset_import:
                return "no graph or opset in the file"
            return _external_data_missing(file, proto)
        else:
            json.loads(file.read_text(encoding="utf-8"))
    except OSError:
        return None
    except Exception as exc:  # noqa: BLE001 - DecodeError, ValueError, onnx's errors: damage
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def _external_data_missing(file: Path, proto: onnx.ModelProto) -> str | None:
    # Why the external-data files ``file``'s tensors name (``model.onnx_data``: optimum's,
    # for models over 2 GB) cannot hold their bytes: one missing, or shorter than an
    # offset plus length it is read at. Stat calls only.
    import onnx

    ends: dict[str, int] = {}
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        end = int(entries.get("offset") or 0) + int(entries.get("length") or 0)
        ends[location] = max(ends.get(location, 0), end)
    for location, end in sorted(ends.items()):
        data = file.parent / location
        if not data.is_file():
            return f"its weights file {location!r} is missing"
        if data.stat().st_size < end:
            return (f"its weights file {location!r} holds {data.stat().st_size} bytes, "
                    f"not the {end} its tensors are read from")
    return None


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    # Initializers and attribute tensors, in subgraphs too.
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in (*attribute.graphs, *([attribute.g] if attribute.HasField("g")
                                              else [])):
                yield from _all_tensors(sub)


def discard_damaged(folder: Path) -> list[Path]:
    """Remove what in the export folder ``folder`` is damaged (:func:`unreadable`), so that
    the next :func:`exported` and variant calls make it again, logging a warning
    (``onnx.cache_damaged``) per file. A damaged ``model.onnx``, ``config.json`` or
    tokenizer file takes the whole folder (its variants were made from it); else each
    damaged variant (``model.*.onnx``) goes alone. Returns the damaged files (empty: none
    was, and nothing is removed; also when the folder cannot be changed)."""
    core = [(f, why) for f in (folder / EXPORT_FILE, *(folder / n for n in _EXPORT_JSON))
            if f.is_file() and (why := unreadable(f)) is not None]
    if core:
        for file, why in core:
            log.warning("onnx.cache_damaged", file=str(file), reason=why, remade="export")
        stale = scratch_name(folder.parent, "stale")
        try:
            folder.rename(stale)
        except FileNotFoundError:
            pass  # another process moved it meanwhile, to export it again
        except OSError as exc:
            log.warning("onnx.cache_damaged_kept", folder=str(folder), error=str(exc))
            return []
        shutil.rmtree(stale, ignore_errors=True)
        return [file for file, _ in core]
    damaged = []
    for file in sorted(folder.glob("model.*.onnx")):
        why = unreadable(file)
        if why is None:
            continue
        log.warning("onnx.cache_damaged", file=str(file), reason=why, remade="variant")
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("onnx.cache_damaged_kept", file=str(file), error=str(exc))
            continue
        damaged.append(file)
    return damaged


def _identities(folder: Path) -> dict[str, tuple[int, int, int]]:
    # The folder's files as (inode, size, mtime): what another thread or process changed.
    try:
        found = {p.name: p.stat() for p in folder.iterdir() if not p.name.startswith(".")}
    except OSError:
        return {}
    return {name: (st.st_ino, st.st_size, st.st_mtime_ns) for name, st in found.items()}


def open_export(folder: Path, cache: Path, *, opset: int, task: str = ENCODER_TASK,
                open_: Callable[[Path], _Opened]) -> tuple[_Opened, bool]:
    """``open_`` called on the export folder of the model in ``folder``
    (:func:`exported`), and whether this call exported it; blocking. When ``open_`` fails
    and a file of the cache is damaged (:func:`discard_damaged`: a model cut short by a
    full disk or a crash would otherwise fail every load), or another thread or process
    changed the folder's files meanwhile (it found them damaged first), the export or the
    variant is made again and ``open_`` called once more; other failures are raised."""
    target, made = exported(folder, cache, opset=opset, task=task)
    before = _identities(target)
    try:
        return open_(target), made
    except Exception:
        after = _identities(target)
        changed = any(after.get(name) != identity for name, identity in before.items())
        if not discard_damaged(target) and not changed:
            raise
    target, made = exported(folder, cache, opset=opset, task=task)
    return open_(target), made


def _ort_version() -> str:
    import onnxruntime  # type: ignore[import-untyped]

    return str(onnxruntime.__version__)


def optimized_variant(folder: Path, *, level: int = BERT_FUSION_LEVEL) -> Path:
    """The BERT-fused file beside ``folder/model.onnx`` (``onnxruntime.transformers``'
    ``optimize_model``: Attention, EmbedLayerNormalization, SkipLayerNormalization,
    BiasGelu), made now unless present; blocking. Its name carries the fusion level and
    the ONNX Runtime version: ``model.bert-o<level>.ort<version>.onnx``."""
    target = folder / f"model.bert-o{level}.ort{_ort_version()}.onnx"
    if target.is_file():
        log.debug("onnx.optimized_cached", file=str(target))
        return target
    with _MAKING_VARIANT, build_lock(target, log=log):
        if not target.is_file():  # another thread or process may have just made it
            _optimize_into(folder, target, level)
    return target


def _optimize_into(folder: Path, target: Path, level: int) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    scratch = claim_scratch(folder, "bert", ".onnx")
    try:
        optimize_bert(folder / EXPORT_FILE, scratch, level=level,
                      heads=int(config.get("num_attention_heads", 0)),
                      hidden=int(config.get("hidden_size", 0)))
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    log.info("onnx.optimized", folder=str(folder), file=target.name, level=level,
             seconds=round(time.perf_counter() - started, 3))


def int8_variant(folder: Path, source: Path | None = None, *,
                 keep: Sequence[str] = (), weights: Int8Weights | None = None) -> Path:
    """The int8 (dynamic, per-channel) file of ``source`` (default ``folder/model.onnx``)
    beside it, quantized now unless present; blocking. Its name is the source's stem
    (ONNX Runtime version dropped) plus ``.int8.ort<version>.onnx`` (``.int8u8.`` on a CPU
    that gets unsigned weights: :func:`~._quantize.int8_weights`), carrying the ONNX
    Runtime version that made it.

    :param keep: ``MatMul`` name fragments (``down_proj``) whose nodes stay float32; the
        file's name then carries a digest of them (``.int8-keep<digest>.``).
    :param weights: ``s8`` or ``u8`` weights (default: this CPU's,
        :func:`~._quantize.int8_weights`).
    :raises ValueError: when a fragment matches no ``MatMul``.
    """
    return quantized_variant(folder, source, precision="int8", keep=keep, weights=weights)


def int8_scheme(weights: Int8Weights | None = None) -> str:
    """The int8 file's scheme name for ``weights`` (default: this CPU's): ``int8``
    (signed weights) or ``int8u8``."""
    return "int8" if (weights or int8_weights()) == "s8" else "int8u8"


def quantized_variant(folder: Path, source: Path | None = None, *, precision: str,
                      keep: Sequence[str] = (), weights: Int8Weights | None = None) -> Path:
    """The quantized file of ``source`` (default ``folder/model.onnx``) beside it, made now
    unless present; blocking.

    :param precision: ``int8`` (dynamic, per-channel weights: ``.int8.``, or ``.int8u8.``
        where this CPU gets unsigned weights, see :func:`~._quantize.int8_weights`), or
        ``q8`` / ``q4`` (block-wise weight-only ``MatMulNBits``, 8 or 4 bits, a scale per
        32 weights: ``.q8b32.`` / ``.q4b32.``); the name ends ``.ort<version>.onnx``.
    :param keep: ``MatMul`` name fragments whose nodes stay float32 (``-keep<digest>``
        in the name).
    :param weights: ``int8``: ``s8`` or ``u8`` weights (default: this CPU's).
    :raises ValueError: for another precision, or a fragment that matches no ``MatMul``.
    """
    schemes = {"int8": int8_scheme(weights), "q8": f"q8b{NBITS_BLOCK}",
               "q4": f"q4b{NBITS_BLOCK}"}
    if precision not in schemes:
        raise ValueError(f"unknown precision {precision!r}; known: {sorted(schemes)}")
    source = source if source is not None else folder / EXPORT_FILE
    version = _ort_version()
    stem = source.stem.removesuffix(f".ort{version}")
    scheme = schemes[precision]
    if keep:
        digest = hashlib.sha256("\n".join(sorted(set(keep))).encode()).hexdigest()[:8]
        scheme = f"{scheme}-keep{digest}"
    target = source.parent / f"{stem}.{scheme}.ort{version}.onnx"
    if target.is_file():  # made before, its fragments checked then (the name carries them)
        return target
    with _MAKING_VARIANT, build_lock(target, log=log):
        if not target.is_file():  # another thread or process may have just made it
            _quantize_into(folder, source, target, precision, keep, weights)
    return target


def _quantize_into(folder: Path, source: Path, target: Path, precision: str,
                   keep: Sequence[str], weights: Int8Weights | None) -> None:
    kept = matmuls_named(source, keep) if keep else []
    started = time.perf_counter()
    scratch = claim_scratch(source.parent, precision, ".onnx")
    try:
        quantize(source, scratch, precision, keep=kept, weights=weights)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    log.info("onnx.quantized", folder=str(folder), file=target.name, precision=precision,
             kept_fp32=len(kept), seconds=round(time.perf_counter() - started, 3))


def weights_size(model: Path) -> int:
    """Bytes of an ONNX model: the file plus the external-data files its tensors name
    (optimum's ``model.onnx_data``, ``<file>.data`` and the like)."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    names = {entry.value for tensor in _all_tensors(proto.graph)
             if tensor.data_location == onnx.TensorProto.EXTERNAL
             for entry in tensor.external_data if entry.key == "location"}
    size = model.stat().st_size
    for name in names:
        extra = model.parent / name
        if extra.is_file():
            size += extra.stat().st_size
    return size
