"""aieng-gateway: ``aieng serve``, an OpenAI-compatible HTTP gateway for any pipeline.

Routes: ``POST /v1/chat/completions`` (JSON or server-sent events), ``POST /v1/embeddings``,
``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/feedback``, ``GET /metrics``
(Prometheus text of the pipeline's monitoring components), ``GET /healthz``. API keys
(``aieng keys``) are stored hashed in SQLite and limited per key in requests and tokens
per minute.

The kernel loads this module through the entry point ``gateway`` of the group ``aieng``;
it adds the ``serve`` and ``keys`` commands. Importing it imports neither starlette nor
uvicorn: they load when a command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aieng_hookspecs import hookimpl

from ._keys import ApiKey, KeyStore, KeyStoreError, default_keys_path, hash_key
from ._ratelimit import Limits, TokenBucket
from ._settings import GatewaySettings, parse_size

if TYPE_CHECKING:
    from ._app import Gateway

__all__ = [
    "ApiKey",
    "Gateway",
    "GatewaySettings",
    "KeyStore",
    "KeyStoreError",
    "Limits",
    "TokenBucket",
    "aieng_register_commands",
    "default_keys_path",
    "hash_key",
    "parse_size",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Gateway":  # starlette loads only when a gateway is built
        from ._app import Gateway

        return Gateway
    raise AttributeError(f"module 'aieng_gateway' has no attribute {name!r}")


@hookimpl
def aieng_register_commands(cli: Any) -> None:
    """Add ``aieng serve`` and ``aieng keys`` (click only; the server loads when it runs)."""
    from ._cli import add_commands

    add_commands(cli)
