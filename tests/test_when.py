"""When a one-shot run is asked for (`commands.when`): in, at a time of day, at a date-time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from commands.when import parse_when

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 17:00 in Berlin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in 20m", NOW + timedelta(minutes=20)),
        ("in 1h30m", NOW + timedelta(minutes=90)),
        ("IN 90", NOW + timedelta(seconds=90)),
        ("at 18:00", datetime(2026, 11, 30, 18, 0, tzinfo=BERLIN)),  # later today
        ("at 16:59", datetime(2026, 12, 1, 16, 59, tzinfo=BERLIN)),  # passed: tomorrow
        ("at 7.30", datetime(2026, 12, 1, 7, 30, tzinfo=BERLIN)),
        ("at 2026-12-24T18:00", datetime(2026, 12, 24, 18, 0, tzinfo=BERLIN)),  # in the zone
        ("at 2026-12-24T18:00+00:00", datetime(2026, 12, 24, 18, 0, tzinfo=UTC)),
    ],
)
def test_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW, BERLIN) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in 20 minutes", NOW + timedelta(minutes=20)),
        ("in 20 min", NOW + timedelta(minutes=20)),
        ("in 1 minute", NOW + timedelta(minutes=1)),
        ("in 2 hours", NOW + timedelta(hours=2)),
        ("in 1 hour 30 minutes", NOW + timedelta(minutes=90)),
        ("in 1h 30m", NOW + timedelta(minutes=90)),
        ("in 1 day", NOW + timedelta(days=1)),
        ("in 45 secs", NOW + timedelta(seconds=45)),
        ("at 6pm", datetime(2026, 11, 30, 18, 0, tzinfo=BERLIN)),
        ("at 6:30 pm", datetime(2026, 11, 30, 18, 30, tzinfo=BERLIN)),
        ("at 7.30am", datetime(2026, 12, 1, 7, 30, tzinfo=BERLIN)),
        ("at 12am", datetime(2026, 12, 1, 0, 0, tzinfo=BERLIN)),
        ("at 12pm", datetime(2026, 12, 1, 12, 0, tzinfo=BERLIN)),
        ("at 6 P.M.", datetime(2026, 11, 30, 18, 0, tzinfo=BERLIN)),
        ("at 21", datetime(2026, 11, 30, 21, 0, tzinfo=BERLIN)),  # an hour alone: on the hour
        ("at 9", datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN)),
        ("at 0", datetime(2026, 12, 1, 0, 0, tzinfo=BERLIN)),
    ],
)
def test_when_as_typed_on_a_phone(text: str, expected: datetime) -> None:
    """What a phone's owner types: `run:backup in 20 minutes`, `at 6pm`. Both were refused
    ("'20 minutes' is not a duration"), where the meaning is plain."""
    assert parse_when(text, NOW, BERLIN) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in an hour", NOW + timedelta(hours=1)),
        ("in a minute", NOW + timedelta(minutes=1)),
        ("in half an hour", NOW + timedelta(minutes=30)),
        ("in a quarter of an hour", NOW + timedelta(minutes=15)),
        ("in an hour and a half", NOW + timedelta(minutes=90)),
        ("in 2 hours and a half", NOW + timedelta(minutes=150)),
        ("at noon", datetime(2026, 12, 1, 12, 0, tzinfo=BERLIN)),
        ("at midnight", datetime(2026, 12, 1, 0, 0, tzinfo=BERLIN)),
        ("at 18h", datetime(2026, 11, 30, 18, 0, tzinfo=BERLIN)),
        ("at 18h30", datetime(2026, 11, 30, 18, 30, tzinfo=BERLIN)),
        ("at 1830", datetime(2026, 11, 30, 18, 30, tzinfo=BERLIN)),
        ("at 0930", datetime(2026, 12, 1, 9, 30, tzinfo=BERLIN)),
        # Tomorrow's, even where today's is still to come; today's only if it is.
        ("at 18:00 tomorrow", datetime(2026, 12, 1, 18, 0, tzinfo=BERLIN)),
        ("tomorrow at 9", datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN)),
        ("Tomorrow at 6pm", datetime(2026, 12, 1, 18, 0, tzinfo=BERLIN)),
        ("at noon tomorrow", datetime(2026, 12, 1, 12, 0, tzinfo=BERLIN)),
        ("today at 21:15", datetime(2026, 11, 30, 21, 15, tzinfo=BERLIN)),
        ("tomorrow 7:30", datetime(2026, 12, 1, 7, 30, tzinfo=BERLIN)),
        ("at tomorrow 9", datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN)),  # --at "tomorrow 9"
        ("at tomorrow at 6pm", datetime(2026, 12, 1, 18, 0, tzinfo=BERLIN)),
        ("at 23:00 today", datetime(2026, 11, 30, 23, 0, tzinfo=BERLIN)),
    ],
)
def test_when_as_people_say_it(text: str, expected: datetime) -> None:
    """`in an hour`, `at noon`, `at 18h`, `tomorrow at 9`: each was "not a duration", "not a
    time" or, for `run:x tomorrow at 9`, not a later run at all."""
    assert parse_when(text, NOW, BERLIN) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("today at 9", "09:00 today has passed; say at 09:00 for tomorrow's"),
        ("tomorrow", "say at what time: tomorrow at 9"),
        ("tomorrow in 2h", "say at what time: tomorrow at 9"),
        ("at 2026-12-24T18:00 tomorrow", "'2026-12-24T18:00 tomorrow' is not a time"),
        ("at 2460", "24:60 is not a time of day"),
        ("at 25h", "25h is not a time of day"),
    ],
)
def test_what_is_not_a_day_and_time_gets_a_short_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_when(text, NOW, BERLIN)


def test_a_time_of_day_in_a_skipped_hour_still_comes_next() -> None:
    # 2027-03-28 02:30 does not exist in Berlin; the answer is still after now, and once.
    now = datetime(2027, 3, 27, 23, 0, tzinfo=UTC)
    when = parse_when("at 02:30", now, BERLIN)
    assert now < when < now + timedelta(hours=5)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("in forever", "'forever' is not a duration"),
        ("in 0s", "at least a second ahead"),
        ("in 99999999999d", "too long"),  # before: an OverflowError, "something went wrong"
        ("in inf", "too long"),
        ("at 25:00", "25:00 is not a time of day"),
        ("at 24", "24 is not a time of day"),
        ("at teatime", "'teatime' is not a time"),
        ("at 13pm", "13pm is not a time of day"),
        ("at 0am", "0am is not a time of day"),
        ("in 20 fortnights", "'20 fortnights' is not a duration"),
        ("soon", "say when: in 20m, at 18:00"),
        ("in", "say when"),
    ],
)
def test_what_is_not_a_time_gets_a_short_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_when(text, NOW, BERLIN)


def test_the_examples_given_are_never_in_the_past() -> None:
    """The date-time example was 2026-12-01T18:00 for good: copied from an answer a few days
    later, it was "in the past". It is tomorrow's now, in the zone, and it parses."""
    later = datetime(2027, 3, 5, 9, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="say when") as info:
        parse_when("at", later, BERLIN)
    example = str(info.value).rsplit(" at ", 1)[1]
    assert example == "2027-03-06T18:00"
    assert parse_when(f"at {example}", later, BERLIN) > later
