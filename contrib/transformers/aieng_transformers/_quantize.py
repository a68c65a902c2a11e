"""``torch-int8``: int8 quantization of a local Hugging Face model folder.

``aieng_quantize(model, "int8")`` loads the folder's model in fp32, replaces its
``nn.Linear`` layers with torch's dynamically quantized ones
(``torch.ao.quantization.quantize_dynamic``, qint8 weights, activations quantized per
batch at run time) and saves the result under ``output_dir`` (default
``<aieng cache dir>/quantized``) in a folder keyed by the model's content and the scheme:

- ``model-int8.pt``: ``torch.save`` of the quantized model's state dict;
- the source folder's other top-level files (``config.json``, tokenizer files), copied;
- ``aieng-quantize.json``: the scheme, the model kind, the quantized module names and the
  result's sizes and quality (written last: a folder without it is not trusted).

Scheme ``"bnb8"`` (only when ``bitsandbytes`` is installed; it runs on CPU from 0.45 on)
loads the model through transformers with ``BitsAndBytesConfig(load_in_8bit=True)``
(LLM.int8: outlier features stay in fp16) and saves it with ``save_pretrained``: the
folder is a plain HF folder whose ``config.json`` carries the ``quantization_config``.
Scheme ``"nf4"`` does the same with ``load_in_4bit=True`` and 4-bit NormalFloat weights
(blocks of 64, fp32 compute). Both save *before* the model's first forward pass (see
``_write``) and measure the reloaded folder.

Load either back with :func:`load_quantized`. The quality figures come from the small fixed
texts in :mod:`._heldout`: perplexity before and after for a causal LM, the mean cosine
between fp32 and int8 embeddings for an encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import attrs
import structlog
from aieng_hookspecs import blocking, build_lock, hookimpl, scratch_path
from aieng_hookspecs.types import QuantizeResult
from attrs import validators as v

from ._convert import discard_unmarked, scratch_folder
from ._digest import file_digest
from ._heldout import HELDOUT_SENTENCES, HELDOUT_TEXT
from ._memory import loaded_weight_files
from ._paths import cache_root

__all__ = ["QUANTIZE_MARKER", "SCHEMES", "TorchInt8Quantizer", "TorchQuantizeOptions",
           "load_quantized", "read_marker"]

log = structlog.get_logger(__name__)

#: The schemes ``torch-int8`` answers; any other gets ``None`` ("not mine"), and so do
#: ``bnb8`` and ``nf4`` when ``bitsandbytes`` is not installed.
SCHEMES = ("int8", "bnb8", "nf4")
_BNB_SCHEMES = ("bnb8", "nf4")
#: The file that marks a finished quantized folder (and holds its result).
QUANTIZE_MARKER = "aieng-quantize.json"
#: Bumped when the saved layout changes, so old folders are not reused.
FORMAT_VERSION = 1

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_NOT_WEIGHTS = frozenset({"training_args.bin"})
_STATE_FILE = "model-{scheme}.pt"

Kind = Literal["causal", "encoder"]


@attrs.frozen(kw_only=True)
class TorchQuantizeOptions:
    """Options of the ``torch-int8`` quantizer.

    :param output_dir: where quantized models go, one folder per model, scheme and
        ``keep_fp32``; by default ``quantized`` under the aieng cache dir
        (``$AIENG_CACHE_DIR``, else ``~/.cache/aieng`` on Linux).
    :param keep_fp32: module names (or the end of a dotted name: ``"down_proj"``) of
        ``nn.Linear`` layers left in fp32. Llama-style MLP output projections carry the
        activation outliers that per-tensor int8 activations clip: on SmolLM2-135M,
        keeping ``down_proj`` in fp32 takes the int8 perplexity on the held-out text from
        about 77 to about 30 (fp32: 25). An entry naming no ``nn.Linear`` fails the call
        with ``ValueError``.
    """

    output_dir: str | None = attrs.field(
        default=None, validator=v.optional(v.and_(v.instance_of(str), v.min_len(1))))
    keep_fp32: tuple[str, ...] = attrs.field(
        default=(), converter=tuple,
        validator=v.deep_iterable(v.and_(v.instance_of(str), v.min_len(1))))


class TorchInt8Quantizer:
    """Quantizes a local Hugging Face causal LM or encoder to int8 with torch's dynamic
    quantization, and measures what it cost on a small fixed text.

    ``aieng_quantize`` answers the schemes ``"int8"`` (torch dynamic quantization) and
    ``"bnb8"`` / ``"nf4"`` (bitsandbytes LLM.int8 / 4-bit NormalFloat, when installed)
    for a folder holding a
    ``config.json``; any other scheme or path gets ``None``. It runs in a worker thread.
    A model already quantized (same content, same scheme) is not quantized again: the
    saved result is returned.

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: TorchQuantizeOptions | None = None) -> None:
        self.options = options if options is not None else TorchQuantizeOptions()

    def output_root(self) -> Path:
        """The folder quantized models go under (not created here)."""
        if self.options.output_dir is not None:
            return Path(self.options.output_dir).expanduser()
        return cache_root() / "quantized"

    @hookimpl
    @blocking
    def aieng_quantize(self, model: str, scheme: str) -> QuantizeResult | None:
        """Quantize the HF folder ``model`` with ``scheme`` (``None``: not one of
        :data:`SCHEMES`, or not a Hugging Face model folder)."""
        if scheme not in SCHEMES or (scheme in _BNB_SCHEMES and not _has_bitsandbytes()):
            return None
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file() or not _weight_files(folder):
            return None
        return self.quantize(folder, scheme)

    def quantize(self, folder: Path, scheme: str = "int8") -> QuantizeResult | None:
        """The blocking work of :meth:`aieng_quantize`: quantize, save, measure.

        :returns: ``None`` when the folder holds a model kind this quantizer does not
            handle (an encoder-decoder).

        Another process quantizing the same model (two workers starting at once) is
        waited for, and its result used (:func:`aieng_hookspecs.build_lock`).
        """
        key = model_key(folder, keep_fp32=self.options.keep_fp32,
                        memo=self.output_root() / "digests")
        target = self.output_root() / f"{folder.name}-{key}-{scheme}"
        found = _cached(folder, target, scheme)
        if found is not None:
            return found
        kind = _kind(folder)
        if kind is None:
            return None
        with build_lock(target, log=log):
            # Looked at again under the lock: another process may have just made it (or
            # found it damaged: then it is discarded here, under the lock).
            found = _cached(folder, target, scheme, discard=True)
            if found is not None:
                return found
            return self._quantize(folder, target, scheme, kind)

    def _quantize(self, folder: Path, target: Path, scheme: str,
                  kind: Kind) -> QuantizeResult:
        marker = target / QUANTIZE_MARKER
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # No marker: a half-written or foreign folder, removed unless another process
            # finished the same quantization meanwhile.
            if discard_unmarked(target, QUANTIZE_MARKER):
                saved = json.loads(marker.read_text(encoding="utf-8"))
                return _result(target, saved)
            scratch = scratch_folder(target)
            scratch.mkdir()  # writable? (before loading and quantizing, not after)
            scratch.rmdir()
        except OSError as exc:
            why = (f"cannot write the {scheme} model of {folder.name} under {target.parent} "
                   f"({exc.strerror or exc}): set the quantizer's `output_dir` option (or "
                   "AIENG_CACHE_DIR) to a writable folder")
            if exc.errno is None:
                raise OSError(why) from exc
            raise type(exc)(exc.errno, why, exc.filename) from exc
        started = time.perf_counter()
        log.info("quantize.started", source=str(folder), target=str(target), scheme=scheme,
                 kind=kind)
        try:
            saved = _write(folder, scratch, scheme, kind, keep_fp32=self.options.keep_fp32)
            try:
                scratch.rename(target)
            except OSError:
                if not marker.is_file():  # not a concurrent writer's finished copy
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("quantize.finished", source=str(folder), target=str(target), scheme=scheme,
                 size_before=saved["size_before"], size_after=saved["size_after"],
                 quality=saved["quality"], seconds=round(time.perf_counter() - started, 3))
        return _result(target, saved)


