"""Retries, one-shot runs, cancel and stop in the scheduler (issue 15), with a real store, the
in-process launcher and a clock the test moves: runs start and end when the test says."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler_core.errors import SchedulerError
from scheduler_core.later import MAX_ONE_SHOTS
from scheduler_core.model import Cause, Outcome, Status, TaskSpec
from scheduler_core.requests import Stopped
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from scheduler_core.triggers import Cron, Every
from tests.fake_launcher import Make
from tests.helpers import ManualClock, spec, wait_for


async def stop_loop(sched: Scheduler) -> None:
    sched.close()
    await asyncio.wait_for(sched.drained(), 10)


async def settled(sched: Scheduler, clock: ManualClock) -> None:
    """Nothing runs or waits and the loop sleeps: nothing starts until the clock moves."""
    await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))


def flaky(tasks_dir: Path, every: float = 3600, **kw: object) -> TaskSpec:
    return spec("flaky", "true", tasks_dir, trigger=Every(every))._replace(**kw)


async def test_a_failed_run_is_retried_with_doubling_delays_and_fails_once_in_all(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    sched, launcher = make_fake([flaky(tasks_dir, retries=2, retry_delay=30)], clock)
    (first,) = await launcher.started(1)
    first.end(Outcome.FAILED)
    await settled(sched, clock)
    (retry,) = await store.later_runs("flaky")
    assert (retry.cause, retry.attempt, retry.due) == (Cause.RETRY, 1, t0 + timedelta(seconds=30))
    clock.advance(29)
    await settled(sched, clock)
    assert len(launcher.started_runs) == 1
    clock.advance(1)
    (*_, second) = await launcher.started(2)
    assert await store.later_runs("flaky") == []  # a retry leaves the store as it starts
    second.end(Outcome.TIMEOUT)
    await settled(sched, clock)
    (retry,) = await store.later_runs("flaky")
    assert retry.attempt == 2 and retry.due == t0 + timedelta(seconds=30 + 60)  # twice as long
    clock.advance(60)
    (*_, third) = await launcher.started(3)
    third.end(Outcome.FAILED)
    await settled(sched, clock)
    assert await store.later_runs("flaky") == []  # the retries are used up
    runs = list(reversed(await store.runs("flaky")))
    assert [r.cause for r in runs] == [Cause.SCHEDULE, Cause.RETRY, Cause.RETRY]
    state = await store.state("flaky")
    assert state is not None
    # Three runs failed, but a run and its retries are one failure in the streak.
    assert (state.run_count, state.error_count, state.consecutive_failures) == (3, 3, 1)
    assert await store.recent_outcomes("flaky", 10) == [False]  # the last of the three


async def test_a_retry_that_would_come_after_the_next_slot_takes_that_slot(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    sched, launcher = make_fake([flaky(tasks_dir, every=60, retries=1, retry_delay=100)], clock)
    (first,) = await launcher.started(1)
    first.end(Outcome.FAILED)
    await settled(sched, clock)
    (retry,) = await store.later_runs("flaky")
    slot = t0 + timedelta(seconds=60)
    assert retry.due == slot and retry.took_slot == slot
    clock.advance(60)
    (*_, second) = await launcher.started(2)
    second.end()
    await settled(sched, clock)
    assert len(launcher.started_runs) == 2  # the slot ran once: as the retry
    assert [r.cause for r in await store.runs("flaky")] == [Cause.RETRY, Cause.SCHEDULE]
    state = await store.state("flaky")
    assert state is not None and state.next_run == t0 + timedelta(seconds=120)
    assert state.consecutive_failures == 0 and state.status is Status.IDLE


async def test_a_retry_survives_a_restart_and_cancel_gives_a_taken_slot_back(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    task = flaky(tasks_dir, every=60, retries=3, retry_delay=45)
    sched, launcher = make_fake([task], clock)
    (first,) = await launcher.started(1)
    first.end(Outcome.FAILED)
    await settled(sched, clock)
    await stop_loop(sched)
    sched, launcher = make_fake([task], clock)  # a restart: the retry is read back from the store
    await settled(sched, clock)
    clock.advance(45)
    (again,) = await launcher.started(1)
    assert again.spec.id == "flaky"
    again.end(Outcome.FAILED)  # retry 2 would be 90s after: past the slot at 60s, so it takes it
    await settled(sched, clock)
    (retry,) = await store.later_runs("flaky")
    assert retry.attempt == 2 and retry.took_slot == t0 + timedelta(seconds=60)
    gone = await sched.cancel("flaky", "cli:alice")
    assert [r.id for r in gone] == [retry.id] and await store.later_runs("flaky") == []
    clock.advance(15)  # the slot is the schedule's again
    (*_, scheduled) = await launcher.started(2)
    scheduled.end()
    await settled(sched, clock)
    assert (await store.runs("flaky", 1))[0].cause is Cause.SCHEDULE
    assert [e.action for e in await store.logs("flaky")].count("cancelled") == 1


async def test_interrupted_and_stopped_runs_are_not_retried(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    sched, launcher = make_fake([flaky(tasks_dir, retries=3)], clock)
    (first,) = await launcher.started(1)
    stopping = asyncio.create_task(sched.stop("flaky", "signal:+4917600000000"))
    found, result = await stopping
    assert found is Stopped.RUN and result is not None
    assert result.outcome is Outcome.STOPPED
    assert result.message.startswith("stopped by signal:+4917600000000 after")
    assert first.interrupted == "stopped by signal:+4917600000000"
    await settled(sched, clock)
    assert await store.later_runs("flaky") == []  # not retried, and not resumed either
    assert len(launcher.started_runs) == 1
    state = await store.state("flaky")
    assert state is not None
    assert state.status is Status.IDLE and state.last_outcome is Outcome.STOPPED
    assert state.next_run == t0 + timedelta(hours=1)  # the schedule stands
    assert (state.run_count, state.error_count) == (0, 0)
    assert (await store.logs("flaky", 1))[0].action == "stopped"
    assert await sched.stop("flaky", "cli:bob") == (Stopped.NOTHING, None)
    # A pause interrupts: that run resumes later, it is not retried.
    sched.submit("flaky")
    (*_, second) = await launcher.started(2)
    await sched.pause("flaky", "cli:bob")
    await settled(sched, clock)
    assert second.interrupted == "paused" and await store.later_runs("flaky") == []


async def test_a_one_shot_waits_for_its_time_and_for_its_task_and_survives_a_restart(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    task = flaky(tasks_dir)
    sched, launcher = make_fake([task], clock)
    (first,) = await launcher.started(1)
    first.end()
    await settled(sched, clock)
    due = t0 + timedelta(minutes=20)
    run, added = await sched.run_later("flaky", due, "cli:alice")
    assert added and (run.cause, run.due, run.actor) == (Cause.ONE_SHOT, due, "cli:alice")
    assert [r.id for r in await sched.pending("flaky")] == [run.id]
    await stop_loop(sched)
    sched, launcher = make_fake([task], clock)
    await settled(sched, clock)
    sched.submit("flaky")  # running when the one-shot comes due: it waits for it
    (busy,) = await launcher.started(1)
    clock.advance(20 * 60)
    await settled_or_running(sched, clock)
    assert len(launcher.started_runs) == 1
    busy.end()
    (*_, one_shot) = await launcher.started(2)
    one_shot.end()
    await settled(sched, clock)
    assert (await store.runs("flaky", 1))[0].cause is Cause.ONE_SHOT
    assert await store.later_runs("flaky") == []


@contextlib.contextmanager
def inserts_refused(store: Store, table: str) -> Iterator[None]:
    """Every insert into `table` fails, by a trigger in the database file, until the end."""
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        db.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
        db.commit()
        try:
            yield
        finally:
            db.execute("DROP TRIGGER refuse")
            db.commit()


async def test_a_one_shot_whose_start_cannot_be_recorded_is_kept(
    make_fake: Make, store: Store, tasks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A one-shot left the `later` table in one transaction and its run was recorded in the
    next. When the second failed (or the daemon died between the two, `kill -9`, a power
    cut), the one-shot was gone: not pending, never run, nothing said. Now both are one
    transaction. The second is made to fail by a trigger in the database file."""
    clock = ManualClock()
    task = flaky(tasks_dir, every=366 * 86400)
    sched, launcher = make_fake([task], clock)
    (first,) = await launcher.started(1)
    first.end()
    await settled(sched, clock)
    await sched.run_later("flaky", clock.now() + timedelta(minutes=1), "cli:alice")
    with inserts_refused(store, "run"):
        clock.advance(60)
        await wait_for(lambda: "could not record the start" in caplog.text)
        await stop_loop(sched)
    assert [r.cause for r in await store.later_runs("flaky")] == [Cause.ONE_SHOT]
    sched, launcher = make_fake([task], clock)  # a restart: it runs, once
    (again,) = await launcher.started(1)
    again.end()
    await settled(sched, clock)
    assert (await store.runs("flaky", 1))[0].cause is Cause.ONE_SHOT
    assert await store.later_runs("flaky") == []


