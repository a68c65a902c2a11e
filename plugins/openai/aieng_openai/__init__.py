"""aieng-openai: the ``openai`` backend, an OpenAI-compatible HTTP client over httpx.

The kernel loads this module through the entry point ``openai`` of the group ``aieng`` and
calls :func:`aieng_register_components`. Importing it imports no HTTP library: httpx
loads when the component opens its client.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._component import OpenAIBackend
from ._errors import OpenAIError
from ._options import OpenAIOptions
from ._retry import backoff, retry_after, retryable_status
from ._sse import sse_data, sse_lines

__all__ = [
    "OpenAIBackend",
    "OpenAIError",
    "OpenAIOptions",
    "aieng_register_components",
    "backoff",
    "retry_after",
    "retryable_status",
    "sse_data",
    "sse_lines",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``openai`` backend with its typed options."""
    registry.add("openai", OpenAIBackend, options=OpenAIOptions,
                 description="OpenAI-compatible HTTP backend (vLLM, TGI, llama.cpp server, "
                             "hosted APIs): chat, SSE streaming, embeddings")
