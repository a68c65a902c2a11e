"""The typed options of the ``minilm-trt`` component."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs
from attrs import validators as v

from ._profile import ShapeProfile

__all__ = ["TensorRTOptions"]


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _non_blank(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must name a file, got {value!r}")


def _triple(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or any(
            isinstance(x, bool) or not isinstance(x, int) for x in value):
        raise ValueError(f"{attribute.name} must be [min, opt, max] integers, got {value!r}")


def _as_tuple(value: Any) -> Any:
    # A list or tuple as a tuple; anything else as it is, for _triple to refuse by name
    # (``converter=tuple`` made ``batch = 5`` a bare "'int' object is not iterable").
    return tuple(value) if isinstance(value, (list, tuple)) else value


@attrs.frozen
class TensorRTOptions:
    """Options of the ``minilm-trt`` embedder.

    :param onnx_path: the encoder's ONNX export (inputs ``input_ids``, ``attention_mask``
        and optionally ``token_type_ids``; output ``last_hidden_state``), e.g. the MiniLM
        export of aieng-onnx.
    :param tokenizer_path: the ``tokenizer.json`` of the encoder; empty: the one next to
        the ONNX file.
    :param cache_dir: the folder of built engines (building takes minutes, loading seconds);
        empty: ``tensorrt/`` in aieng's cache folder (``$AIENG_CACHE_DIR``, else the user
        cache dir: :func:`aieng_hookspecs.user_cache_dir`).
    :param precision: ``"fp16"`` (TensorRT may pick half-precision kernels) or ``"fp32"``.
    :param batch: the engine's ``[min, opt, max]`` batch size.
    :param seq: the engine's ``[min, opt, max]`` sequence length, in tokens; longer texts
        are truncated to the maximum.
    :param device: the CUDA device index.
    :param workspace_mb: TensorRT's builder workspace limit.
    :param model: the model id this embedder answers to (``aieng_embed``'s ``model``).
    """

    onnx_path: str = attrs.field(validator=_non_blank)
    tokenizer_path: str = attrs.field(default="", validator=v.instance_of(str))
    cache_dir: str = attrs.field(default="", validator=v.instance_of(str))
    precision: Literal["fp16", "fp32"] = attrs.field(default="fp16",
                                                     validator=v.in_(("fp16", "fp32")))
    batch: tuple[int, int, int] = attrs.field(default=(1, 16, 64), converter=_as_tuple,
                                              validator=_triple)
    seq: tuple[int, int, int] = attrs.field(default=(1, 128, 256), converter=_as_tuple,
                                            validator=_triple)
    device: int = attrs.field(default=0, validator=_int_at_least(0))
    workspace_mb: int = attrs.field(default=1024, validator=_int_at_least(16))
    model: str = attrs.field(default="all-MiniLM-L6-v2", validator=_non_blank)

    def __attrs_post_init__(self) -> None:
        self.profile  # noqa: B018 - min <= opt <= max is checked when the options load

    @property
    def profile(self) -> ShapeProfile:
        """The shape profile of ``batch`` and ``seq``."""
        return ShapeProfile.from_lists(self.batch, self.seq)
