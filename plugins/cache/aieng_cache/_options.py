"""The typed options of the ``cache`` and ``semantic-cache`` components."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from aieng_hookspecs import masked_url
from attrs import validators as v

__all__ = ["DEFAULT_TTL", "CacheOptions", "SemanticOptions", "ttl_for", "ttl_table"]

DEFAULT_TTL: dict[str, float] = {"default": 3600.0}
_str = v.instance_of(str)


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) of at least ``low``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _busy_timeout(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    """Validator: a finite number of seconds of at least 0 (0: no waiting)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value < math.inf:
        why = " (a string: the unit is always seconds, write the number alone)" \
            if isinstance(value, str) else ""
        raise ValueError(f"{attribute.name} must be a finite number of seconds of at least "
                         f"0 (0: no waiting), got {value!r}{why}")


def ttl_table(value: Mapping[str, Any]) -> dict[str, float]:
    """Converter and check of a TTL table: content type -> seconds (> 0; ``inf``: never).

    ``0`` and negative numbers are refused (an entry that expires as it is stored caches
    nothing: leave the cache out of the pipeline instead), and so are NaN, booleans and
    strings, units or not (``"1h"``: the unit is always seconds)."""
    if not isinstance(value, Mapping):
        hint = f" (ttl = {{ default = {value!r} }})" if isinstance(value, (int, float)) \
            and not isinstance(value, bool) else ""
        raise TypeError(f"ttl must be a table of content type = seconds{hint}, got "
                        f"{value!r}")
    table: dict[str, float] = {}
    for kind, seconds in value.items():
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"ttl keys must be content type names, got {kind!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or math.isnan(seconds) or seconds <= 0:
            why = ""
            if isinstance(seconds, str):
                why = " (a string: write the seconds as a number, 3600 for an hour)"
            elif isinstance(seconds, (int, float)) and not isinstance(seconds, bool) \
                    and seconds <= 0:
                why = (" (an entry that expires as it is stored caches nothing: leave the "
                       "cache out of the pipeline instead)")
            raise ValueError(f"ttl.{kind} must be a number of seconds > 0 (inf: never "
                             f"expires), got {seconds!r}{why}")
        table[kind] = float(seconds)
    if "default" not in table:
        raise ValueError("ttl must have a 'default' entry (seconds for content types not "
                         f"listed); got keys {sorted(table)}")
    return table


def ttl_for(table: Mapping[str, float], kind: str) -> float:
    """Seconds an entry of content type ``kind`` lives."""
    return table.get(kind, table["default"])


def _threshold(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be a cosine in (0, 1], got {value!r}")


@attrs.frozen
class CacheOptions:
    """Options of the exact-match, multi-level ``cache`` component.

    Lookups go memory → Redis → SQLite (the levels configured); a hit in a slower level is
    copied into the faster ones with its remaining TTL; a store writes every level.

    :param memory: keep an in-process LRU level.
    :param max_entries: most entries of the memory level.
    :param max_bytes: most bytes of the memory level (the entries' encoded size).
    :param sqlite: path of a SQLite file level ('' for none).
    :param sqlite_max_entries: most entries of the SQLite file (``0``: no bound); a store
        past it deletes the oldest entries (by time stored), expired or not.
    :param sqlite_busy_timeout: seconds a call waits for another connection's lock on the
        SQLite file before it fails ("database is locked").
    :param redis: URL of a Redis level (``redis://host:port/db``; '' for none; needs the
        ``aieng-redis`` distribution).
    :param redis_prefix: prefix of the Redis keys.
    :param ttl: seconds an entry lives per content type (``chat``, ``json``, ``tools`` or
        a request's ``metadata["cache_type"]``); ``default`` for the others. Numbers
        > 0, ``inf`` for never; counted on the monotonic clock in memory, on the wall
        clock in SQLite, by Redis itself in Redis.
    :param namespace: separates caches sharing a store.
    :param template_version: the prompt template's version; part of every key.
    :param key_pipeline: make the pipeline's name part of every key.
    :param cache_sampled: also cache sampled requests (temperature > 0) without a seed.
    :param promote: copy hits of slower levels into the faster ones.
    """

    memory: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_entries: int = attrs.field(default=10_000, validator=_int_at_least(1))
    max_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_int_at_least(1))
    sqlite: str = attrs.field(default="", validator=_str)
    sqlite_max_entries: int = attrs.field(default=0, validator=_int_at_least(0))
    sqlite_busy_timeout: float = attrs.field(default=5.0, validator=_busy_timeout)
    redis: str = attrs.field(default="", validator=_str,
                             repr=lambda url: repr(masked_url(url)))
    redis_prefix: str = attrs.field(default="aieng:cache:", validator=_str)
    ttl: dict[str, float] = attrs.field(factory=lambda: dict(DEFAULT_TTL),
                                        converter=ttl_table, hash=False)
    namespace: str = attrs.field(default="", validator=_str)
    template_version: str = attrs.field(default="", validator=_str)
    key_pipeline: bool = attrs.field(default=True, validator=v.instance_of(bool))
    cache_sampled: bool = attrs.field(default=False, validator=v.instance_of(bool))
    promote: bool = attrs.field(default=True, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if not (self.memory or self.sqlite or self.redis):
            raise ValueError("the cache has no level: set memory = true, sqlite = PATH or "
                             "redis = URL")


@attrs.frozen
class SemanticOptions:
    """Options of the ``semantic-cache`` component.

    :param threshold: the least cosine between two prompts for a hit. The default, 0.91, is
        the threshold :func:`aieng_cache.calibrate` chose on the shipped paraphrase set with
        all-MiniLM-L6-v2 for a false-hit rate of at most 5 % (it hits about a quarter of
        the paraphrases there: see the README); calibrate on your own traffic.
    :param model: the embedding model asked of the pipeline ('' for its default).
    :param max_entries: most entries of the index (least recently used evicted).
    :param path: SQLite file persisting the index ('' keeps it in memory only).
    :param file_max_entries: most entries of the file at ``path`` (``0``: no bound), of
        every namespace and cache sharing it: a store past it deletes the oldest (by time
        stored), expired or not, as ``cache``'s ``sqlite_max_entries``.
    :param file_busy_timeout: seconds a call waits for another connection's lock on the
        file before it fails ("database is locked").
    :param ttl: seconds an entry lives per content type, as for ``cache``.
    :param namespace: separates caches sharing a file.
    :param template_version: the prompt template's version; part of every key.
    :param key_pipeline: make the pipeline's name part of every key.
    :param cache_sampled: also cache sampled requests (temperature > 0) without a seed.
    """

    threshold: float = attrs.field(default=0.91, validator=_threshold)
    model: str = attrs.field(default="", validator=_str)
    max_entries: int = attrs.field(default=10_000, validator=_int_at_least(1))
    path: str = attrs.field(default="", validator=_str)
    file_max_entries: int = attrs.field(default=0, validator=_int_at_least(0))
    file_busy_timeout: float = attrs.field(default=5.0, validator=_busy_timeout)
    ttl: dict[str, float] = attrs.field(factory=lambda: dict(DEFAULT_TTL),
                                        converter=ttl_table, hash=False)
    namespace: str = attrs.field(default="", validator=_str)
    template_version: str = attrs.field(default="", validator=_str)
    key_pipeline: bool = attrs.field(default=True, validator=v.instance_of(bool))
    cache_sampled: bool = attrs.field(default=False, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.file_max_entries and not self.path:
            raise ValueError("file_max_entries bounds the file at path, and path is '': "
                             "set path, or leave file_max_entries at 0")
