"""The peer libraries a benchmark measures against: a clear exit when one is missing.

Scripts call :func:`require` right after parsing their arguments, before any work, so that
a missing peer is reported at once (with the command that installs it) instead of as a
traceback minutes into a run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

#: Import names whose distribution on PyPI is named differently.
DISTRIBUTIONS = {
    "Stemmer": "PyStemmer",
    "rank_bm25": "rank-bm25",
    "langchain_core": "langchain-core",
    "haystack": "haystack-ai",
    "sentence_transformers": "sentence-transformers",
    "sklearn": "scikit-learn",
    "faiss": "faiss-cpu",
    "sqlalchemy": "SQLAlchemy",
    "rouge_score": "rouge-score",
}


def missing(*modules: str) -> list[str]:
    """The distributions of ``modules`` that do not import."""
    out = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            out.append(DISTRIBUTIONS.get(module, module))
    return out


def require(*modules: str) -> None:
    """Exit (status 1, a message on stderr) when any of ``modules`` does not import."""
    absent = missing(*modules)
    if absent:
        raise SystemExit(
            f"{Path(sys.argv[0]).name}: not installed: {', '.join(absent)} (needed to run it); "
            f"install with: .venv/bin/pip install -c constraints.txt {' '.join(absent)}")
