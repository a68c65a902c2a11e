"""Whether a plugin's distribution was made for the installed contract (``aieng-hookspecs``):
pip installs a plugin whose requirement on it the installed version does not meet, with a
warning (``--no-deps``, an upgrade of aieng that leaves an old plugin behind)."""

from __future__ import annotations

import importlib.metadata as metadata
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["CONTRACT", "contract_conflict", "installed_contract"]

#: The distribution holding the hook specs and types.
CONTRACT = "aieng-hookspecs"


def installed_contract() -> str:
    """The installed ``aieng-hookspecs`` version; empty when its metadata is missing."""
    try:
        return metadata.version(CONTRACT)
    except metadata.PackageNotFoundError:
        return ""


def contract_conflict(distribution: str, version: str, requires: Iterable[str]) -> str:
    """A sentence saying that ``distribution`` requires another ``aieng-hookspecs`` than
    the installed one; empty when it does not (or says nothing about it, or either version
    is unknown). ``requires`` are the distribution's ``Requires-Dist`` lines."""
    installed = installed_contract()
    if not installed:
        return ""
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # pip would not have installed it; not ours to judge
            continue
        if canonicalize_name(requirement.name) != CONTRACT:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or one for another platform
        if requirement.specifier.contains(installed, prereleases=True):
            continue
        label = f"{distribution} {version}".strip()
        return (f"{label} was made for {CONTRACT}{requirement.specifier} and {CONTRACT} "
                f"{installed} is installed: install a version of {distribution} made for "
                "this aieng")
    return ""
