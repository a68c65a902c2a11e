"""``clock``: the current date and time, in a named time zone (IANA names, ``zoneinfo``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import ToolCall, ToolResult, ToolSpec

__all__ = ["ClockOptions", "ClockTool", "zone"]

#: The tool's name, as models call it.
TOOL = "now"

#: A clock: the current time as an aware datetime (any zone). Inject a fixed one in tests.
Clock = Callable[[], datetime]

_UTC_NAMES = frozenset({"utc", "z", "gmt", "etc/utc", "zulu"})
#: Files of a system's tz database that are no IANA zone: ``localtime`` is this machine's
#: own zone (its answer would depend on the host, under a name a model cannot read),
#: ``posixrules`` a default for POSIX TZ strings.
_NOT_ZONES = frozenset({"localtime", "posixrules"})
#: Weekday names in English, Monday first: ``strftime('%A')`` follows the host program's
#: ``locale.setlocale(LC_TIME, ...)``, and the README and models read English names.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def zone(name: object) -> tzinfo:
    """The time zone of an IANA name (``"Europe/Paris"``; ``"UTC"`` always exists).

    :raises ValueError: for a name that is not a known zone, saying so.
    :raises TypeError: for a name that is not a string.
    """
    if not isinstance(name, str):
        raise TypeError("the time zone must be a string such as 'Europe/Paris'")
    if name.strip().lower() in _UTC_NAMES:
        return UTC  # without tzdata installed too
    if name.strip() in _NOT_ZONES:
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as "
                         "'Europe/Paris', 'America/New_York' or 'UTC' (not the machine's "
                         "own zone)")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        # ZoneInfo refuses paths ("../x"), empty names and NUL bytes with ValueError, and
        # a name naming a directory of the tz database with IsADirectoryError.
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as "
                         "'Europe/Paris', 'America/New_York' or 'UTC'") from None


def _known_zone(instance: Any, attribute: Any, value: str) -> None:
    zone(value)


def _system_clock() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class ClockOptions:
    """Options of the ``clock`` tool.

    :param timezone: the zone used when a call names none (an IANA name; default ``UTC``).
    :param seconds: whether the time has seconds (else minutes: ``2024-05-01T12:30+02:00``).
    """

    timezone: str = attrs.field(default="UTC",
                                validator=[attrs.validators.instance_of(str), _known_zone])
    seconds: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


class ClockTool:
    """Offers the tool ``now``: the current time as ISO 8601 text in a time zone.

    :param options: the typed options (defaults when omitted).
    :param clock: the current time as an aware datetime; the system clock by default.
    """

    def __init__(self, options: ClockOptions | None = None, *, clock: Clock = _system_clock
                 ) -> None:
        self.options = options if options is not None else ClockOptions()
        self.clock = clock

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        """The tool ``now`` and the JSON schema of its optional argument."""
        return [ToolSpec(
            name=TOOL,
            description=("The current date and time (ISO 8601, with the UTC offset and the "
                         f"weekday). Default time zone: {self.options.timezone}."),
            parameters={"type": "object",
                        "properties": {"timezone": {
                            "type": "string",
                            "description": "an IANA time zone such as Europe/Paris"}}})]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        """Run ``now``; ``None`` for another tool's call; an unknown zone is an error result."""
        if call.name != TOOL:
            return None
        name = call.arguments.get("timezone")
        if name is None or name == "":
            name = self.options.timezone
        try:
            content = self.now(name)
        except (ValueError, TypeError) as exc:
            return ToolResult(call_id=call.id, content=f"error: {exc}", is_error=True)
        return ToolResult(call_id=call.id, content=content)

    def now(self, timezone: object) -> str:
        """The current time in ``timezone`` as ISO 8601 text and the weekday (in English,
        whatever the locale).

        :raises ValueError: for an unknown zone, or a clock giving a naive datetime.
        """
        current = self.clock()
        if current.tzinfo is None or current.utcoffset() is None:
            raise ValueError("the clock gave a time without a time zone")
        local = current.astimezone(zone(timezone))
        spec = "seconds" if self.options.seconds else "minutes"
        label = str(timezone).strip()  # a str: zone() refused any other type
        return f"{local.isoformat(timespec=spec)} ({_WEEKDAYS[local.weekday()]}, {label})"
