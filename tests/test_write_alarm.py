"""The alarm for a database that cannot be written, on a real store whose disk is really
full (a small tmpfs) and a real scheduler: when it speaks, how often, through which channel,
what it leaves unsaid once out of date, and how it learns that writes work again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.fallback import Fallback
from bot.write_alarm import REPEAT_S, WriteAlarm
from scheduler_core.errors import StoreError
from scheduler_core.model import (
    CatchUp,
    Cause,
    EngineSettings,
    Outcome,
    RunResult,
    Status,
    TaskSpec,
    TaskState,
)
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from scheduler_core.triggers import Every
from tests.helpers import ManualClock, fill, small_disk, spec, wait_for
from tests.test_outbox import FlakyService


class Disk:
    """The state directory's disk, filled and freed at will; `write()` is any write."""

    def __init__(self, store: Store, filler: Path) -> None:
        self.store, self.filler = store, filler

    async def full(self) -> None:
        fill(self.filler)
        with pytest.raises(StoreError, match="disk is full"):
            await self.store.probe()

    async def freed(self) -> None:
        self.filler.unlink(missing_ok=True)
        await self.store.probe()


@pytest.fixture
async def disk(settings: EngineSettings) -> AsyncIterator[Disk]:
    with small_disk(settings.state_dir) as filler:
        store = await Store.open(settings.db_path)
        try:
            yield Disk(store, filler)
        finally:
            filler.unlink(missing_ok=True)
            await store.close()


@pytest.fixture
def sched(disk: Disk, settings: EngineSettings) -> Scheduler:
    return Scheduler(disk.store, settings, [])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def fallback_to_file(
    sched: Scheduler, clock: ManualClock, tmp_path: Path, *, signal_configured: bool
) -> tuple[Path, Fallback]:
    """A fallback command that appends each alert's kind and text to a file; (file, it)."""
    heard = tmp_path / "heard"
    command = ["bash", "-c", f'{{ echo "$MOLTSCHED_ALERT_KIND"; cat; echo; }} >> "{heard}"']
    return heard, Fallback(
        sched.store, command, 600, signal_configured=signal_configured, clock=clock
    )


@contextlib.asynccontextmanager
async def watching(alarm: WriteAlarm) -> AsyncIterator[None]:
    """The alarm's loop runs for the block, and is closed and awaited after it."""
    loop = asyncio.create_task(alarm.run())
    try:
        yield
    finally:
        alarm.close()
        await asyncio.wait_for(loop, 5)


async def settled(clock: ManualClock) -> None:
    """The alarm did all it was woken for and sleeps (nothing more can happen until the
    clock moves or the store's health changes)."""
    await wait_for(clock.asleep)


async def test_once_each_way_and_at_most_once_an_hour(
    sched: Scheduler, clock: ManualClock, disk: Disk
) -> None:
    service = FlakyService()
    alarm = WriteAlarm(sched, lambda: ["+1", "+2"], clock, service, None)
    async with watching(alarm):
        await disk.full()
        await disk.full()  # more writes failing: the same trouble
        await wait_for(lambda: len(service.delivered) == 2)
        assert {to for to, _ in service.delivered} == {"+1", "+2"}
        text = service.delivered[0][1]
        assert text.startswith("⚠️ moltsched cannot write its database, so no run can start")
        assert "the disk is full" in text
        sched.owed.not_started += 3  # what the scheduler counts while writes fail
        clock.advance(125)  # the alarm tries a write meanwhile, which fails too
        await settled(clock)
        assert len(service.delivered) == 2
        await disk.freed()
        await wait_for(lambda: len(service.delivered) == 4)
        assert service.delivered[-1][1] == (
            "✅ moltsched can write its database again, after 2m5s; "
            "3 run(s) could not start meanwhile."
        )
        # A disk at the edge of full fails again within the hour: not a message each time.
        clock.advance(60)
        await disk.full()
        await settled(clock)
        assert len(service.delivered) == 4
        await disk.freed()
        await disk.full()
        await settled(clock)
        assert len(service.delivered) == 4
        # Still failing an hour after the last alarm: said again.
        clock.advance(REPEAT_S - 60)
        await wait_for(lambda: len(service.delivered) == 6)
        assert "cannot write its database" in service.delivered[-1][1]


async def test_where_signal_fails_the_fallback_command_delivers(
    sched: Scheduler, clock: ManualClock, disk: Disk, tmp_path: Path
) -> None:
    heard, fallback = fallback_to_file(sched, clock, tmp_path, signal_configured=True)
    service = FlakyService()
    service.down = True
    alarm = WriteAlarm(sched, lambda: ["+1"], clock, service, fallback)
    async with watching(alarm):
        await disk.full()
        await wait_for(lambda: heard.exists() and "cannot write" in heard.read_text())
        assert heard.read_text().startswith("database\n⚠️ moltsched cannot write its database")
        assert service.refused == 1  # Signal was tried first
        service.down = False
        await disk.freed()
        await wait_for(lambda: len(service.delivered) == 1)
        assert "can write its database again" in service.delivered[0][1]
        await settled(clock)
        assert heard.read_text().count("\n⚠️") + heard.read_text().count("\n✅") == 1


