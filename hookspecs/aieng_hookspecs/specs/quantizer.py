"""Role ``quantizer``: shrink a model's weights."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import QuantizeResult

__all__ = ["aieng_quantize"]


@role_spec(CallMode.FIRST, role="quantizer")
def aieng_quantize(model: str, scheme: str) -> QuantizeResult | None:
    """Quantize a model with a scheme.

    :called: by ``aieng quantize`` and by backends that load a model with a scheme option.
    :mode: first: the first quantizer supporting the scheme does the work.
    :none: "scheme not supported here": the next quantizer is asked.
    :async: may be ``async def``; the work is heavy and belongs in a thread or process.
    :param model: a local model path or model id; left as it is: the quantized model is
        written elsewhere (new files beside it are fine, its own files are not changed).
    :param scheme: ``"int8"``, ``"nf4"``, ... as the quantizer documents.
    :returns: where the result is, sizes before and after, and the quality change.

    .. versionadded:: 0.1.0
    """
