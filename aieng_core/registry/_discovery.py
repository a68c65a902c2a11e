"""Finding plugins: entry points of the group ``aieng`` and the allow / block lists."""

from __future__ import annotations

import importlib.metadata as metadata
import re
from collections.abc import Iterable, Mapping

import attrs

from aieng_hookspecs import PROJECT

__all__ = ["Candidate", "discover", "matches", "selection"]

ENTRY_POINT_GROUP = PROJECT


@attrs.frozen
class Candidate:
    """A plugin found but not loaded yet."""

    name: str
    entry_point: metadata.EntryPoint | None
    distribution: str = ""
    version: str = ""
    #: The distribution's ``Requires-Dist`` lines.
    requires: tuple[str, ...] = ()


def discover(entry_points: Iterable[metadata.EntryPoint] | None = None) -> list[Candidate]:
    """The installed plugins, sorted by name so load order (and conflicts) are reproducible.

    :param entry_points: entry points to use instead of the installed ones (tests).
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    found = []
    for ep in entry_points:
        dist = getattr(ep, "dist", None)
        found.append(
            Candidate(
                name=ep.name,
                entry_point=ep,
                distribution=dist.name if dist is not None else "",
                version=dist.version if dist is not None else "",
                requires=tuple(dist.requires or ()) if dist is not None else (),
            )
        )
    return sorted(found, key=lambda c: c.name)


def _names(value: str | None) -> frozenset[str] | None:
    """The names of a comma-separated list; ``None`` when it names none (unset, blank, or
    only commas and spaces, as ``",$EXTRA"`` with ``$EXTRA`` empty): no list."""
    if value is None:
        return None
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    return names or None


def _normalized(distribution: str) -> str:
    """A distribution name as pip compares it (PEP 503): ``aieng_bm25`` is ``aieng-bm25``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def matches(entry: str, candidate: Candidate) -> bool:
    """Whether an ``AIENG_PLUGINS`` / ``AIENG_DISABLE_PLUGINS`` entry names ``candidate``.

    An entry matches the plugin's entry-point name exactly, or its distribution's name as
    pip compares names, so the import name ``aieng_bm25`` names the distribution
    ``aieng-bm25``: distributions equal under that comparison are one distribution, so
    the match is never ambiguous.
    """
    if entry == candidate.name:
        return True
    return bool(candidate.distribution) and _normalized(entry) == _normalized(
        candidate.distribution)


def selection(env: Mapping[str, str]) -> tuple[frozenset[str] | None, frozenset[str]]:
    """The allowlist (``AIENG_PLUGINS``; ``None``: all) and blocklist (``AIENG_DISABLE_PLUGINS``).

    Both are comma-separated; an entry matches a plugin's name or its distribution's name
    (see :func:`matches`).
    """
    allow = _names(env.get("AIENG_PLUGINS"))
    block = _names(env.get("AIENG_DISABLE_PLUGINS")) or frozenset()
    return allow, block
