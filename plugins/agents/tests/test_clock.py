"""The ``clock`` tool: the conformance suite, zones, the injected clock and bad zones."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aieng_agents import ClockOptions, ClockTool
from aieng_hookspecs.types import ToolCall

from aieng_core.testing.conformance import ToolSuite

FIXED = datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC)


def fixed() -> datetime:
    """A clock stopped at 2024-05-01 10:30:15.123456 UTC."""
    return FIXED


class TestClockConformance(ToolSuite):
    """clock passes every check the kit makes of a tool component."""

    @pytest.fixture
    def component(self) -> ClockTool:
        """The tool under test, on a fixed clock."""
        return ClockTool(ClockOptions(), clock=fixed)

    @pytest.fixture
    def tool_examples(self) -> Mapping[str, Mapping[str, Any]]:
        """Valid arguments of the tool."""
        return {"now": {"timezone": "Europe/Paris"}}


def call(tool: ClockTool, **arguments: Any) -> tuple[str, bool]:
    """The content and error flag of one ``now`` call."""
    result = tool.aieng_call_tool(ToolCall(id="c1", name="now", arguments=arguments))
    assert result is not None and result.call_id == "c1"
    return result.content, result.is_error


def test_now_is_iso_time_in_the_asked_zone() -> None:
    """The time is ISO 8601 with the zone's offset (summer time included) and weekday."""
    tool = ClockTool(clock=fixed)
    assert call(tool) == ("2024-05-01T10:30:15+00:00 (Wednesday, UTC)", False)
    assert call(tool, timezone="Europe/Paris") == (
        "2024-05-01T12:30:15+02:00 (Wednesday, Europe/Paris)", False)
    assert call(tool, timezone="Asia/Kolkata")[0].startswith("2024-05-01T16:00:15+05:30")
    assert call(tool, timezone="Pacific/Kiritimati")[0].startswith("2024-05-02T00:30:15+14:00")


def test_default_zone_and_minutes_follow_the_options() -> None:
    """Without a zone the ``timezone`` option applies; ``seconds=False`` drops seconds."""
    tool = ClockTool(ClockOptions(timezone="America/New_York", seconds=False), clock=fixed)
    assert call(tool) == ("2024-05-01T06:30-04:00 (Wednesday, America/New_York)", False)
    assert call(tool, timezone="")[0].startswith("2024-05-01T06:30-04:00")


def test_the_clock_may_give_any_zone() -> None:
    """An injected clock in another zone is converted, not taken as UTC."""
    tool = ClockTool(clock=lambda: FIXED.astimezone(timezone(timedelta(hours=-7))))
    assert call(tool, timezone="UTC")[0].startswith("2024-05-01T10:30:15+00:00")


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime",
                                  "localtime", " posixrules", "Europe", "Europe/Paris\x00",
                                  "é", 42, ["UTC"]])
def test_unknown_zones_are_error_results(name: object) -> None:
    """An unknown or malformed zone is an error result naming it, never an exception."""
    content, is_error = call(ClockTool(clock=fixed), timezone=name)
    assert is_error and "time zone" in content


def test_the_answer_names_the_zone_without_the_blanks_around_it() -> None:
    """A zone given with blanks around it is read, and named in the answer without them
    (the model reads ``(Wednesday, Europe/Paris)``)."""
    content, is_error = call(ClockTool(clock=fixed), timezone="  Europe/Paris ")
    assert not is_error and content.endswith("(Wednesday, Europe/Paris)")
    content, _ = call(ClockTool(clock=fixed), timezone="UTC ")
    assert content.endswith("(Wednesday, UTC)")


def test_a_naive_clock_is_an_error_result() -> None:
    """A clock giving a time without a zone is reported, not guessed."""
    content, is_error = call(ClockTool(clock=lambda: datetime(2024, 1, 1)))
    assert is_error and "without a time zone" in content


def test_the_default_zone_is_checked_when_configured() -> None:
    """A pipeline naming an unknown default zone fails at load, not at the first call."""
    with pytest.raises(ValueError, match="unknown time zone"):
        ClockOptions(timezone="Nowhere/Town")


def test_the_system_clock_is_the_default() -> None:
    """Without an injected clock the tool reads the system clock (UTC, aware)."""
    before = datetime.now(UTC).replace(microsecond=0)
    content, is_error = call(ClockTool(), timezone="UTC")
    stamp = datetime.fromisoformat(content.split(" ")[0])
    assert not is_error and before <= stamp <= datetime.now(UTC)


@pytest.mark.parametrize(("utc", "local"), [
    (datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC), "2024-03-31T01:59:59+01:00"),
    (datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC), "2024-03-31T03:00:00+02:00"),
    (datetime(2024, 10, 27, 0, 30, 0, tzinfo=UTC), "2024-10-27T02:30:00+02:00"),
    (datetime(2024, 10, 27, 1, 30, 0, tzinfo=UTC), "2024-10-27T02:30:00+01:00"),
])
def test_summer_time_transitions_keep_the_right_offset(utc: datetime, local: str) -> None:
    """Across the spring gap and the autumn overlap (02:30 happens twice in Paris) the
    local time carries the offset in force at that instant, so it names one instant."""
    content, is_error = call(ClockTool(clock=lambda: utc), timezone="Europe/Paris")
    assert not is_error and content.startswith(local)
    assert datetime.fromisoformat(content.split(" ")[0]) == utc


class TestClockConformanceOnTrio(TestClockConformance):
    """The clock's suite again under trio."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"
