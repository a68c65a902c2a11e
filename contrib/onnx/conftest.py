"""Make ``aieng_onnx`` importable from this folder, installed or not; one thread (on a
shared 2-core machine, two threads can run many times slower)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    # An installed copy, if any, loses to this checkout: the tests test these sources.
    sys.path.insert(0, _HERE)
