"""The keys about time: `every:` (an interval), `cron:` (an expression) and `timezone:`, each
checked as the schema reads it (`config.schema`). A value that is none of them, but what
another key takes (`every: daily`, `cron: "@every 5m"`) or what people write for a zone
(`berlin`, `UTC+2`, `CEST`), is refused with what to write instead."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

from config.fields import show
from scheduler_core.triggers import cron_fields, parse_duration


@functools.lru_cache(maxsize=256)
def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None. Cached: thousands of tasks tend to
    share a handful of expressions, and parsing one is the dearest check of a task."""
    from cronsim import CronSim, CronSimError

    if expression.strip().lower() == "@reboot":
        return "@reboot"
    try:
        CronSim(cron_fields(expression), datetime.now(UTC))
    except CronSimError as exc:
        fields = cron_fields(expression).split()
        if fields and fields[0].upper().startswith(("TZ=", "CRON_TZ=")):  # as Kubernetes has it
            return "a time zone is not part of the expression: set timezone: (for every task)"
        if "?" in fields:
            return "'?' is Quartz's 'any day'; write * for it"
        if len(fields) in (6, 7) and re.fullmatch(r"(19|20)\d\d\b.*", fields[-1]):
            return "cron has no year: leave it out (six fields are read with seconds first)"
        if len(fields) not in (5, 6):
            return (
                f"{len(fields)} fields, where cron has five (minute hour day month weekday), "
                "or six with seconds first"
            )
        day = len(fields) - 3  # day-of-month, month, weekday are the last three
        if str(exc) == "Bad day-of-month" and fields[day + 1] != "*":
            try:  # a day that some month has: none of the months named has it
                CronSim(" ".join([*fields[: day + 1], "*", fields[-1]]), datetime.now(UTC))
            except CronSimError:
                return str(exc)
            return f"none of the months it names has day {fields[day]}, so it would never run"
        return str(exc)
    return None


def cron(value: str) -> str:
    """`cron:`, an expression as cron writes it."""
    words = value.split(maxsplit=1)
    if len(words) == 2 and words[0].lower() in ("@every", "every"):  # Go's cron, or English
        try:
            parse_duration(words[1])
        except ValueError:
            pass
        else:
            raise ValueError(f"{show(value)} is an interval: write every: {words[1]}")
    if (problem := cron_problem(value)) == "@reboot":
        raise ValueError(
            f"{show(value)} is not a schedule here: moltsched runs no task at its own start; "
            "give a cron expression or every:"
        )
    if problem:
        raise ValueError(f"{show(value)} is not a cron expression: {problem}")
    return value


# What the words cron has nicknames for are as an interval (months and years are not one).
_AS_INTERVAL = {"hourly": ("1h", "the start of each hour"), "daily": ("1d", "each midnight")}
_AS_INTERVAL["weekly"] = ("1w", "the start of each Sunday")


def interval(value: object) -> float:
    """`every:`, a duration. A word cron has a nickname for, or a cron expression, written
    here says what to write instead."""
    try:
        return parse_duration(value)
    except ValueError:
        if not isinstance(value, str):
            raise
        word = value.strip().lower().lstrip("@")
        if word in _AS_INTERVAL:
            every, when = _AS_INTERVAL[word]
            raise ValueError(
                f'{show(value)} is not a duration: write every: {every}, or cron: "@{word}" '
                f"for {when}"
            ) from None
        if word in ("monthly", "yearly", "annually", "midnight"):
            raise ValueError(f'{show(value)} is not a duration: write cron: "@{word}"') from None
        if len(value.split()) in (5, 6) and cron_problem(value) is None:
            raise ValueError(f'{show(value)} is a cron expression: write cron: "{value}"') from None
        raise


def zone(value: str) -> str:
    """`timezone:`, a zone of the tz database."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(_not_a_zone(value)) from None
    return value


_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])\s*(\d{1,2})(?::?(\d\d))?", re.IGNORECASE)
_PLACE = "name the place (like Europe/Berlin)"


def _not_a_zone(value: str) -> str:
    """What is said of a name that is not a zone: what it probably meant, and what to write."""
    from zoneinfo import available_timezones

    shown = show(value)
    offset = _OFFSET.fullmatch(value)
    if offset:  # UTC+2 is Berlin's winter and Cairo's, not Berlin's summer
        sign, hours, minutes = offset.groups()
        fixed = ""
        if int(hours) <= 12 and minutes in (None, "00"):  # Etc/GMT-2 is UTC+2: POSIX's sign
            fixed = f", or write Etc/GMT{'-+'[sign == '-']}{int(hours)} for UTC{sign}{int(hours)}"
            fixed += " all year"
        return f"{shown} is an offset, which does not follow summer time: {_PLACE}{fixed}"
    if value.lower() in ("local", "localtime", "system", "host"):
        return f"{shown} is not a time zone: leave timezone out for the host's zone"
    wanted = value.lower().replace(" ", "_")
    zones = sorted(available_timezones())
    found = [z for z in zones if z.lower() == wanted]
    found = found or [z for z in zones if z.lower().rsplit("/", 1)[-1] == wanted]
    if len(found) == 1:
        return f"{shown} is not a time zone (did you mean {found[0]}?)"
    if value.isalpha() and value.isupper() and 3 <= len(value) <= 5:  # CEST, BST, IST
        return f"{shown} is an abbreviation, which names no one place: {_PLACE}"
    return f"{shown} is not a time zone (like Europe/Berlin or UTC)"
