"""The gateway's settings."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from aieng_core.agent import AgentOptions

__all__ = ["GatewaySettings", "parse_size"]

# Possessive blanks: the two runs around an absent unit were retried against each other.
_SIZE = re.compile(r"^\s*+(\d+(?:\.\d+)?)\s*+([kmg]?i?b?)?\s*+$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "kib": 1024, "ki": 1024, "mib": 1024**2, "mi": 1024**2,
          "gib": 1024**3, "gi": 1024**3}


def parse_size(text: str) -> int:
    """``"1MB"`` -> 1000000, ``"512KiB"`` -> 524288, ``"2048"`` -> 2048.

    :raises ValueError: on anything else, or a size below 1 byte.
    """
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 1MB, 512KiB, 65536)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"a size must be at least 1 byte, got {text!r}")
    return size


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _window(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    # NaN passes "<= 0" and then never compares true: a window that silently never holds.
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive, finite number of seconds, "
                         f"got {value!r}")


def _interval(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a number of seconds, 0 or more "
                         f"(0: off), got {value!r}")


def _cap(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{attribute.name} must be a positive integer or None (no cap), "
                         f"got {value!r}")


def _agent(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    from aieng_core.agent import AgentOptions  # loaded when a gateway is configured

    if value is not None and not isinstance(value, AgentOptions):
        raise ValueError(f"{attribute.name} must be an AgentOptions or None, got {value!r}")


@attrs.frozen
class GatewaySettings:
    """How the gateway serves.

    :param auth: require an API key on ``/v1/*`` (and ``/metrics`` unless public).
    :param max_body: the largest request body in bytes (larger: 413).
    :param regenerate_window: seconds within which the same key sending the same
        conversation again counts as ``regenerate`` feedback on the earlier run.
    :param public_metrics: serve ``/metrics`` without a key (for a scraper on a private
        network).
    :param keepalive_s: a stream that has sent nothing for this many seconds (a slow first
        token, an answer held back for the output guards) sends an SSE comment
        (``: keep-alive``), so proxies and load balancers with an idle timeout (nginx's
        ``proxy_read_timeout``, AWS ALB: 60 s) do not cut it; 0 turns it off.
    :param expose_upstream_urls: show clients the URLs an upstream error names (an HTTP
        backend's ``url: http://10.0.0.7:8000/v1/...``); off by default, they are shown as
        ``<upstream>`` (the internal hosts and ports are the operator's business) and the
        whole message is logged (``gateway.upstream_error``, with the run id).
    :param agent: agent mode: each chat completion runs ``Agent(pipeline, agent).run``
        (the pipeline's tools run on the server; ``aieng serve --agent``); ``None``: one
        pipeline run per request.
    :param max_tokens: the most tokens a chat request may ask for (``aieng serve
        --max-tokens``): one asking more (``max_tokens`` or ``max_completion_tokens``) is
        a 400 naming the field and the cap, one asking nothing gets the cap, so no client
        holds a backend for as long as a model will generate; in agent mode it bounds every
        model call of the run. ``None``: no cap (a request asking nothing gets the
        contract's default, ``Request.max_tokens``).
    """

    auth: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    max_body: int = attrs.field(default=1_000_000, validator=_positive)
    regenerate_window: float = attrs.field(default=120.0, validator=_window)
    public_metrics: bool = attrs.field(default=False,
                                       validator=attrs.validators.instance_of(bool))
    keepalive_s: float = attrs.field(default=15.0, validator=_interval)
    expose_upstream_urls: bool = attrs.field(default=False,
                                             validator=attrs.validators.instance_of(bool))
    agent: AgentOptions | None = attrs.field(default=None, validator=_agent)
    max_tokens: int | None = attrs.field(default=None, validator=_cap)
