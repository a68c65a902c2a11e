"""aieng-redis: Redis for aieng's caches — the ``redis-cache`` component and the ``redis``
level of ``aieng-cache``'s multi-level ``cache``.

It extends ``aieng-cache`` (it builds on its key derivation, codec and cache component and
offers its level through the entry-point group ``aieng_cache.levels``), so it depends on
that distribution. redis-py loads when a level is built, not when the plugin loads.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._component import RedisCacheOptions, redis_cache
from ._level import RedisLevel, RedisUnavailable

__all__ = [
    "RedisCacheOptions",
    "RedisLevel",
    "RedisUnavailable",
    "aieng_register_components",
    "redis_cache",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``redis-cache`` component."""
    registry.add("redis-cache", redis_cache, options=RedisCacheOptions,
                 description="Exact-match cache in Redis (TTL by PX, key prefix), optional "
                             "memory LRU in front")
