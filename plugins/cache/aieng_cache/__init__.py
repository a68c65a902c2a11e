"""aieng-cache: the ``cache`` (exact match, memory → Redis → SQLite) and ``semantic-cache``
components.

- ``cache`` answers a request whose key — a hash of its normalized messages, sampling
  parameters, model, template version and pipeline — was stored before; its levels are an
  in-process LRU (bounded by entries and bytes), Redis (with ``aieng-redis``) and a SQLite
  file in WAL mode, each optional; TTLs are per content type.
- ``semantic-cache`` answers a request whose last user message is at least ``threshold``
  similar (cosine of the pipeline's embeddings) to a stored one, the rest of the request
  matching exactly; :func:`calibrate` picks the threshold from labelled pairs.

The kernel loads this module through the entry point ``cache`` of the group ``aieng``;
importing it imports neither numpy nor sqlite files: they load on first use.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, EventRegistry, hookimpl

from ._calibrate import Calibration, Pair, Rates, calibrate, load_pairs, measure, score_pairs
from ._codec import CodecError, decode_completion, encode_completion, payload_namespace
from ._events import CacheLevelHit, CacheMiss, CacheStored
from ._exact import CacheStats, ExactCache
from ._index import SemanticIndex
from ._keys import KeyScope, cacheable, content_type, normalize_text, partition_key, request_key
from ._levels import LEVEL_GROUP, Level, SQLiteLevel, Stored, load_level
from ._lru import LRU
from ._options import DEFAULT_TTL, CacheOptions, SemanticOptions, ttl_table
from ._semantic import Embedder, SemanticCache
from ._sqlite import SQLiteStore

__all__ = [
    "DEFAULT_TTL",
    "LEVEL_GROUP",
    "LRU",
    "CacheLevelHit",
    "CacheMiss",
    "CacheOptions",
    "CacheStats",
    "CacheStored",
    "Calibration",
    "CodecError",
    "Embedder",
    "ExactCache",
    "KeyScope",
    "Level",
    "Pair",
    "Rates",
    "SQLiteLevel",
    "SQLiteStore",
    "SemanticCache",
    "SemanticIndex",
    "SemanticOptions",
    "Stored",
    "aieng_register_components",
    "aieng_register_events",
    "cacheable",
    "calibrate",
    "content_type",
    "decode_completion",
    "encode_completion",
    "load_level",
    "load_pairs",
    "measure",
    "normalize_text",
    "partition_key",
    "payload_namespace",
    "request_key",
    "score_pairs",
    "ttl_table",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``cache`` and ``semantic-cache`` components."""
    registry.add("cache", ExactCache, options=CacheOptions,
                 description="Exact-match cache: memory LRU → Redis → SQLite (WAL), TTLs "
                             "per content type")
    registry.add("semantic-cache", SemanticCache, options=SemanticOptions,
                 description="Semantic cache: cosine of prompt embeddings >= threshold")


@hookimpl
def aieng_register_events(registry: EventRegistry) -> None:
    """Declare ``cache.miss``, ``cache.level_hit`` and ``cache.store``."""
    registry.add(CacheMiss)
    registry.add(CacheLevelHit)
    registry.add(CacheStored)