async def test_no_signal_the_fallback_alone(
    sched: Scheduler, clock: ManualClock, disk: Disk, tmp_path: Path
) -> None:
    heard, fallback = fallback_to_file(sched, clock, tmp_path, signal_configured=False)
    alarm = WriteAlarm(sched, lambda: [""], clock, None, fallback)
    async with watching(alarm):
        await disk.full()
        await wait_for(lambda: heard.exists() and "cannot write" in heard.read_text())
        await disk.freed()
        await wait_for(lambda: "database_ok\n✅" in heard.read_text())


async def test_out_of_date_before_it_went_is_never_sent(
    sched: Scheduler, clock: ManualClock, disk: Disk
) -> None:
    service = FlakyService()
    service.down = True
    alarm = WriteAlarm(sched, lambda: ["+1"], clock, service, None)
    async with watching(alarm):
        await disk.full()
        await wait_for(lambda: service.refused == 1)
        await settled(clock)  # waiting to try again
        await disk.freed()  # over before anyone heard: no alarm, and no all-clear either
        service.down = False
        await settled(clock)
        clock.advance(3600)
        await settled(clock)
        assert service.delivered == [] and service.refused == 1


async def test_no_one_to_tell_the_journal_has_it_once_each_way(
    sched: Scheduler, clock: ManualClock, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bot.write_alarm")
    alarm = WriteAlarm(sched, lambda: (), clock, None, None)
    async with watching(alarm):
        for _ in range(3):
            await disk.full()
        await settled(clock)
        await disk.freed()
        await disk.freed()
        await settled(clock)
    said = [r.getMessage() for r in caplog.records if r.name == "bot.write_alarm"]
    assert len(said) == 2, said
    assert said[0].startswith("the database cannot be written, so no run can start: ")
    assert (
        said[1] == "the database can be written again, after 1s; 0 run(s) could not start meanwhile"
    )


async def test_a_statement_of_ours_that_is_wrong_says_nothing_of_the_file(disk: Disk) -> None:
    """SQL of ours that is wrong is our bug, not a file that refuses writes."""
    with (
        contextlib.closing(sqlite3.connect(":memory:")) as db,
        pytest.raises(sqlite3.Error) as caught,
    ):
        db.execute("SELEC 1")  # a table that is not there is a file that lost it: damage
    wrong = StoreError(str(caught.value))
    wrong.__cause__ = caught.value
    health = disk.store.health
    with pytest.raises(StoreError), health.writing():
        raise wrong
    assert health.error is None
    await disk.full()
    assert health.error is not None and health.error.kind == "full"


async def test_runs_the_store_refused_go_once_it_writes(
    disk: Disk, settings: EngineSettings, clock: ManualClock, tasks_dir: Path
) -> None:
    """A slot whose run could not start is decided again once writes work, as a slot missed
    while the daemon was down: `catch_up: once` runs one catch-up run, `skip` logs the miss.
    A task's later slots refused meanwhile are counted in, not run again each."""
    store = disk.store
    once = spec("once", "true", tasks_dir, trigger=Every(3600))
    skip = spec("skip", "true", tasks_dir, trigger=Every(3600), catch_up=CatchUp.SKIP)
    sched = Scheduler(store, settings, [once, skip], clock=clock)
    loop = asyncio.create_task(sched.run())
    try:
        await wait_for(lambda: runs_of(store, "once", 1))
        await wait_for(lambda: runs_of(store, "skip", 1))
        await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))
        await disk.full()
        for refused in (2, 4):  # two slots of each, an hour apart
            clock.advance(3600)
            await wait_for(lambda n=refused: sched.owed.not_started == n)  # type: ignore[misc]
        clock.advance(600)
        await disk.freed()  # what the daemon's alarm does now and then
        await wait_for(lambda: runs_of(store, "once", 2))
        (run, _) = await store.runs("once")
        assert run.cause is Cause.CATCH_UP
        (missed,) = [e.message for e in await store.logs("skip") if e.action == "missed"]
        assert missed.startswith("2 slots missed since") and missed.endswith("(catch_up: skip)")
        await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))
        assert len(await store.runs("skip")) == 1
        state = await store.state("once")
        assert state is not None and state.next_run == clock.now() + timedelta(seconds=3000)
    finally:
        sched.close()
        await asyncio.wait_for(loop, 10)


async def runs_of(store: Store, task_id: str, n: int) -> bool:
    return len([r for r in await store.runs(task_id, 100) if r.outcome is not None]) >= n


