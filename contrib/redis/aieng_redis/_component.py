"""``redis-cache``: the exact-match cache with Redis as its (only or second) level."""

from __future__ import annotations

import attrs
from aieng_cache import DEFAULT_TTL, CacheOptions, ExactCache, ttl_table
from aieng_hookspecs import masked_url
from attrs import validators as v

from ._level import RedisLevel, check_seconds

__all__ = ["RedisCacheOptions", "redis_cache"]

_str = v.instance_of(str)


def _count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value)


@attrs.frozen
class RedisCacheOptions:
    """Options of the ``redis-cache`` component.

    :param url: ``redis://[:password@]host:port/db`` of the server.
    :param prefix: put before every key.
    :param memory: keep an in-process LRU level in front of Redis.
    :param max_entries: most entries of the memory level.
    :param max_bytes: most bytes of the memory level.
    :param socket_timeout: seconds to connect or wait for an answer (a finite number > 0).
    :param ttl: seconds an entry lives per content type; ``default`` for the others.
    :param namespace: separates caches sharing a database.
    :param template_version: the prompt template's version; part of every key.
    :param key_pipeline: make the pipeline's name part of every key.
    :param cache_sampled: also cache sampled requests (temperature > 0) without a seed.
    """

    url: str = attrs.field(default="redis://127.0.0.1:6379/0", validator=_str,
                           repr=lambda url: repr(masked_url(url)))  # never the password
    prefix: str = attrs.field(default="aieng:cache:", validator=[_str, v.min_len(1)])
    memory: bool = attrs.field(default=False, validator=v.instance_of(bool))
    max_entries: int = attrs.field(default=10_000, validator=_count)
    max_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_count)
    socket_timeout: float = attrs.field(default=5.0, validator=_seconds)
    ttl: dict[str, float] = attrs.field(factory=lambda: dict(DEFAULT_TTL),
                                        converter=ttl_table, hash=False)
    namespace: str = attrs.field(default="", validator=_str)
    template_version: str = attrs.field(default="", validator=_str)
    key_pipeline: bool = attrs.field(default=True, validator=v.instance_of(bool))
    cache_sampled: bool = attrs.field(default=False, validator=v.instance_of(bool))


def redis_cache(options: RedisCacheOptions | None = None) -> ExactCache:
    """Build the ``redis-cache`` component: an :class:`~aieng_cache.ExactCache` whose
    level is Redis (behind an in-process LRU when ``memory``)."""
    opts = options if options is not None else RedisCacheOptions()
    level = RedisLevel(opts.url, opts.prefix, socket_timeout=opts.socket_timeout)
    cache_options = CacheOptions(
        memory=opts.memory, max_entries=opts.max_entries, max_bytes=opts.max_bytes,
        redis=opts.url, redis_prefix=opts.prefix, ttl=opts.ttl, namespace=opts.namespace,
        template_version=opts.template_version, key_pipeline=opts.key_pipeline,
        cache_sampled=opts.cache_sampled)
    return ExactCache(cache_options, levels=[level])
