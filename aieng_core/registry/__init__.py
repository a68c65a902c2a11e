"""Plugin discovery and the component registry."""

from ._contract import contract_conflict, installed_contract
from ._discovery import ENTRY_POINT_GROUP
from ._info import ComponentInfo, PluginInfo, hooks_of, spec_names, unmarked_hooks
from ._registry import BUILTIN, ReaderInfo, Registry, run_registration

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "ComponentInfo",
    "PluginInfo",
    "ReaderInfo",
    "Registry",
    "contract_conflict",
    "hooks_of",
    "installed_contract",
    "run_registration",
    "spec_names",
    "unmarked_hooks",
]
