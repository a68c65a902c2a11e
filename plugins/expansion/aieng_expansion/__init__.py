"""aieng-expansion: the ``multi-query`` and ``hyde`` query expanders.

They implement ``aieng_query_expand``: the retrieve stage asks them for more queries
before retrieval, searches with the user's query and every expansion, and fuses the runs.
The kernel loads this module through the entry point ``expansion`` of the group ``aieng``
and calls :func:`aieng_register_components`; importing it imports nothing heavy.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._backend import Generate
from ._expanders import HyDEExpander, MultiQueryExpander
from ._options import HyDEOptions, MultiQueryOptions
from ._parse import passage, rewrites

__all__ = [
    "Generate",
    "HyDEExpander",
    "HyDEOptions",
    "MultiQueryExpander",
    "MultiQueryOptions",
    "aieng_register_components",
    "passage",
    "rewrites",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``multi-query`` and ``hyde`` expanders with their typed options."""
    registry.add("multi-query", MultiQueryExpander, options=MultiQueryOptions,
                 description="The backend rewrites the query N ways; each is retrieved and "
                             "fused")
    registry.add("hyde", HyDEExpander, options=HyDEOptions,
                 description="The backend writes a hypothetical answer passage to retrieve "
                             "with (HyDE)")
