"""Credentials left out of what a run writes: ``lock.json`` records each pipeline's
resolved configuration, and a lockfile travels with the results (shared, committed)."""

from __future__ import annotations

from typing import Any

from aieng_hookspecs import REDACTED, redacted

__all__ = ["REDACTED", "redact_config", "redacted_options"]


def redact_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a pipeline's ``to_dict()``, JSON-ready) with its credentials written
    ``***``: the values of credential keys (``api_key``, ``password``, ``token``,
    ``secret``, ``Authorization`` ..., at any depth) and the password of every URL
    (``redis://:***@host``)."""
    scrubbed: dict[str, Any] = redacted(config)
    return scrubbed


def redacted_options(config: Any, path: str = "") -> list[str]:
    """The dotted names of the values :func:`redact_config` wrote ``***`` in ``config``
    (``components.llm.api_key``)."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            found += redacted_options(value, f"{path}.{key}" if path else str(key))
    elif isinstance(config, list):
        for index, value in enumerate(config):
            found += redacted_options(value, f"{path}[{index}]")
    elif isinstance(config, str) and (config == REDACTED
                                      or (REDACTED in config and "://" in config)):
        found.append(path)
    return found
