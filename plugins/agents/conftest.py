"""Make ``aieng_agents`` importable from this folder, installed or not."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    # An installed copy, if any, loses to this checkout: the tests test these sources.
    sys.path.insert(0, _HERE)
