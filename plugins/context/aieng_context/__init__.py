"""aieng-context: the ``context`` builder, templated prompts with cited, fenced passages.

The kernel loads this module through the entry point ``context`` of the group ``aieng`` and
calls :func:`aieng_register_components`. Importing it loads no tokenizer: a
``tokenizer_path`` is read when the pipeline opens or on first use.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._budget import Passage, select
from ._builder import ContextBuilder
from ._fence import FENCE_CLOSE, FENCE_OPEN, fence, neutralize, neutralize_citations, one_line
from ._options import ContextOptions, Order
from ._templates import TEMPLATES, Example, PromptTemplate, TemplateName, render_user
from ._tokens import TokenCounter, approximate_tokens, load_tokenizer

__all__ = [
    "FENCE_CLOSE",
    "FENCE_OPEN",
    "TEMPLATES",
    "ContextBuilder",
    "ContextOptions",
    "Example",
    "Order",
    "Passage",
    "PromptTemplate",
    "TemplateName",
    "TokenCounter",
    "aieng_register_components",
    "approximate_tokens",
    "fence",
    "load_tokenizer",
    "neutralize",
    "neutralize_citations",
    "one_line",
    "render_user",
    "select",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``context`` builder with its typed options."""
    registry.add("context", ContextBuilder, options=ContextOptions,
                 description="templated prompt with cited, fenced passages under a token budget")
