"""A flat index of the hook specs (for ``aieng hooks`` and the docs)."""

from __future__ import annotations

import inspect
from typing import Any

from aieng_hookspecs.specs import REGISTRATION_MODULES, ROLE_MODULES

__all__ = ["hook_rows", "spec_functions"]


def spec_functions() -> list[Any]:
    """Every spec function, each once, in module order."""
    seen: dict[str, Any] = {}
    for module in (*ROLE_MODULES, *REGISTRATION_MODULES):
        for name in getattr(module, "__all__", ()):
            seen.setdefault(name, getattr(module, name))
    return list(seen.values())


def hook_rows() -> list[dict[str, Any]]:
    """One row per hook: name, role, mode, signature."""
    return [
        {
            "hook": fn.__name__,
            "role": fn.aieng_role,
            "mode": fn.aieng_call_mode.value,
            "signature": f"{fn.__name__}{inspect.signature(fn)}",
        }
        for fn in spec_functions()
    ]