def load_quantized(folder: str | os.PathLike[str]) -> Any:
    """Load a model saved by ``torch-int8``. For ``int8``: the architecture from its
    ``config.json``, the same modules quantized, then the saved state dict. For ``bnb8`` and
    ``nf4``:
    ``from_pretrained`` (the config names the quantization), non-int8 weights in fp32.
    CPU. Blocking.

    :param folder: a folder :meth:`TorchInt8Quantizer.quantize` wrote.
    :returns: the quantized ``nn.Module`` in eval mode (a ``...ForCausalLM`` or an encoder).
    """
    import torch

    location = Path(folder)
    saved = read_marker(location)
    if saved["scheme"] in _BNB_SCHEMES:
        return _from_pretrained(location, saved["kind"], device_map="cpu")
    model = _from_config(location, saved["kind"])
    quantized = _quantize_modules(model, saved["modules"])
    state = torch.load(location / _STATE_FILE.format(scheme=saved["scheme"]),
                       map_location="cpu", weights_only=True)
    quantized.load_state_dict(state)
    quantized.eval()
    return quantized


def model_key(folder: Path, *, keep_fp32: tuple[str, ...] = (),
              memo: Path | None = None) -> str:
    """A short content key of a HF folder: its ``config.json`` and, per weight file, the
    name and a SHA-256 of all its bytes (a layer changed in place, at the same size, is a
    new key), plus the layers kept in fp32; independent of the folder's path and mtime.

    :param memo: a folder keeping each weight file's digest per file version, so that only
        the first call reads a multi-GB file whole.
    """
    digest = hashlib.sha256(f"aieng-quantize-v{FORMAT_VERSION}:".encode())
    if keep_fp32:
        digest.update(json.dumps(sorted(set(keep_fp32))).encode())
    digest.update((folder / "config.json").read_bytes())
    for path in _weight_files(folder):
        digest.update(f"\0{path.name}:{file_digest(path, memo)}".encode())
    return digest.hexdigest()[:16]


