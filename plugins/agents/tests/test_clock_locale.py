"""The ``clock`` tool names the weekday in English whatever the host program's locale: a
``locale.setlocale(LC_TIME, "fr_FR.UTF-8")`` made it ``mercredi`` (``strftime('%A')``)."""

from __future__ import annotations

import locale
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aieng_agents import ClockOptions, ClockTool
from hypothesis import given, settings
from hypothesis import strategies as st

FIXED = datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def french_time_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """``strftime`` as under a French LC_TIME: ``datetime.strftime`` formats through
    ``time.strftime``. (Only the C locales exist on the test machines.)"""
    days = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
    months = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
              "septembre", "octobre", "novembre", "décembre"]
    english = time.strftime

    def french(spec: str, moment: Any = None) -> str:
        moment = time.localtime() if moment is None else moment
        spec = spec.replace("%A", days[moment.tm_wday]).replace("%B", months[moment.tm_mon - 1])
        return english(spec, moment)

    monkeypatch.setattr(time, "strftime", french)
    assert FIXED.strftime("%A") == "mercredi"  # the patch reaches datetime


@pytest.mark.usefixtures("french_time_names")
def test_the_weekday_is_english_under_another_locale() -> None:
    tool = ClockTool(clock=lambda: FIXED)
    assert tool.now("UTC") == "2024-05-01T10:30:15+00:00 (Wednesday, UTC)"
    assert tool.now("Pacific/Kiritimati") == (
        "2024-05-02T00:30:15+14:00 (Thursday, Pacific/Kiritimati)")


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                           timezones=st.just(UTC)),
       seconds=st.booleans())
def test_the_text_is_what_the_c_locale_wrote(moment: datetime, seconds: bool) -> None:
    """Byte for byte the text ``strftime('%A')`` gave under the C locale, any day."""
    assert locale.setlocale(locale.LC_TIME) in ("C", "POSIX", "C.UTF-8", "C.utf8")
    tool = ClockTool(ClockOptions(seconds=seconds), clock=lambda: moment)
    local = moment.astimezone(UTC)
    stamp = local.isoformat(timespec="seconds" if seconds else "minutes")
    assert tool.now("UTC") == f"{stamp} ({local.strftime('%A')}, UTC)"


def test_seven_days_seven_names() -> None:
    names = [ClockTool(clock=lambda d=FIXED + timedelta(days=n): d).now("UTC").split("(")[1]
             for n in range(7)]
    assert [n.split(",")[0] for n in names] == ["Wednesday", "Thursday", "Friday",
                                                "Saturday", "Sunday", "Monday", "Tuesday"]
