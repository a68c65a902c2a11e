"""Make ``aieng_context`` (and the tests' ``context_helpers``) importable, installed or not."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _folder in (str(_HERE / "tests"), str(_HERE)):
    if _folder not in sys.path:
        # An installed copy, if any, loses to this checkout: the tests test these sources.
        sys.path.insert(0, _folder)