# -- the work ----------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and p.name not in _NOT_WEIGHTS)


def _kind(folder: Path) -> Kind | None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("is_encoder_decoder"):
        return None
    architectures = config.get("architectures") or ()
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal"
    return "encoder"


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _from_pretrained(folder: Path, kind: Kind, **extra: Any) -> Any:
    import torch
    from aieng_hookspecs import MODEL_BUILD

    from ._convert import dtype_argument

    with MODEL_BUILD:
        from transformers import AutoModel, AutoModelForCausalLM

        auto: Any = AutoModelForCausalLM if kind == "causal" else AutoModel
        model = auto.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                     **{dtype_argument(): torch.float32}, **extra)
    model.eval()
    return model


def _from_config(folder: Path, kind: Kind) -> Any:
    from aieng_hookspecs import MODEL_BUILD

    with MODEL_BUILD:
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        config: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                 trust_remote_code=False)
        auto: Any = AutoModelForCausalLM if kind == "causal" else AutoModel
        return auto.from_config(config)


def _linear_names(model: Any, keep_fp32: tuple[str, ...] = ()) -> list[str]:
    """The ``nn.Linear`` modules to quantize: all of them, except those ``keep_fp32``
    names and an output head tied to the input embeddings (quantizing it would store a
    second, int8 copy of the embedding matrix, and the fp32 embeddings stay anyway)."""
    import torch

    tied: Any = None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embeddings = model.get_input_embeddings()
    if head is not None and head.weight is embeddings.weight:
        tied = head
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not tied
            and not any(name == k or name.endswith(f".{k}") for k in keep_fp32)]


def _unmatched(model: Any, keep_fp32: tuple[str, ...], scheme: str) -> list[str]:
    """The ``keep_fp32`` entries that keep no ``nn.Linear`` module of ``model`` in fp32: for
    ``int8`` by the rule of :func:`_linear_names` (the whole name or its last dotted
    parts); for ``bnb8`` / ``nf4`` by transformers' (the whole name, the module's own
    name, or a module above it)."""
    import torch

    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear)]

    def keeps(name: str, key: str) -> bool:
        if scheme in _BNB_SCHEMES:
            return name == key or name.rpartition(".")[2] == key or f"{key}." in name
        return name == key or name.endswith(f".{key}")

    return [key for key in keep_fp32 if not any(keeps(name, key) for name in names)]


def _quantize_modules(model: Any, names: list[str]) -> Any:
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec: dict[Any, Any] = dict.fromkeys(names, per_channel_dynamic_qconfig)
    quantized: Any = quantize_dynamic(  # type: ignore[no-untyped-call]
        model, qconfig_spec=spec, dtype=torch.qint8, inplace=False)
    return quantized


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _weight_files(folder))


