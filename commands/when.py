"""When a one-shot run is asked for: `in 20m`, `at 18:00` (the next 18:00 in the configured
zone), or `at 2026-12-01T18:00` (an ISO date-time; without an offset, in the configured zone).
As a phone's owner types them too: `in 20 minutes`, `in 1 hour 30 min`, `at 6pm`, `at 9`.
Pure: the text, now and the zone in, a time or a short reason out."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler_core.triggers import parse_duration

_CLOCK = re.compile(r"(\d{1,2})[:.](\d{2})")
# As typed on a phone: `at 6pm`, `at 6:30 pm`, `at 7.30a.m.`.
_TWELVE = re.compile(r"(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?\s*m\.?", re.IGNORECASE)


def parse_when(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The time `text` names; ValueError with a reason fit for a chat."""
    word, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if word.lower() == "in" and rest:
        try:
            seconds = parse_duration(rest)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if seconds < 1:
            raise ValueError("say a time at least a second ahead, like in 20m")
        return now + timedelta(seconds=seconds)
    if word.lower() == "at" and rest:
        clock = _CLOCK.fullmatch(rest)
        if clock:
            return _next_time(int(clock[1]), int(clock[2]), now, zone)
        if rest.isascii() and rest.isdigit() and len(rest) <= 2:  # `at 9`: on the hour
            if int(rest) > 23:
                raise ValueError(f"{rest} is not a time of day")
            return _next_time(int(rest), 0, now, zone)
        twelve = _TWELVE.fullmatch(rest)
        if twelve:
            hour, minute = int(twelve[1]), int(twelve[2] or 0)
            if not 1 <= hour <= 12:
                raise ValueError(f"{rest} is not a time of day")
            pm = twelve[3].lower() == "p"
            return _next_time(hour % 12 + (12 if pm else 0), minute, now, zone)
        try:
            when = datetime.fromisoformat(rest)
        except ValueError:
            raise ValueError(f"{rest[:40]!r} is not a time; say {_examples(now, zone)}") from None
        return when if when.tzinfo is not None else when.replace(tzinfo=zone)
    raise ValueError(f"say when: {_examples(now, zone)}")


def _examples(now: datetime, zone: ZoneInfo) -> str:
    """What to say instead, the date-time tomorrow's: an example is copied, so never a past one."""
    tomorrow = (now.astimezone(zone) + timedelta(days=1)).date().isoformat()
    return f"in 20m, at 18:00 or at {tomorrow}T18:00"


def _next_time(hour: int, minute: int, now: datetime, zone: ZoneInfo) -> datetime:
    if hour > 23 or minute > 59:
        raise ValueError(f"{hour:02d}:{minute:02d} is not a time of day")
    local = now.astimezone(zone)
    for days in (0, 1, 2):
        day = local.date() + timedelta(days=days)
        when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if when > now:
            return when
    raise AssertionError("a time of day comes within two days")
