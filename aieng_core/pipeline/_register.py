"""Registering a pipeline's component instances in its own plugin manager, where pluggy
checks each role hook's arguments against the contract."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pluggy

from .._errors import ConfigError
from ..registry import BUILTIN, PluginInfo, installed_contract, unmarked_hooks
from ._each import ROLE_SPECS

__all__ = ["register_components"]


def register_components(pm: pluggy.PluginManager, built: Sequence[tuple[str, object]],
                        source: str, plugin_of: Callable[[str], PluginInfo | None]) -> None:
    """Register ``built`` (component name, instance) in ``pm``.

    :param plugin_of: the plugin that registered a component's class (``None`` for a
        ready-made instance), named in the error when its hooks do not fit the contract.
    :raises ConfigError: for a hook defined without ``@hookimpl``, a hook whose arguments
        the contract does not have (a plugin made for another version of aieng), a hook
        name the contract does not define, or a hook wrapper on a role hook.
    """
    # pluggy calls the last registered first: register in reverse file order.
    for name, instance in reversed(built):
        if unmarked := unmarked_hooks(instance, ROLE_SPECS):
            raise ConfigError(f"component {name!r} defines {', '.join(unmarked)} without "
                              "@hookimpl: it would never be called", source=source,
                              key=f"components.{name}")
        try:
            pm.register(instance, name=name)
        except pluggy.PluginValidationError as exc:
            raise ConfigError(f"component {name!r} has an invalid hook impl: {exc}"
                              f"{_made_for(plugin_of(name))}",
                              source=source, key=f"components.{name}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or "?"
        raise ConfigError(f"{exc} (a misspelled hook name?){_made_for(plugin_of(name))}",
                          source=source, key=f"components.{name}") from None
    for name, _ in built:
        for caller in pm.get_hookcallers(pm.get_plugin(name)) or []:
            if any(i.wrapper or i.hookwrapper for i in caller.get_hookimpls()
                   if i.plugin_name == name):
                raise ConfigError(f"hook wrappers are not supported on role hook {caller.name}",
                                  source=source, key=f"components.{name}")


def _made_for(plugin: PluginInfo | None) -> str:
    """Why a plugin's hook may not fit: it was made for another contract (its requirement
    says so), or, for a distribution that says nothing, which contract is installed."""
    if plugin is None or plugin.name == BUILTIN:
        return ""
    if plugin.warning:
        return f"\n{plugin.warning}"
    contract = installed_contract()
    return (f"\n(from {plugin.dist_label}; aieng-hookspecs {contract} is installed: was the "
            "plugin made for another version of aieng?)" if contract else "")
