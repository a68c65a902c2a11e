"""The kit's test doubles on inputs a plugin's tests feed them: odd Unicode included."""

from __future__ import annotations

import json
import math

from aieng_core.testing import HashEmbedder


def test_hash_embedder_embeds_a_lone_surrogate() -> None:
    """A lone surrogate (what ``json.loads`` makes of ``"\\ud800"`` in a request body) is
    hashed like any other word: a unit vector, deterministic, not a UnicodeEncodeError."""
    text = json.loads('"caf\\u00e9 \\ud800 tea"')
    embedder = HashEmbedder(dimensions=16)
    [vector] = embedder.aieng_embed([text], None) or []
    assert math.isclose(math.fsum(x * x for x in vector), 1.0)
    assert vector == embedder.vector(text)
    assert embedder.vector("\ud800") != [0.0] * 16