def _loaded_weight_bytes(folder: Path) -> int:
    """The bytes of the weight files ``from_pretrained`` loads from ``folder``
    (:func:`loaded_weight_files`), else of every weight file: a repository shipping the
    same weights twice (safetensors beside ``.bin``) counts them once."""
    files = loaded_weight_files(folder)
    return _weight_bytes(folder) if files is None else sum(f.stat().st_size for f in files)


def _write(folder: Path, scratch: Path, scheme: str, kind: Kind, *,
           keep_fp32: tuple[str, ...]) -> dict[str, Any]:
    import torch

    scratch.mkdir(parents=True)
    for path in folder.iterdir():  # config, tokenizer, generation config, ...
        if path.is_file() and path not in _weight_files(folder):
            shutil.copy2(path, scratch / path.name)
    with torch.no_grad():
        model = _from_pretrained(folder, kind)
        unmatched = _unmatched(model, keep_fp32, scheme)
        if unmatched:  # a typo would otherwise quantize every layer without a word
            raise ValueError(f"keep_fp32 {unmatched} names no nn.Linear of {folder.name!r}: "
                             "give a module name or its last part (e.g. 'down_proj')")
        if scheme in _BNB_SCHEMES:
            quantized = _bnb(folder, kind, keep_fp32, scheme)
            names = [n for n, m in quantized.named_modules()
                     if type(m).__name__ in ("Linear8bitLt", "Linear4bit")]
            # Saved before any forward pass: on CPU, bitsandbytes (0.50) repacks 4-bit
            # weights for its CPU kernel on the first forward (the quant state's
            # packing_format_for_cpu), and save_pretrained would write that layout,
            # which from_pretrained reads as the standard one (perplexity ~1.7e7).
            quantized.save_pretrained(str(scratch), safe_serialization=True)
            size_after = _weight_bytes(scratch)
            # Measure the saved folder, not the object in memory: the figure then
            # vouches for what load_quantized gives back (it loads bnb8 / nf4 so).
            quantized = _from_pretrained(scratch, kind, device_map="cpu")
        else:
            names = _linear_names(model, keep_fp32)
            quantized = _quantize_modules(model, names)
            state_file = scratch / _STATE_FILE.format(scheme=scheme)
            torch.save(quantized.state_dict(), state_file)
            size_after = state_file.stat().st_size
        try:
            quality = (_perplexities(folder, model, quantized) if kind == "causal"
                       else _cosine(folder, model, quantized))
        except RuntimeError as error:
            if scheme != "nf4":
                raise
            raise ValueError(
                "bitsandbytes' CPU 4-bit kernel cannot run this model's layers (their "
                f"widths must suit its blocks, e.g. be divisible by 32): {error}") from error
    saved: dict[str, Any] = {
        "format": FORMAT_VERSION, "scheme": scheme, "kind": kind, "source": str(folder),
        "modules": names, "size_before": _loaded_weight_bytes(folder),
        "size_after": size_after, "quality": quality,
        "torch": torch.__version__,
    }
    (scratch / QUANTIZE_MARKER).write_text(json.dumps(saved, indent=2), encoding="utf-8")
    return saved


def _bnb(folder: Path, kind: Kind, keep_fp32: tuple[str, ...], scheme: str) -> Any:
    import torch
    from aieng_hookspecs import MODEL_BUILD

    with MODEL_BUILD:
        from transformers import BitsAndBytesConfig
    # Without an explicit list transformers keeps the output head in fp32; a list replaces
    # that default, so the head is named again.
    skip = [*keep_fp32, "lm_head"] if keep_fp32 else None
    if scheme == "nf4":
        config = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=skip)
    else:
        config = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_8bit=True, llm_int8_skip_modules=skip)
    return _from_pretrained(folder, kind, quantization_config=config, device_map="cpu")


def _tokenizer(folder: Path) -> Any:
    from aieng_hookspecs import MODEL_BUILD

    with MODEL_BUILD:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
            str(folder), local_files_only=True, trust_remote_code=False)


def _perplexities(folder: Path, model: Any, quantized: Any) -> dict[str, float]:
    from ._causal import CausalLM

    tokenizer = _tokenizer(folder)
    before = CausalLM(model, tokenizer).perplexity(HELDOUT_TEXT)
    after = CausalLM(quantized, tokenizer).perplexity(HELDOUT_TEXT)
    if not (math.isfinite(before) and math.isfinite(after)):
        raise ValueError(f"perplexity is not finite ({before} before, {after} after "
                         "quantizing): the model's outputs overflow")
    return {"perplexity_before": before, "perplexity_after": after,
            "perplexity_delta": after - before}


