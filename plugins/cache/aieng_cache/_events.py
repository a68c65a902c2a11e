"""The caches' own events (the kernel emits ``cache.hit`` itself, naming the component)."""

from __future__ import annotations

from typing import ClassVar

import attrs
from aieng_hookspecs.types import Event
from attrs import field
from attrs import validators as v

__all__ = ["CacheLevelHit", "CacheMiss", "CacheStored"]

_str = v.instance_of(str)


@attrs.frozen(kw_only=True)
class CacheMiss(Event):
    """A cache did not answer a request; ``reason`` is ``absent`` (no live entry) or
    ``uncacheable`` (a sampled request without a seed)."""

    name: ClassVar[str] = "cache.miss"
    component: str = field(validator=_str)
    reason: str = field(default="absent", validator=_str)


@attrs.frozen(kw_only=True)
class CacheLevelHit(Event):
    """Which level of a cache answered (``memory``, ``redis``, ``sqlite``, ``semantic``),
    and for a semantic hit the cosine of the prompts (1.0 for an exact hit)."""

    name: ClassVar[str] = "cache.level_hit"
    component: str = field(validator=_str)
    level: str = field(validator=_str)
    similarity: float = field(default=1.0, validator=v.instance_of(float))


@attrs.frozen(kw_only=True)
class CacheStored(Event):
    """A cache stored a completion of content type ``kind`` for ``ttl_s`` seconds."""

    name: ClassVar[str] = "cache.store"
    component: str = field(validator=_str)
    kind: str = field(validator=_str)
    ttl_s: float = field(validator=v.instance_of(float))