async def test_a_failed_run_whose_retry_cannot_be_kept_goes_again_after_a_restart(
    make_fake: Make, store: Store, tasks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed run was recorded "a retry follows" in one transaction, and its retry kept in
    the next. When the second failed (or the daemon died between the two), the run stayed
    failed-and-retried with no retry: never run again, and no alert (a run with a retry
    coming is not alerted). Now both are one transaction: the run stays open, and goes again
    (resumed) at the next start. The second write is made to fail by a trigger."""
    clock = ManualClock()
    task = flaky(tasks_dir, every=366 * 86400, retries=2)
    sched, launcher = make_fake([task], clock)
    with inserts_refused(store, "later"):
        (first,) = await launcher.started(1)
        first.end(Outcome.FAILED)
        await wait_for(lambda: "could not" in caplog.text)
        await stop_loop(sched)
    sched, launcher = make_fake([task], clock)  # a restart: the task goes again
    (again,) = await launcher.started(1)
    again.end()
    await settled(sched, clock)
    assert [r.outcome for r in await store.runs("flaky")] == [Outcome.SUCCESS, Outcome.INTERRUPTED]


async def settled_or_running(sched: Scheduler, clock: ManualClock) -> None:
    """The loop sleeps with one run going and nothing waiting for a slot."""
    await wait_for(lambda: clock.asleep() and sched.counts() == (1, 0))


async def test_one_shots_are_refused_in_the_past_too_far_ahead_or_beyond_the_limit(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    sched, launcher = make_fake([flaky(tasks_dir)], clock)
    await launcher.started(1)
    now = clock.now()
    with pytest.raises(SchedulerError, match="in the past"):
        await sched.run_later("flaky", now - timedelta(seconds=1), None)
    with pytest.raises(SchedulerError, match="a year ahead"):
        await sched.run_later("flaky", now + timedelta(days=400), None)
    for i in range(MAX_ONE_SHOTS):
        await sched.run_later("flaky", now + timedelta(minutes=10 + i), None)
    with pytest.raises(SchedulerError, match=f"{MAX_ONE_SHOTS} one-shot runs pending"):
        await sched.run_later("flaky", now + timedelta(hours=5), None)
    assert len(await sched.cancel("flaky", "cli:alice")) == MAX_ONE_SHOTS
    assert await sched.pending("flaky") == []


async def test_a_one_shot_asked_for_again_near_the_same_time_is_the_one_waiting(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    """An agent retrying a call, or a message sent twice, adds no second run: it would only
    go right after the first. A minute apart they are two runs."""
    clock = ManualClock()
    sched, launcher = make_fake([flaky(tasks_dir)], clock)
    (first,) = await launcher.started(1)
    first.end()
    await settled(sched, clock)
    due = clock.now() + timedelta(minutes=20)
    run, added = await sched.run_later("flaky", due, "cli:alice")
    again, added_again = await sched.run_later("flaky", due, "signal:bob")
    nearly, added_nearly = await sched.run_later("flaky", due + timedelta(seconds=59), None)
    assert added and not added_again and not added_nearly
    assert again == run and nearly == run
    later, added_later = await sched.run_later("flaky", due + timedelta(seconds=60), None)
    assert added_later and later.id != run.id
    assert [r.id for r in await store.later_runs("flaky")] == [run.id, later.id]
    assert [r.id for r in await sched.pending("flaky")] == [run.id, later.id]
    scheduled = [e for e in await store.logs("flaky", 10) if e.action == "scheduled"]
    assert len(scheduled) == 2
    clock.advance(20 * 60)
    (*_, one_shot) = await launcher.started(2)
    one_shot.end()
    await settled(sched, clock)
    assert [r.id for r in await store.later_runs("flaky")] == [later.id]
    clock.advance(60)
    (*_, second) = await launcher.started(3)
    second.end()
    await settled(sched, clock)
    assert len(launcher.started_runs) == 3 and await store.later_runs("flaky") == []


async def test_cancel_takes_out_a_one_shot_already_waiting_for_a_slot_once(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    yearly = Cron("0 0 1 1 *", ZoneInfo("UTC"))  # nothing runs unless asked
    specs = [spec(name, "true", tasks_dir, trigger=yearly) for name in ("a", "b", "flaky")]
    sched, launcher = make_fake(specs, clock)
    await sched.run_later("flaky", clock.now() + timedelta(minutes=1), None)
    sched.submit("a")
    sched.submit("b")
    await launcher.started(2)  # both slots are taken when the one-shot comes due
    clock.advance(60)
    await wait_for(lambda: clock.asleep() and sched.counts() == (2, 1))
    gone = await sched.cancel("flaky", "cli:alice")
    assert [r.cause for r in gone] == [Cause.ONE_SHOT]  # once: it was queued and in the store
    assert sched.counts() == (2, 0) and await store.later_runs("flaky") == []