def _cosine(folder: Path, model: Any, quantized: Any) -> dict[str, float]:
    from ._embedder import _Encoder

    tokenizer = _tokenizer(folder)
    full = _Encoder(model, tokenizer, batch_size=32, max_length=256).encode(HELDOUT_SENTENCES)
    small = _Encoder(quantized, tokenizer, batch_size=32, max_length=256).encode(
        HELDOUT_SENTENCES)
    return {"cosine": float((full * small).sum(axis=1).mean())}


class _NewerFormat(ValueError):
    """A marker of a format this version does not know."""


#: What a marker holds, whatever the scheme (``int8``'s holds ``modules`` too).
_MARKER_KEYS = ("scheme", "kind", "size_before", "size_after", "quality")


def read_marker(folder: Path) -> dict[str, Any]:
    """The marker of a folder ``torch-int8`` finished, checked against the folder: it
    reads as JSON with the keys it is written with, its format is one this version
    knows (a marker without one is format 1), and the weight files hold the bytes it
    records (stat calls: a file cut short by a crash before the disk had it is found).

    :raises FileNotFoundError: when the folder has no marker (not a finished folder).
    :raises ValueError: naming the file, what was found and what to do.
    """
    marker = folder / QUANTIZE_MARKER
    if not marker.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {QUANTIZE_MARKER}: not a folder "
                                "torch-int8 finished (quantize the model again)")
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSON and UTF-8 decoding
        raise ValueError(f"{str(marker)!r} does not read ({type(exc).__name__}: {exc}): "
                         "quantize it again") from exc
    if not isinstance(saved, dict):
        raise ValueError(  # noqa: TRY004 - a damaged file is a bad value, not a bad call
            f"{str(marker)!r} holds no JSON object: quantize it again")
    version = saved.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(  # noqa: TRY004 - a damaged file is a bad value, not a bad call
            f"{str(marker)!r} has format {version!r}, not a number: quantize it again")
    if version > FORMAT_VERSION:
        raise _NewerFormat(f"{str(marker)!r} is of format {version}, written by a newer "
                           f"aieng-transformers (this one reads format {FORMAT_VERSION} and "
                           "below): load it with that version, or quantize it again with "
                           "this one")
    missing = [k for k in (*_MARKER_KEYS, *(("modules",) if saved.get("scheme") == "int8"
                                             else ())) if k not in saved]
    if missing:
        raise ValueError(f"{str(marker)!r} lacks {missing}: quantize it again")
    size = _weight_bytes(folder)
    if size != saved["size_after"]:
        raise ValueError(f"the weights in {str(folder)!r} hold {size} bytes, not the "
                         f"{saved['size_after']} written (cut short?): quantize it again")
    return saved


def _cached(folder: Path, target: Path, scheme: str, *,
            discard: bool = False) -> QuantizeResult | None:
    # The saved result in ``target``, or None: none there, or a damaged one (discarded
    # with a warning when ``discard``: the caller holds the build lock). A marker of a
    # newer format is raised, never discarded.
    if not (target / QUANTIZE_MARKER).is_file():
        return None
    try:
        saved = read_marker(target)
    except _NewerFormat:
        raise
    except ValueError as exc:
        if discard:
            log.warning("quantize.cache_damaged", folder=str(target), reason=str(exc))
            try:
                _discard(target)
            except OSError as error:  # a read-only output_dir: not made again either
                raise OSError(error.errno, f"{exc}; it cannot be removed ("
                              f"{error.strerror or error}): delete it, or set the "
                              "quantizer's `output_dir` option (or AIENG_CACHE_DIR) to a "
                              "writable folder") from error
        return None
    log.info("quantize.cached", source=str(folder), target=str(target), scheme=scheme)
    return _result(target, saved)


def _discard(target: Path) -> None:
    # Moved aside first, so no reader sees it half removed.
    aside = scratch_path(target.parent, target.name, ".tmp")
    try:
        target.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _result(target: Path, saved: dict[str, Any]) -> QuantizeResult:
    return QuantizeResult(model=str(target), scheme=saved["scheme"],
                          size_before=int(saved["size_before"]),
                          size_after=int(saved["size_after"]),
                          quality={k: float(x) for k, x in saved["quality"].items()})
