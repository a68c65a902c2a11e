"""The typed options of the ``weaviate`` component."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Literal

import attrs
from aieng_hookspecs import masked_url
from attrs import validators as v

__all__ = ["URL_ENV", "WeaviateOptions"]

#: The environment variable read when the ``url`` option is empty.
URL_ENV = "AIENG_WEAVIATE_URL"

# Weaviate collection names are GraphQL type names, capitalised.
_COLLECTION = re.compile(r"[A-Z][_0-9A-Za-z]{0,254}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _int_in(low: int, high: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) in ``[low, high]``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be in [{low}, {high}], got {value}")

    return check


#: The longest ``timeout_s`` (an hour): past it a stalled server holds a call for good.
MAX_TIMEOUT_S = 3600.0


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    """Validator: a number of seconds in (0, MAX_TIMEOUT_S]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        unit = " (the unit is always seconds: write the number alone)" \
            if isinstance(value, str) else ""
        raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}{unit}")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(f"{attribute.name} must be a number of seconds in (0, "
                         f"{MAX_TIMEOUT_S:g}], got {value!r}")


def _alpha(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"alpha must be a number, got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] (0: BM25 only, 1: vector only), "
                         f"got {value}")


def _collection(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _COLLECTION.fullmatch(value):
        raise ValueError(f"collection must be a Weaviate collection name (a capital letter, "
                         f"then letters, digits or _), got {value!r}")


def _url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"url must be a string, got {value!r}")
    # A host name, an IPv4 address or a bracketed IPv6 one ([::1]), then an optional port.
    match = re.fullmatch(r"https?://(?:[^/\s:@?#\[\]]+|\[([0-9A-Fa-f:.]+)\])(?::(\d{1,5}))?/?",
                         value)
    if match and match[1] is not None:
        try:
            ipaddress.IPv6Address(match[1])
        except ValueError:
            match = None
    if value and not match:
        shown = masked_url(value)
        raise ValueError(f"url must look like http://host:8080, https://host or "
                         f"http://[::1]:8080, got {shown!r}"
                         + ("; credentials do not go in the url: put an API key in an "
                            "environment variable named by api_key_env" if shown != value
                            else ""))
    if match and match[2] is not None and not 1 <= int(match[2]) <= 65535:
        raise ValueError(f"url's port must be in [1, 65535], got {value!r}")


def _env_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {value!r}")
    if value and not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{attribute.name} must name an environment variable, got {value!r}")


@attrs.frozen
class WeaviateOptions:
    """Options of the ``weaviate`` store.

    :param url: the server's HTTP address (``http://localhost:8080``); empty: the
        environment variable ``AIENG_WEAVIATE_URL``.
    :param grpc_port: the server's gRPC port (same host, same TLS as ``url``).
    :param collection: the collection to search and write; created on open when missing.
    :param mode: ``"hybrid"`` (BM25 and vectors fused), ``"bm25"`` or ``"vector"``
        (``near_vector``).
    :param alpha: the hybrid weight: ``0`` is BM25 only, ``1`` vectors only.
    :param fusion: how hybrid fuses its two runs: ``"relative_score"`` or ``"ranked"``.
    :param api_key_env: the environment variable holding an API key; empty: no auth.
    :param model: the embedding model asked for (``aieng_embed``'s ``model``); empty: the
        embedding backend's default.
    :param batch_size: the most documents per embed call and per insert batch.
    :param timeout_s: seconds the server has to answer a query, an insert or a delete
        (and, at most 30 of them, each request of connecting), in (0, 3600]; past it the
        call fails with :class:`~aieng_weaviate.WeaviateTimeout` (or, connecting,
        ``WeaviateUnavailable``) naming this option.
    """

    url: str = attrs.field(default="", validator=_url)
    grpc_port: int = attrs.field(default=50051, validator=_int_in(1, 65535))
    collection: str = attrs.field(default="AiengDocuments", validator=_collection)
    mode: Literal["hybrid", "bm25", "vector"] = attrs.field(
        default="hybrid", validator=v.in_(("hybrid", "bm25", "vector")))
    alpha: float = attrs.field(default=0.5, validator=_alpha)
    fusion: Literal["relative_score", "ranked"] = attrs.field(
        default="relative_score", validator=v.in_(("relative_score", "ranked")))
    api_key_env: str = attrs.field(default="", validator=_env_name)
    model: str = attrs.field(default="", validator=v.instance_of(str))
    batch_size: int = attrs.field(default=100, validator=_int_in(1, 10_000))
    timeout_s: float = attrs.field(default=30.0, validator=_seconds)