async def test_a_refused_slot_of_a_task_that_ran_since_is_not_owed(
    disk: Disk, settings: EngineSettings, clock: ManualClock, tasks_dir: Path
) -> None:
    """A write may work on a full disk (SQLite reuses room it has): a run can start after
    one was refused, before the store's probe says writes work. That run is the task's due;
    the refused slot is not decided again (it would say slots were missed that ran)."""
    store = disk.store
    task = spec("t", "true", tasks_dir, trigger=Every(60))
    sched = Scheduler(store, settings, [task], clock=clock)
    loop = asyncio.create_task(sched.run())
    try:
        await wait_for(lambda: runs_of(store, "t", 1))
        await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))
        await disk.full()
        clock.advance(60)
        await wait_for(lambda: sched.owed.not_started == 1)
        disk.filler.unlink()  # room again, but the probe has not looked yet
        clock.advance(60)
        await wait_for(lambda: runs_of(store, "t", 2))
        await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))
        await disk.freed()  # the probe: writes work
        await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))
        assert [e for e in await store.logs("t") if e.action == "missed"] == []
        assert len(await store.runs("t")) == 2
    finally:
        sched.close()
        await asyncio.wait_for(loop, 10)


async def test_a_schedule_the_store_refused_to_prepare_starts_once_it_writes(
    disk: Disk, settings: EngineSettings, clock: ManualClock, tasks_dir: Path
) -> None:
    """A daemon started on a full disk: its tasks cannot be taken into the database, so the
    loop waits (answering reads) instead of failing, and starts once writes work."""
    store = disk.store
    await disk.full()
    sched = Scheduler(store, settings, [spec("t", "true", tasks_dir)], clock=clock)
    assert await sched.try_prepare() is False
    loop = asyncio.create_task(sched.run())
    await wait_for(clock.asleep)  # the loop waits to be woken, with no time set
    assert not loop.done() and await store.runs("t") == []
    try:
        await disk.freed()
        await wait_for(lambda: runs_of(store, "t", 1))
    finally:
        sched.close()
        await asyncio.wait_for(loop, 10)


async def test_closed_while_waiting_to_prepare(
    disk: Disk, settings: EngineSettings, clock: ManualClock, tasks_dir: Path
) -> None:
    await disk.full()
    sched = Scheduler(disk.store, settings, [spec("t", "true", tasks_dir)], clock=clock)
    loop = asyncio.create_task(sched.run())
    await wait_for(lambda: sched.store.health.error is not None)
    sched.close()
    await asyncio.wait_for(loop, 10)
    assert await disk.store.runs("t") == []


async def test_the_end_of_a_run_the_store_refused_is_recorded_once_it_writes(
    disk: Disk, settings: EngineSettings, clock: ManualClock, tasks_dir: Path
) -> None:
    """A run that ends while the disk is full (a backup that filled it, say): before, its
    row said `running` until the next start, which then resumed it as if cut short, and its
    failure never alerted. Now its end is recorded, and the after-run hook told, once
    writes work."""
    store = disk.store
    go = tasks_dir / "go"
    task = spec("backup", f"while [ ! -e {go} ]; do sleep 0.05; done; exit 4", tasks_dir)
    heard: list[tuple[str, str]] = []

    async def hook(spec: TaskSpec, result: RunResult, state: TaskState) -> None:
        heard.append((spec.id, str(result.outcome)))

    sched = Scheduler(store, settings, [task], clock=clock, on_finish=hook)
    loop = asyncio.create_task(sched.run())
    try:
        await wait_for(lambda: sched.counts() == (1, 0))
        await disk.full()
        go.touch()
        await wait_for(lambda: sched.counts() == (0, 0))
        assert heard == []
        await disk.freed()
        await wait_for(lambda: heard == [("backup", "failed")])
        (run,) = await store.runs("backup")
        assert run.outcome is Outcome.FAILED and run.exit_code == 4
        state = await store.state("backup")
        assert state is not None and state.status is Status.ERROR
    finally:
        sched.close()
        await asyncio.wait_for(loop, 10)


async def test_while_it_keeps_failing_a_reminder_every_repeat_every(
    sched: Scheduler, clock: ManualClock, disk: Disk
) -> None:
    """A disk full for days: one message when it began, then a reminder each
    `alerts.repeat_every` (as for a task that keeps failing), not silence for days."""
    service = FlakyService()
    alarm = WriteAlarm(sched, lambda: ["+1"], clock, service, None, lambda: 6 * 3600.0)
    async with watching(alarm):
        await disk.full()
        await wait_for(lambda: len(service.delivered) == 1)
        clock.advance(6 * 3600 - 60)
        await settled(clock)
        assert len(service.delivered) == 1
        clock.advance(60)
        await wait_for(lambda: len(service.delivered) == 2)
        assert service.delivered[1][1].startswith(
            "⚠️ moltsched still cannot write its database (for 6h), so no run can start"
        )
        await disk.freed()
        await wait_for(lambda: len(service.delivered) == 3)
        assert "after 6h" in service.delivered[2][1]


async def test_a_write_after_the_store_closed_says_nothing_of_the_file(
    settings: EngineSettings,
) -> None:
    """A late write as the daemon stops (the connection already closed) fails, but not
    because of the file: no alarm in the daemon's last lines."""
    store = await Store.open(settings.db_path)
    await store.close()
    with pytest.raises(StoreError):
        await store.probe()
    assert store.health.error is None
