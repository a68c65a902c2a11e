"""Typed component options: strict structuring of config tables into attrs classes."""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs

from aieng_hookspecs import did_you_mean

from .._errors import ConfigError

__all__ = ["did_you_mean", "structure_options", "unstructure_options"]


def _strict(kind: type) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return float(value) if ok else _bad(kind, value)
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        return value if ok else _bad(kind, value)

    return hook


def _bad(kind: type, value: Any) -> Any:
    raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")


def _converter() -> cattrs.Converter:
    # cattrs' defaults coerce ("3" -> 3, 3.5 -> 3, 1 -> "1"); a typed config must not.
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, _strict(kind))
    return converter


_CONVERTER = _converter()


def structure_options(
    options_type: type[Any] | None, values: Mapping[str, Any], *, source: str, key: str
) -> Any:
    """Build an options instance from a config table, or fail with a :class:`ConfigError`.

    :param options_type: the component's attrs options class, or ``None`` when it has none.
    :param values: the table's keys other than ``use``.
    :param source: the file name, for the error.
    :param key: the dotted key path of the table (``components.search``).
    """
    if options_type is None:
        if values:
            name = sorted(values)[0]
            raise ConfigError("unknown option (this component takes no options)",
                              source=source, key=f"{key}.{name}")
        return None
    fields = attrs.fields_dict(options_type)
    for name in values:
        if name not in fields:
            raise ConfigError(f"unknown option {name!r}{did_you_mean(name, fields)}",
                              source=source, key=f"{key}.{name}", choices=sorted(fields))
    missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in values]
    if missing:
        raise ConfigError(f"missing required option {missing[0]!r}", source=source,
                          key=f"{key}.{missing[0]}")
    attrs.resolve_types(options_type)
    _reject_strings_as_sequences(options_type, values, source=source, key=key)
    try:
        return _CONVERTER.structure(dict(values), options_type)
    except cattrs.BaseValidationError as exc:
        first = cattrs.transform_error(exc, format_exception=_describe)[0]
        message, _, where = first.rpartition(" @ $")
        if not where:  # raised by the class itself, not a field's structuring: a validator
            name = _validated_field(_first_leaf(exc), options_type)
            where = f".{name}" if name else ""
        raise ConfigError(message, source=source, key=f"{key}{where}") from None
    except (TypeError, ValueError) as exc:  # an attrs validator of the options class
        name = _validated_field(exc, options_type)
        path = f"{key}.{name}" if name else key
        raise ConfigError(str(exc), source=source, key=path) from None


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _validated_field(exc: BaseException, options_type: type[Any]) -> str:
    """The option whose validator raised ``exc``, or ``""`` when no validator's attribute is
    known (a check in ``__attrs_post_init__`` spans options).

    attrs calls every validator as ``validator(instance, attribute, value)``, so the frame
    of the validator that raised holds the options class's ``attrs.Attribute``; the message
    alone does not name it in a form to rely on (a custom validator says what it likes).
    """
    # By name: resolve_types gives the class new Attribute objects, while its __init__
    # still passes the ones it was generated with.
    names = {field.name for field in attrs.fields(options_type)}
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, attrs.Attribute) and value.name in names:
                return value.name
        tb = tb.tb_next
    return ""


_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence)


def _reject_strings_as_sequences(
    kind: Any, value: Any, *, source: str, key: str
) -> None:
    # cattrs would turn "abc" into ("a", "b", "c") for a tuple[str, ...] option, and a
    # table into the list of its keys.
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(kind)
        if isinstance(value, Mapping) and any(_takes_tables(arm) for arm in arms):
            return
        if isinstance(value, str) and str in arms or not isinstance(value, (str, Mapping)):
            return
        for arm in arms:
            if typing.get_origin(arm) in _SEQUENCES:
                raise ConfigError(f"expected a list, got {_shown(value)}", source=source,
                                  key=key)
        return
    if origin in _SEQUENCES:
        if isinstance(value, (str, bytes, Mapping)):
            raise ConfigError(f"expected a list, got {_shown(value)}", source=source, key=key)
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        if args and isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                _reject_strings_as_sequences(args[0], item, source=source, key=f"{key}[{index}]")
        return
    if isinstance(kind, type) and attrs.has(kind) and isinstance(value, Mapping):
        attrs.resolve_types(kind)
        for field in attrs.fields(kind):
            if field.name in value:
                _reject_strings_as_sequences(field.type, value[field.name], source=source,
                                             key=f"{key}.{field.name}")


def _takes_tables(kind: Any) -> bool:
    origin = typing.get_origin(kind) or kind
    return (isinstance(origin, type) and issubclass(origin, Mapping)) or (
        isinstance(kind, type) and attrs.has(kind)) or kind is Any


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table (a list of tables is written [{...}] or [[name]] sections)"
    return f"{type(value).__name__} {value!r}"


def _describe(exc: BaseException, kind: Any) -> str:
    literal = getattr(kind, "__args__", None) if "Literal" in repr(kind) else None
    if literal:
        choices = ", ".join(repr(c) for c in literal)
        return f"invalid value; expected one of {choices}"
    if isinstance(exc, KeyError):
        return f"missing required option {exc.args[0]!r}" if exc.args else "missing option"
    if isinstance(exc, (TypeError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def unstructure_options(options: Any) -> dict[str, Any]:
    """The plain-dict form of an options instance (tuples become lists, as in TOML)."""
    if options is None:
        return {}
    return {f.name: _plain(getattr(options, f.name)) for f in attrs.fields(type(options))}


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return unstructure_options(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
