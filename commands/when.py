"""When a one-shot run is asked for: `in 20m`, `at 18:00` (the next 18:00 in the configured
zone), or `at 2026-12-01T18:00` (an ISO date-time; without an offset, in the configured zone).
As a phone's owner types them too: `in 20 minutes`, `in an hour`, `in half an hour`,
`at 6pm`, `at 9`, `at noon`, `at 18h30`, `at 1830`, and a time of day `today` or
`tomorrow` (`tomorrow at 9`, `at 18:00 tomorrow`).
Pure: the text, now and the zone in, a time or a short reason out."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler_core.triggers import parse_duration

_CLOCK = re.compile(r"(\d{1,2})[:.h](\d{2})|(\d{2})(\d{2})|(\d{1,2})\s*h?")  # 18:30 18h30 1830 9
# As typed on a phone: `at 6pm`, `at 6:30 pm`, `at 7.30a.m.`.
_TWELVE = re.compile(r"(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?\s*m\.?", re.IGNORECASE)
_NAMED = {"noon": (12, 0), "midday": (12, 0), "midnight": (0, 0)}
_DAYS = {"today": 0, "tomorrow": 1}


@functools.cache
def _spoken() -> tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]:
    """Spoken durations, as what parse_duration reads, in this order (`an hour and a half`:
    1.5 hour). Compiled at the first one asked for, not as every daemon and command starts."""
    return (
        (re.compile(r"half an? hour", re.IGNORECASE), "30m"),
        (re.compile(r"(?:a )?quarter of an? hour", re.IGNORECASE), "15m"),
        (
            re.compile(r"\b(an?|\d+) (\w+) and a half", re.IGNORECASE),
            lambda m: f"{1 if m[1].lower() in ('a', 'an') else m[1]}.5 {m[2]}",
        ),
        (re.compile(r"\ban? (?=[a-z])", re.IGNORECASE), "1 "),
    )


def parse_when(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The time `text` names; ValueError with a reason fit for a chat."""
    words = text.split()
    named = [w for w in words if w.lower() in _DAYS]  # `tomorrow at 9`, `at 9 tomorrow`
    day = _DAYS[named[0].lower()] if len(named) == 1 else None
    if day is not None:  # the time of day is what is left: `at tomorrow 9` is `--at`'s
        words = [w for w in words if w.lower() not in _DAYS and w.lower() != "at"]
        if not words or words[0].lower() == "in":
            raise ValueError("say at what time: tomorrow at 9, or today at 18:00")
        words.insert(0, "at")
    word, rest = (words[0].lower(), " ".join(words[1:])) if words else ("", "")
    if word == "in" and rest:
        return _in(rest, now)
    if word == "at" and rest:
        clock = _time_of_day(rest)
        if clock is not None:
            return _next_time(*clock, now, zone) if day is None else _on_day(*clock, day, now, zone)
        try:  # a date-time is its own day: `tomorrow` with one is no time
            when = datetime.fromisoformat(rest) if day is None else None
        except ValueError:
            when = None
        if when is None:
            said = " ".join(text.split()[1:])
            raise ValueError(f"{said[:40]!r} is not a time; say {_examples(now, zone)}")
        return when if when.tzinfo is not None else when.replace(tzinfo=zone)
    raise ValueError(f"say when: {_examples(now, zone)}")


def _in(rest: str, now: datetime) -> datetime:
    spoken = rest
    for pattern, written in _spoken():
        spoken = pattern.sub(written, spoken)
    try:
        seconds = parse_duration(spoken)
    except ValueError:
        try:  # its reason names what was said, not what it was read as
            parse_duration(rest)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        raise
    if seconds < 1:
        raise ValueError("say a time at least a second ahead, like in 20m")
    return now + timedelta(seconds=seconds)


def _time_of_day(rest: str) -> tuple[int, int] | None:
    """(hour, minute) for a time of day as people write it; None if `rest` is not one (a
    date-time, or words); ValueError for one that no clock shows (25:00, 13pm)."""
    named = _NAMED.get(rest.lower())
    if named is not None:
        return named
    if not rest.isascii():
        return None
    clock = _CLOCK.fullmatch(rest)
    if clock:
        hour, minute = int(clock[1] or clock[3] or clock[5]), int(clock[2] or clock[4] or 0)
        if hour > 23 or minute > 59:
            shown = rest if clock[5] else f"{hour:02d}:{minute:02d}"  # `24` as it was said
            raise ValueError(f"{shown} is not a time of day")
        return hour, minute
    twelve = _TWELVE.fullmatch(rest)
    if twelve:
        hour, minute = int(twelve[1]), int(twelve[2] or 0)
        if not 1 <= hour <= 12 or minute > 59:
            raise ValueError(f"{rest} is not a time of day")
        return hour % 12 + (12 if twelve[3].lower() == "p" else 0), minute
    return None


def _examples(now: datetime, zone: ZoneInfo) -> str:
    """What to say instead, the date-time tomorrow's: an example is copied, so never a past one."""
    tomorrow = (now.astimezone(zone) + timedelta(days=1)).date().isoformat()
    return f"in 20m, at 18:00 or at {tomorrow}T18:00"


def _next_time(hour: int, minute: int, now: datetime, zone: ZoneInfo) -> datetime:
    local = now.astimezone(zone)
    for days in (0, 1, 2):
        day = local.date() + timedelta(days=days)
        when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if when > now:
            return when
    raise AssertionError("a time of day comes within two days")


def _on_day(hour: int, minute: int, days: int, now: datetime, zone: ZoneInfo) -> datetime:
    """The time of day on today's date (`days` 0) or tomorrow's (1), in the zone."""
    day = now.astimezone(zone).date() + timedelta(days=days)
    when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    if when <= now:
        clock = f"{hour:02d}:{minute:02d}"
        raise ValueError(f"{clock} today has passed; say at {clock} for tomorrow's")
    return when
