"""aieng-example-plugin: a complete third-party plugin offering the ``keyword-boost`` reranker.

The kernel loads this module through the entry point ``example`` of the group ``aieng``
and calls :func:`aieng_register_components`; the component class is imported here, but
nothing heavy is: registering must stay cheap (``aieng plugins`` imports every plugin).
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._keyword_boost import KeywordBoostOptions, KeywordBoostReranker

__all__ = ["KeywordBoostOptions", "KeywordBoostReranker", "aieng_register_components"]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``keyword-boost`` reranker with its typed options."""
    registry.add("keyword-boost", KeywordBoostReranker, options=KeywordBoostOptions)
