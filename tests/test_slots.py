"""Slot timing and the waiting queue, as the pure parts they are: no loop, no store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from scheduler_core.model import CatchUp, Cause
from scheduler_core.queue import RunQueue, victims
from scheduler_core.slots import after_clock_went_back, decide
from scheduler_core.triggers import MAX_COUNTED, Cron, Every
from tests.helpers import spec

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_long_downtime_of_a_cron_task_is_counted_only_so_far(tmp_path: Path) -> None:
    """A cron task every minute, down for a year: the slots are counted up to a bound (each
    is a cron computation; the next slot is found from now), and the note says "over"."""
    minutely = spec("m", "true", tmp_path, trigger=Cron("* * * * *", ZoneInfo("UTC")))
    now = T0 + timedelta(days=365, seconds=30)
    late = decide(minutely, T0, now, busy=False)
    assert late.next_due == now.replace(second=0) + timedelta(minutes=1)
    assert late.note == (
        f"over {MAX_COUNTED:,} slots missed since 2026-11-30T12:00:00+00:00; "
        "running one catch-up run"
    )
    assert late.missed > MAX_COUNTED
    exact = decide(minutely, T0, T0 + timedelta(minutes=MAX_COUNTED - 1, seconds=30), False)
    assert exact.note is not None and exact.note.startswith(f"{MAX_COUNTED:,} slots missed")


def test_slot_decisions(tmp_path: Path) -> None:
    hourly = spec("a", "true", tmp_path, trigger=Every(3600))
    on_time = decide(hourly, T0, T0 + timedelta(seconds=5), busy=False)
    assert (on_time.start, on_time.next_due, on_time.note) == (
        Cause.SCHEDULE,
        T0 + timedelta(hours=1),
        None,
    )
    late = decide(hourly, T0, T0 + timedelta(hours=3, minutes=1), busy=False)
    assert late.start is Cause.CATCH_UP and late.next_due == T0 + timedelta(hours=4)
    assert late.note == "4 slots missed since 2026-11-30T12:00:00+00:00; running one catch-up run"
    skipping = hourly._replace(catch_up=CatchUp.SKIP)
    skipped = decide(skipping, T0, T0 + timedelta(hours=3, minutes=1), busy=False)
    assert skipped.start is None and "skipped (catch_up: skip)" in (skipped.note or "")
    busy = decide(hourly, T0, T0 + timedelta(seconds=1), busy=True)
    assert busy.start is None and busy.note == "1 slot missed: the previous run is still going"
    queued = decide(hourly, T0, T0 + timedelta(seconds=1), busy=True, waiting=True)
    assert queued.note == "1 slot missed: its previous run is still waiting for a slot"
    # A minute late is late even for an hourly task; a 10 s task is late after 10 s.
    assert decide(hourly, T0, T0 + timedelta(seconds=61), busy=False).start is Cause.CATCH_UP
    fast = spec("b", "true", tmp_path, trigger=Every(10))
    assert decide(fast, T0, T0 + timedelta(seconds=11), busy=False).start is Cause.CATCH_UP


def test_the_clock_going_back_pulls_in_interval_tasks_only() -> None:
    now = T0 - timedelta(hours=2)  # the clock went back two hours
    assert after_clock_went_back(Every(600), T0, now) == now + timedelta(seconds=600)
    assert after_clock_went_back(Every(600), now + timedelta(seconds=60), now) is None
    assert after_clock_went_back(Cron("0 * * * *", UTC), T0, now) is None  # type: ignore[arg-type]


async def test_queue_order_one_per_task_and_promotion() -> None:
    loop = asyncio.get_running_loop()
    queue = RunQueue()
    for task_id, cause, priority in [
        ("late", Cause.SCHEDULE, 5),
        ("urgent", Cause.SCHEDULE, 1),
        ("resumed", Cause.RESUME, 9),
        ("asked", Cause.ON_DEMAND, 10),
    ]:
        queue.add(task_id, cause, T0, priority, loop.create_future())
    promoted = queue.promote("late", 5)
    assert promoted is not None and promoted.cause is Cause.ON_DEMAND
    assert queue.promote("asked", 10) is None  # already on demand
    assert len(queue) == 4 and "late" in queue
    order = []
    while (w := queue.pop()) is not None:
        order.append(w.task_id)
    assert order == ["late", "asked", "resumed", "urgent"]  # on demand (by priority), resume, rest
    # A dropped run is never popped.
    queue.add("x", Cause.SCHEDULE, T0, 5, loop.create_future())
    assert queue.drop("x") is not None and queue.pop() is None


@dataclass
class Running:
    name: str
    priority: int
    cuttable: bool
    started_at: float


def test_victims_are_the_lowest_priority_then_the_newest() -> None:
    running = [
        Running("old-low", 8, True, 100.0),
        Running("new-low", 8, True, 200.0),
        Running("high", 2, True, 50.0),
        Running("pinned", 10, False, 10.0),  # not interruptible, or on demand itself
    ]
    assert [v.name for v in victims(running, 2)] == ["new-low", "old-low"]
    assert victims(running, 0) == []


def test_due_times_after_a_reload_and_on_resume(tmp_path: Path) -> None:
    from scheduler_core.slots import due_after_reload, due_on_resume

    hourly = spec("a", "true", tmp_path, trigger=Every(3600))
    cron = spec("c", "true", tmp_path, trigger=Cron("0 * * * *", UTC))  # type: ignore[arg-type]
    later = T0 + timedelta(minutes=20)
    assert due_after_reload(None, hourly, None, T0) == T0  # new: at once
    assert due_after_reload(None, cron, None, later) == T0 + timedelta(hours=1)  # new: next slot
    assert due_after_reload(None, hourly, later, T0) == later  # back again: its stored slot
    assert due_after_reload(hourly, hourly, later, T0) == T0 + timedelta(hours=1)  # changed
    assert due_on_resume(hourly, later, T0) == later  # still ahead: kept
    # Passed while paused: the next slot from now, none caught up.
    assert due_on_resume(hourly, T0, T0 + timedelta(hours=2, minutes=5)) == T0 + timedelta(hours=3)
