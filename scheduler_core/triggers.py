"""Pure schedule maths: when is a task's next slot, and how many slots were missed.

`Every` keeps a fixed cadence from the slot it was due at (not from when a run happened to
start), so runs do not drift. `Cron` evaluates in the configured zone with cronsim, which is
correct across DST changes: a fixed-time job in a skipped hour runs once right after the change,
in a repeated hour once; wildcard-hour jobs run in both copies of a repeated hour.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim

_SEARCH = 1000  # candidates looked at before jumping past a repeated hour


class Trigger(Protocol):
    """Something that yields the next slot strictly after a given time."""

    def next_after(self, when: datetime) -> datetime: ...

    def first_due(self, now: datetime) -> datetime:
        """When a task that has never been scheduled first runs."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Every:
    """Every `seconds`, counted from the previous slot."""

    seconds: float

    def next_after(self, when: datetime) -> datetime:
        return when + timedelta(seconds=self.seconds)

    def first_due(self, now: datetime) -> datetime:
        """At once: a new interval task runs now, then every `seconds`."""
        return now

    def describe(self) -> str:
        return f"every {format_duration(self.seconds)}"

    def __reduce__(self) -> tuple[type[Every], tuple[float]]:
        return Every, (self.seconds,)  # see TaskSpec.__reduce__


# What cron's nicknames stand for (cron(8), Vixie cron); `@reboot` names no time.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def cron_fields(expression: str) -> str:
    """The expression's fields: a nickname's (`@daily`: `0 0 * * *`), else itself."""
    return NICKNAMES.get(expression.strip().lower(), expression)


@functools.lru_cache(maxsize=1024)
def _cron_next(expression: str, zone: ZoneInfo, when: datetime) -> datetime:
    """The slot of `expression` strictly after `when`. Remembered: tasks that share an
    expression share their slots (10,000 tasks at start-up ask for the same one)."""
    # cronsim counts in local wall time, where the autumn change repeats an hour: asked
    # from the second copy of 02:30, it can answer 02:45 of the first copy, which is
    # earlier. Such answers are passed over, so a slot is always strictly later.
    local = when.astimezone(zone)
    for candidate in itertools.islice(CronSim(cron_fields(expression), local), _SEARCH):
        slot = candidate.astimezone(UTC)
        if slot > when:
            return slot
    return _cron_next(expression, zone, when + timedelta(hours=2))  # past the repeated hour


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression evaluated in `zone`: five fields, six with seconds first, or a
    nickname."""

    expression: str
    zone: ZoneInfo

    def next_after(self, when: datetime) -> datetime:
        # Slots are whole seconds, so the next one after `when` is the next one after its
        # second: asked at any moment of that second, tasks that share an expression share
        # the answer (`status` before any daemon ran asks for each task's, one by one).
        return _cron_next(self.expression, self.zone, when.replace(microsecond=0))

    def first_due(self, now: datetime) -> datetime:
        """At its next slot: a cron task runs when its expression says, never at once."""
        return self.next_after(now)

    def describe(self) -> str:
        return f"cron {self.expression}"

    def __reduce__(self) -> tuple[type[Cron], tuple[str, ZoneInfo]]:
        return Cron, (self.expression, self.zone)  # see TaskSpec.__reduce__


def schedule_key(trigger: Trigger) -> str:
    """What decides a task's slots, as text to compare: a change of it (of a cron task's zone
    too) makes slots decided before it stale."""
    if isinstance(trigger, Cron):
        return f"cron {trigger.expression} {trigger.zone.key}"
    if isinstance(trigger, Every):
        return f"every {trigger.seconds!r}"
    return trigger.describe()


# Cron slots counted at most after a downtime: each is a cron computation, and a minutely
# task down for a year would hold the loop for seconds (past this, counts say "over").
MAX_COUNTED = 1000


def advance(trigger: Trigger, due: datetime, now: datetime) -> tuple[datetime, int]:
    """The first slot after `now` following `due`, and how many slots lay in (due, now]: for
    cron, counted up to MAX_COUNTED + 1 (more), then the next slot is found from `now`."""
    nxt = trigger.next_after(due)
    skipped = 0
    if isinstance(trigger, Every) and trigger.seconds > 0:
        if nxt <= now:
            steps = int((now - nxt).total_seconds() // trigger.seconds) + 1
            nxt += timedelta(seconds=steps * trigger.seconds)
            skipped = steps
        return nxt, skipped
    while nxt <= now:
        skipped += 1
        if skipped > MAX_COUNTED:
            return trigger.next_after(now), skipped
        nxt = trigger.next_after(nxt)
    return nxt, skipped


def format_duration(seconds: float) -> str:
    """`90` -> `90s`, `900` -> `15m`, `5400` -> `1h30m`."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    s = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts)


# `90s`, `1h30m`, and as people write them: `15 min`, `1 hour 30 minutes`, `2 days`, `1w`.
_DURATION_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?"
    r"|d|days?|w|wks?|weeks?)(?![a-z])",
    re.IGNORECASE,
)
_UNIT_S = {"ms": 0.001, "mi": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# Longer than any schedule needs, and short enough that now plus it is still a datetime (whose
# last year is 9999): a longer one would fail in the middle of scheduling.
MAX_DURATION_S = 100 * 365.25 * 86400


def parse_duration(value: object) -> float:
    """`90s`, `15m`, `2h`, `1d`, `1w`, `1h30m`, `15 min`, `2 days` or a number of seconds ->
    seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration, like 90s, 15m, 2h, 1d or a number of seconds")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{_shown(value)} is not a duration (too long)") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"{_shown(value)} is not a duration (use 90s, 15m, 2h, 1d or seconds)"
                ) from None
            seconds = sum(float(n) * _UNIT_S[_unit(u)] for n, u in parts)
    else:
        raise ValueError("a duration, like 90s, 15m, 2h, 1d or a number of seconds")
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{_shown(value)} is not a duration (must not be negative)")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{_shown(value)} is too long (at most 100 years)")
    return seconds


def _unit(word: str) -> str:
    word = word.lower()
    return word[:2] if word.startswith(("ms", "milli")) else word[0]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
