"""Durations written with a unit, read only to say what to write instead.

Every duration aieng takes (a pipeline file's ``timeout``, the CLI's ``--timeout``, the
kernel's options) is a plain number of seconds: TOML has no duration type, and one way to
write one is one thing to learn. A value such as ``"30s"`` is refused, and the refusal
gives the number to write, read here.
"""

from __future__ import annotations

import math
import re

__all__ = ["seconds_written"]

#: A duration written with a unit: its number, and the unit (seconds per unit below).
_WITH_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]+)\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
          "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
          "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def seconds_written(value: object) -> float | None:
    """The seconds a duration written with a unit means (``"30s"``: 30, ``"2 m"``: 120,
    ``"500ms"``: 0.5); ``None`` for anything else (a number, another text, an unknown
    unit, nothing above 0 and finite)."""
    found = _WITH_UNIT.fullmatch(value) if isinstance(value, str) else None
    factor = _UNITS.get(found[2].lower()) if found is not None else None
    if found is None or factor is None:
        return None
    seconds = float(found[1]) * factor
    return seconds if 0 < seconds < math.inf else None
