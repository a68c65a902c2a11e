"""Registration hooks: implemented by plugin modules, called once when a plugin loads."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from .._protocols import ComponentRegistry, EventRegistry, ReaderRegistry

__all__ = [
    "aieng_register_commands",
    "aieng_register_components",
    "aieng_register_events",
    "aieng_register_readers",
]


@role_spec(CallMode.REGISTER, role="registration")
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Declare the components a plugin offers.

    :called: once, when the kernel loads the plugin; before any pipeline is built.
    :mode: register: synchronous; each plugin is called on its own, so one plugin's error
        disables that plugin only.
    :none: the only return value.
    :async: no; must be cheap: import heavy libraries inside the component, not here.
    :param registry: call ``registry.add(name, factory, options=OptionsClass)`` per component.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.REGISTER, role="registration")
def aieng_register_commands(cli: object) -> None:
    """Add sub-commands to the ``aieng`` command line.

    :called: once, when the ``aieng`` CLI starts, for every loaded plugin.
    :mode: register: synchronous.
    :none: the only return value.
    :async: no; must be cheap.
    :param cli: the root ``click.Group``; add commands with ``cli.add_command``.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.REGISTER, role="registration")
def aieng_register_events(registry: EventRegistry) -> None:
    """Declare the event types a plugin emits.

    :called: once, when the kernel loads the plugin.
    :mode: register: synchronous.
    :none: the only return value.
    :async: no.
    :param registry: call ``registry.add(EventClass)`` per event type.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.REGISTER, role="registration")
def aieng_register_readers(registry: ReaderRegistry) -> None:
    """Declare the file formats a plugin reads into documents.

    :called: once, when the kernel loads the plugin; ``aieng index`` and
        ``aieng_core.ingest`` read files through the registered readers.
    :mode: register: synchronous; a suffix claimed twice makes the later plugin broken,
        naming both.
    :none: the only return value.
    :async: no; must be cheap: a reader imports its libraries when it reads.
    :param registry: call ``registry.add(".csv", reader)`` per suffix; ``reader(path)``
        returns the file's documents and raises ``ValueError`` for bad content.
    :returns: nothing.

    .. versionadded:: 0.1.0
    """
