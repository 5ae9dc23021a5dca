"""Schedule maths: fixed cadence, missed-slot counting, cron across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_core.triggers import Cron, Every, advance, format_duration

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_every_keeps_its_cadence_and_counts_skipped_slots() -> None:
    every = Every(60)
    assert advance(every, T0, T0) == (T0 + timedelta(seconds=60), 0)
    # processed 0.5 s late: still the same cadence
    assert advance(every, T0, T0 + timedelta(seconds=0.5)) == (T0 + timedelta(seconds=60), 0)
    # down for 10 minutes and 30 s: slots at +1m..+10m were skipped, next is +11m
    nxt, skipped = advance(every, T0, T0 + timedelta(minutes=10, seconds=30))
    assert (nxt, skipped) == (T0 + timedelta(minutes=11), 10)


def test_cron_counts_skipped_slots() -> None:
    cron = Cron("0 * * * *", ZoneInfo("UTC"))
    nxt, skipped = advance(cron, T0, T0 + timedelta(hours=5, minutes=1))
    assert (nxt, skipped) == (T0 + timedelta(hours=6), 5)


def local(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)  # type: ignore[misc]


def slots(cron: Cron, start: datetime, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = cron.next_after(t)
        out.append(t.astimezone(BERLIN).isoformat())
    return out


def test_cron_spring_forward_runs_a_skipped_time_once_after_the_change() -> None:
    cron = Cron("30 2 * * *", BERLIN)
    assert slots(cron, local(2026, 3, 28, 12, 0), 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_cron_fall_back_runs_a_fixed_time_once() -> None:
    cron = Cron("30 2 * * *", BERLIN)
    assert slots(cron, local(2026, 10, 24, 12, 0), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_cron_fall_back_runs_hourly_jobs_in_both_copies_of_the_hour() -> None:
    cron = Cron("0 * * * *", BERLIN)
    assert slots(cron, local(2026, 10, 25, 0, 30), 4) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_cron_results_are_utc() -> None:
    nxt = Cron("0 9 * * *", BERLIN).next_after(T0)
    assert nxt.tzinfo is UTC and nxt == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (900, "15m"), (5400, "1h30m"), (0.5, "0.5s"), (30, "30s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# Zones with the awkward changes: an hour back in autumn, the southern hemisphere, half an
# hour (Lord Howe), and a change at midnight (Santiago).
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
EXPRESSIONS = ["30 2 * * *", "45 1 * * *", "*/15 * * * *", "0 * * * *", "15 0 * * 0", "0 3 1 * *"]


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The UTC instants in `year` at which `zone`'s offset changes (to the minute)."""
    found = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    while t.year == year:
        if t.astimezone(zone).utcoffset() != (t + step).astimezone(zone).utcoffset():
            lo, hi = t, t + step
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                same = mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset()
                lo, hi = (mid, hi) if same else (lo, mid)
            found.append(hi)
        t += step
    return found


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    year=st.integers(2024, 2031),
    expression=st.sampled_from(EXPRESSIONS),
    which=st.integers(0, 1),
    offset_s=st.integers(-3 * 3600, 3 * 3600),
)
def test_a_cron_slot_is_always_strictly_after_the_time_asked_about(
    zone: str, year: int, expression: str, which: int, offset_s: int
) -> None:
    """Around every DST change: strictly later, never earlier for a later question (so a
    reload in a repeated hour cannot bring back a slot that already ran)."""
    tz = ZoneInfo(zone)
    changes = transitions(tz, year)
    assert changes, f"{zone} has DST changes in {year}"
    when = changes[which % len(changes)] + timedelta(seconds=offset_s)
    cron = Cron(expression, tz)
    nxt = cron.next_after(when)
    assert nxt > when
    # Asked again a moment later (a reload), the answer does not go back.
    later = when + timedelta(seconds=61)
    assert cron.next_after(later) >= nxt or later >= nxt
    # Asked again from the slot itself (the slot ran), the next one is later still.
    assert cron.next_after(nxt) > nxt


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    expression=st.sampled_from([*EXPRESSIONS, "*/7 * * * * *", "59 59 23 * * *"]),
    second=st.integers(0, 10 * 365 * 86400),
    micro=st.integers(1, 999_999),
)
def test_a_cron_slot_asked_for_within_a_second_is_the_seconds_slot(
    zone: str, expression: str, second: int, micro: int
) -> None:
    """Slots are whole seconds, so asked at any moment of a second the answer is the one
    for the second itself (what lets tasks that share an expression share it): never a slot
    at or before the moment asked, never one past a slot after it."""
    cron = Cron(expression, ZoneInfo(zone))
    whole = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=second)
    within = whole + timedelta(microseconds=micro)
    nxt = cron.next_after(within)
    assert nxt > within
    assert nxt == cron.next_after(whole)
    assert nxt.microsecond == 0


def test_a_reload_in_the_repeated_hour_does_not_run_a_fixed_time_job_twice() -> None:
    cron = Cron("45 2 * * *", BERLIN)
    ran = cron.next_after(local(2026, 10, 25, 1, 0))
    assert ran == local(2026, 10, 25, 2, 45, fold=0).astimezone(UTC)
    # Reloaded at 02:30 of the second copy of the hour (after the run at 02:45 of the
    # first): the next run is tomorrow's, not the 02:45 that already passed.
    again = cron.next_after(local(2026, 10, 25, 2, 30, fold=1).astimezone(UTC))
    assert again == local(2026, 10, 26, 2, 45)


@pytest.mark.parametrize(
    ("nickname", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@Hourly", "0 * * * *"),
    ],
)
def test_crons_nicknames_are_the_expressions_they_stand_for(nickname: str, fields: str) -> None:
    zone = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 12, 3, 13, 27, tzinfo=UTC)
    named, written = Cron(nickname, zone), Cron(fields, zone)
    for _ in range(3):
        assert named.next_after(start) == written.next_after(start)
        start = written.next_after(start)
    assert named.describe() == f"cron {nickname}"
