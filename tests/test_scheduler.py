"""The scheduler loop with real processes, a real store, and a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scheduler_core.active import Admission
from scheduler_core.model import CatchUp, Cause, EngineSettings, Outcome, Status, TaskSpec
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from scheduler_core.triggers import Cron, Every
from tests.helpers import ManualClock, spec, wait_for

Factory = Callable[..., Scheduler]


@pytest.fixture
async def make(store: Store, settings: EngineSettings) -> AsyncIterator[Callable[..., Scheduler]]:
    """Builds a scheduler and runs its loop; stops it at the end of the test."""
    started: list[tuple[Scheduler, asyncio.Task[None]]] = []

    def factory(
        specs: list[TaskSpec], *, clock: ManualClock, max_concurrent: int = 2, loop: bool = True
    ) -> Scheduler:
        s = EngineSettings(settings.state_dir, settings.tasks_dir, None, max_concurrent)
        sched = Scheduler(store, s, specs, clock=clock)
        if loop:
            started.append((sched, asyncio.create_task(sched.run())))
        return sched

    yield factory
    for sched, task in started:
        sched.close()
        await asyncio.wait_for(task, 10)


async def settled(sched: Scheduler, clock: ManualClock) -> None:
    """The loop has done all it was woken for and nothing runs or waits: from here, nothing
    starts until the clock moves or someone asks (so "nothing happened" can be asserted)."""
    await wait_for(lambda: clock.asleep() and sched.counts() == (0, 0))


def starts(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def runs_of(store: Store, task_id: str) -> int:
    return len([r for r in await store.runs(task_id, 100) if r.outcome is not None])


async def test_interval_task_runs_at_once_then_keeps_its_cadence(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    sched = make([spec("a", "echo hi", tasks_dir, trigger=Every(60))], clock=clock)
    await wait_for(lambda: _count(store, "a", 1))
    state = await store.state("a")
    assert state is not None and state.next_run == t0 + timedelta(seconds=60)
    clock.advance(59)
    await settled(sched, clock)
    assert await runs_of(store, "a") == 1
    clock.advance(1.5)
    await wait_for(lambda: _count(store, "a", 2))
    runs = await store.runs("a")
    assert [r.due for r in runs] == [t0 + timedelta(seconds=60), t0]
    assert all(r.cause is Cause.SCHEDULE and r.outcome is Outcome.SUCCESS for r in runs)
    assert runs[0].stdout == "hi\n"


async def _count(store: Store, task_id: str, n: int) -> bool:
    return await runs_of(store, task_id) >= n


async def test_cron_task_waits_for_its_first_slot(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()  # 09:00:00 UTC
    clock.advance(30)
    from zoneinfo import ZoneInfo

    sched = make(
        [spec("c", "true", tasks_dir, trigger=Cron("*/5 * * * *", ZoneInfo("UTC")))], clock=clock
    )
    await wait_for(lambda: _next_run_set(store, "c"))
    state = await store.state("c")
    assert state is not None and state.next_run is not None
    assert state.next_run.strftime("%H:%M:%S") == "09:05:00"
    await settled(sched, clock)
    assert await runs_of(store, "c") == 0
    clock.advance(270)
    await wait_for(lambda: _count(store, "c", 1))


async def _next_run_is(store: Store, task_id: str, when: object) -> bool:
    state = await store.state(task_id)
    return state is not None and state.next_run == when


async def _next_run_set(store: Store, task_id: str) -> bool:
    state = await store.state(task_id)
    return state is not None and state.next_run is not None


async def test_slots_priority_and_on_demand_first(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    log = tasks_dir / "starts"
    gate = tasks_dir / "gate"
    blocker = f"echo blocker >> {log}; while [ ! -e {gate} ]; do sleep 0.01; done"
    specs = [
        # Not interruptible: this is about the queue's order, not preemption.
        spec("blocker", blocker, tasks_dir, priority=1, interruptible=False),
        spec("low", f"echo low >> {log}", tasks_dir, priority=9),
        spec("high", f"echo high >> {log}", tasks_dir, priority=3),
        spec("asked", f"echo asked >> {log}", tasks_dir, priority=5),
    ]
    clock = ManualClock()
    sched = make(specs, clock=clock, max_concurrent=1)
    await wait_for(lambda: starts(log) == ["blocker"])
    states = {s.id: s.status for s in await sched.listing.states()}
    assert states == {
        "blocker": Status.RUNNING,
        "low": Status.QUEUED,
        "high": Status.QUEUED,
        "asked": Status.QUEUED,
    }
    submission = sched.submit("asked")
    assert submission.admission is Admission.ALREADY_QUEUED
    gate.touch()
    result = await asyncio.wait_for(submission.result, 10)
    assert result.outcome is Outcome.SUCCESS and result.cause is Cause.ON_DEMAND
    await wait_for(lambda: len(starts(log)) == 4)
    assert starts(log) == ["blocker", "asked", "high", "low"]


async def test_a_task_never_overlaps_itself(make: Factory, store: Store, tasks_dir: Path) -> None:
    log = tasks_dir / "starts"
    gate = tasks_dir / "gate"
    script = f"echo start >> {log}; while [ ! -e {gate} ]; do sleep 0.01; done"
    clock = ManualClock()
    sched = make([spec("slow", script, tasks_dir, trigger=Every(10))], clock=clock)
    await wait_for(lambda: starts(log) == ["start"])
    again = sched.submit("slow")
    assert again.admission is Admission.ALREADY_RUNNING
    clock.advance(10.5)  # the next slot comes while the run is still going
    await wait_for(lambda: _logged(store, "slow", "missed"))
    gate.touch()
    result = await asyncio.wait_for(again.result, 10)
    assert result.cause is Cause.SCHEDULE
    await settled(sched, clock)
    assert starts(log) == ["start"]
    (entry,) = [e for e in await store.logs("slow") if e.action == "missed"]
    assert entry.message == "1 slot missed: the previous run is still going"


async def _logged(store: Store, task_id: str, action: str) -> bool:
    return any(e.action == action for e in await store.logs(task_id, 50))


@pytest.mark.parametrize("policy", [CatchUp.ONCE, CatchUp.SKIP])
async def test_downtime_catch_up_policies(
    make: Factory, store: Store, tasks_dir: Path, policy: CatchUp
) -> None:
    clock = ManualClock()
    now = clock.now()
    task = spec("t", "true", tasks_dir, trigger=Every(60), catch_up=policy)
    await store.sync_tasks([task])
    await store.set_next_runs([("t", now - timedelta(minutes=10))])  # down for ten minutes
    sched = make([task], clock=clock)
    await wait_for(lambda: _logged(store, "t", "missed"))
    (entry,) = [e for e in await store.logs("t") if e.action == "missed"]
    state = await store.state("t")
    assert state is not None and state.next_run == now + timedelta(seconds=60)
    if policy is CatchUp.ONCE:
        assert entry.message.startswith("11 slots missed since")
        assert entry.message.endswith("running one catch-up run")
        await wait_for(lambda: _count(store, "t", 1))
        (run,) = await store.runs("t")
        assert run.cause is Cause.CATCH_UP
    else:
        assert entry.message.startswith("11 slots missed since")
        assert entry.message.endswith("skipped (catch_up: skip)")
        await settled(sched, clock)
        assert await store.runs("t") == []


async def test_a_slightly_late_slot_is_an_ordinary_run(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    task = spec("t", "true", tasks_dir, trigger=Every(60), catch_up=CatchUp.SKIP)
    await store.sync_tasks([task])
    await store.set_next_runs([("t", clock.now() - timedelta(seconds=2))])
    make([task], clock=clock)
    await wait_for(lambda: _count(store, "t", 1))
    (run,) = await store.runs("t")
    assert run.cause is Cause.SCHEDULE
    assert not await _logged(store, "t", "missed")


async def test_a_failing_run_is_recorded_and_disturbs_nothing(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    specs = [
        spec("bad", "echo working; echo 'no route to host' >&2; exit 3", tasks_dir),
        spec("missing", "true", tasks_dir),
        spec("good", "echo fine", tasks_dir),
    ]
    specs[1] = specs[1]._replace(argv=("/no/such/program",))
    make(specs, clock=clock, max_concurrent=3)
    for tid in ("bad", "missing", "good"):
        await wait_for(lambda tid=tid: _count(store, tid, 1))
    bad = await store.state("bad")
    assert bad is not None and bad.status is Status.ERROR and bad.error_count == 1
    assert bad.last_error is not None and bad.last_error.startswith("exit 3 in ")
    assert bad.last_error.endswith(": no route to host")
    missing = await store.state("missing")
    assert missing is not None and missing.status is Status.ERROR
    assert missing.last_error is not None and "cannot start" in missing.last_error
    good = await store.state("good")
    assert good is not None and good.status is Status.IDLE and good.last_outcome is Outcome.SUCCESS


async def test_a_run_that_cannot_be_spawned_is_recorded_failed(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    """A NUL in an argument or the environment makes Popen raise ValueError, not OSError.
    Before: the run stayed `running` in the database for ever, with no outcome and no alert,
    and a traceback at each slot."""
    specs = [
        spec("arg", "true", tasks_dir)._replace(argv=("echo", "a\0b")),
        spec("env", "true", tasks_dir)._replace(env={"A": "x\0y"}),
    ]
    make(specs, clock=ManualClock(), max_concurrent=2)
    for tid in ("arg", "env"):
        await wait_for(lambda tid=tid: _count(store, tid, 1))
        state = await store.state(tid)
        assert state is not None and state.status is Status.ERROR, state
        assert state.last_error == "cannot start: embedded null byte"


async def test_timeout_is_recorded(make: Factory, store: Store, tasks_dir: Path) -> None:
    clock = ManualClock()
    make([spec("t", "sleep 30", tasks_dir, timeout=0.3, grace=0.2)], clock=clock)
    await wait_for(lambda: _count(store, "t", 1))
    state = await store.state("t")
    assert state is not None and state.last_outcome is Outcome.TIMEOUT
    assert state.last_error == "timed out after 0.3s"
    assert [e.action for e in await store.logs("t")][:2] == ["timeout", "started"]


async def test_environment_of_a_run(
    make: Factory, store: Store, tasks_dir: Path, settings: EngineSettings
) -> None:
    script = (
        'echo "$MOLTSCHED_TASK_ID|$MOLTSCHED_RUN_ID|$MOLTSCHED_CHECKPOINT|$MOLTSCHED_DB|'
        '$MOLTSCHED_CONFIG|$GREETING|$(pwd)"'
    )
    task = spec("envy", script, tasks_dir, env={"GREETING": "hello"})
    await store.sync_tasks([task])
    await store.set_checkpoint("envy", json.dumps({"last_index": 10}))
    sched = make([task], clock=ManualClock(), loop=False)
    loop_task = asyncio.create_task(sched.run(schedule=False))
    result = await asyncio.wait_for(sched.submit("envy").result, 10)
    sched.close()
    await loop_task
    fields = result.stdout.strip().split("|")
    assert fields == [
        "envy",
        str(result.run_id),
        '{"last_index": 10}',
        str(settings.db_path),
        "",
        "hello",
        str(tasks_dir),
    ]


async def test_close_interrupts_and_records_running_runs(
    store: Store, settings: EngineSettings, tasks_dir: Path
) -> None:
    clock = ManualClock()
    sched = Scheduler(store, settings, [spec("long", "sleep 60", tasks_dir, grace=1)], clock=clock)
    loop_task = asyncio.create_task(sched.run())
    await wait_for(lambda: _status(store, "long", Status.RUNNING))
    sched.close()
    await asyncio.wait_for(loop_task, 5)
    state = await store.state("long")
    assert state is not None and state.status is Status.INTERRUPTED
    (run,) = await store.runs("long")
    assert run.outcome is Outcome.INTERRUPTED


async def _status(store: Store, task_id: str, status: Status) -> bool:
    state = await store.state(task_id)
    return state is not None and state.status is status


async def test_crashed_run_resumes_first_with_its_checkpoint(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    out = tasks_dir / "seen"
    task = spec(
        "resumable", f'echo "$MOLTSCHED_CHECKPOINT" > {out}', tasks_dir, trigger=Every(3600)
    )
    await store.sync_tasks([task])
    await store.set_next_runs([("resumable", clock.now() + timedelta(minutes=30))])
    await store.start_run("resumable", Cause.SCHEDULE, None, clock.now())  # then "kill -9"
    await store.set_checkpoint("resumable", '{"last_index": 40}')
    make([task], clock=clock)
    await wait_for(lambda: _count(store, "resumable", 2))
    latest, crashed = await store.runs("resumable")
    assert crashed.outcome is Outcome.INTERRUPTED
    assert latest.cause is Cause.RESUME and latest.outcome is Outcome.SUCCESS
    assert out.read_text() == '{"last_index": 40}\n'


async def test_run_due_runs_only_what_is_due(
    store: Store, settings: EngineSettings, tasks_dir: Path
) -> None:
    clock = ManualClock()
    due = spec("due", "true", tasks_dir)
    later = spec("later", "true", tasks_dir)
    await store.sync_tasks([due, later])
    await store.set_next_runs([("later", clock.now() + timedelta(hours=1))])
    sched = Scheduler(store, settings, [due, later], clock=clock)
    await sched.prepare()
    loop_task = asyncio.create_task(sched.run(schedule=False))
    futures = await sched.run_due()
    results = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert [r.task_id for r in results] == ["due"]
    assert await sched.run_due() == []
    sched.close()
    await loop_task


# Counts through items, checkpointing after each, with the Python that has scheduler_core.
COUNTER = f"""
py={sys.executable}
start=$($py -c 'import json, os; c = os.environ["MOLTSCHED_CHECKPOINT"]
print(json.loads(c)["next"] if c else 0)')
echo "start $start"
for ((i = start; i < {{n}}; i++)); do
  echo "$i" >> {{log}}
  $py -c 'import sys; from scheduler_core.checkpoint import save_checkpoint as save
save({{{{"next": int(sys.argv[1])}}}})' $((i + 1))
  sleep 0.05
done
"""


@pytest.mark.parametrize("interruptible", [True, False])
async def test_on_demand_runs_preempt_background_runs(
    make: Factory, store: Store, tasks_dir: Path, interruptible: bool
) -> None:
    items = tasks_dir / "items"
    long = spec(
        "long",
        COUNTER.format(n=30, log=items),
        tasks_dir,
        priority=9,
        interruptible=interruptible,
        grace=2,
    )
    quick = spec("quick", "echo quick", tasks_dir, trigger=Every(3600))
    await store.sync_tasks([long, quick])
    await store.set_next_runs([("quick", ManualClock().now() + timedelta(hours=1))])
    sched = make([long, quick], clock=ManualClock(), max_concurrent=1)
    await wait_for(lambda: items.exists() and len(items.read_text().split()) >= 5, 20)
    submission = sched.submit("quick")
    assert submission.admission is Admission.QUEUED
    result = await asyncio.wait_for(submission.result, 30)
    assert result.outcome is Outcome.SUCCESS
    runs = await store.runs("long", 10)
    if interruptible:
        # long was cut for quick, and resumes from its checkpoint once quick is done.
        (cut,) = [r for r in runs if r.outcome is Outcome.INTERRUPTED]
        assert cut.cause is Cause.SCHEDULE
        entry = next(e for e in await store.logs("long") if e.action == "interrupted")
        assert entry.message.startswith("for an on-demand run of quick, after ")
        await wait_for(lambda: _outcome_of_last(store, "long", Outcome.SUCCESS), 30)
        resumed = (await store.runs("long", 1))[0]
        assert resumed.cause is Cause.RESUME and not resumed.stdout.startswith("start 0\n")
        done = [int(x) for x in items.read_text().split()]
        assert set(done) == set(range(30)) and len(done) - 30 <= 1
    else:
        # Never cut: quick waited for it.
        assert [r.outcome for r in runs] == [Outcome.SUCCESS]
        assert runs[0].ended is not None and runs[0].ended <= result.started


async def _outcome_of_last(store: Store, task_id: str, outcome: Outcome) -> bool:
    runs = await store.runs(task_id, 1)
    return bool(runs) and runs[0].outcome is outcome


async def test_the_clock_jumping_forward_an_hour_and_back(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    from zoneinfo import ZoneInfo

    clock = ManualClock()  # 09:00
    interval = spec("iv", "true", tasks_dir, trigger=Every(60))
    hourly = spec("cr", "true", tasks_dir, trigger=Cron("0 * * * *", ZoneInfo("UTC")))
    sched = make([interval, hourly], clock=clock)
    await wait_for(lambda: _count(store, "iv", 1))

    clock.jump(3600)  # forward an hour (a suspend, an NTP correction)
    await wait_for(lambda: _count(store, "iv", 2))
    await wait_for(lambda: _count(store, "cr", 1))  # 10:00 is a slot of its own
    (catch_up, first) = await store.runs("iv")
    assert first.cause is Cause.SCHEDULE
    assert catch_up.cause is Cause.CATCH_UP  # one run for the missed hour, not sixty
    missed = [e.message for e in await store.logs("iv") if e.action == "missed"]
    assert len(missed) == 1 and missed[0].startswith("60 slots missed")

    clock.jump(-3600)  # and back
    expected = clock.now() + timedelta(seconds=60)
    await wait_for(lambda: _next_run_is(store, "iv", expected))
    clock.advance(60)  # every minute still means every minute
    await wait_for(lambda: _count(store, "iv", 3))
    await settled(sched, clock)
    assert await runs_of(store, "iv") == 3 and await runs_of(store, "cr") == 1  # no burst


async def test_a_start_with_the_clock_behind_the_database_keeps_intervals(
    make: Factory, store: Store, tasks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Raspberry Pi has no clock of its own: it boots at the time it last saved (or at
    1970), and NTP sets it later, if the network comes. A daemon started meanwhile took its
    interval tasks' next slots from the database, now days ahead, and ran none of them until
    the clock caught up; had it been running when the clock went back, they would have kept
    their interval. Now the same at a start. Cron tasks keep their slots either way: a cron
    job of 10:30 that ran at 10:30 does not run again when the clock says 10:30 once more."""
    from zoneinfo import ZoneInfo

    clock = ManualClock()  # 09:00
    interval = spec("iv", "true", tasks_dir, trigger=Every(3600))
    half_past = spec("cr", "true", tasks_dir, trigger=Cron("30 * * * *", ZoneInfo("UTC")))
    first = make([interval, half_past], clock=clock)
    await wait_for(lambda: _count(store, "iv", 1))
    clock.advance(1800)
    await wait_for(lambda: _count(store, "cr", 1))
    await settled(first, clock)
    first.close()

    behind = ManualClock(clock.now() - timedelta(days=2))  # the next boot, before NTP
    second = make([interval, half_past], clock=behind)
    await wait_for(lambda: _next_run_is(store, "iv", behind.now() + timedelta(hours=1)))
    assert "the clock is 2d behind the newest run in the database" in caplog.text
    behind.advance(3600)  # every hour still means every hour
    await wait_for(lambda: _count(store, "iv", 2))
    await settled(second, behind)
    assert await _next_run_is(store, "cr", clock.now() + timedelta(hours=1))
    assert await runs_of(store, "cr") == 1


async def test_a_schedule_changed_while_no_daemon_ran_applies_from_the_start(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    """Edit the file, restart the daemon: the commonest way to change a schedule. A task
    moved from yearly to every five minutes kept its stored slot, next New Year, and did
    not run for weeks; one moved to another time zone ran at the old zone's hour. A restart
    now applies a changed schedule from now, as a reload does; an unchanged one keeps its
    slot."""
    from zoneinfo import ZoneInfo

    utc, tokyo = ZoneInfo("UTC"), ZoneInfo("Asia/Tokyo")
    clock = ManualClock()  # 2026-11-26 09:00 UTC
    yearly = spec("y", "true", tasks_dir, trigger=Cron("0 0 1 1 *", utc))
    daily = spec("d", "true", tasks_dir, trigger=Cron("0 12 * * *", utc))
    same = spec("s", "true", tasks_dir, trigger=Cron("0 0 1 1 *", utc))
    held = spec("p", "true", tasks_dir, trigger=Cron("0 0 1 1 *", utc))
    first = make([yearly, daily, same, held], clock=clock)
    await settled(first, clock)
    await first.pause("p", None)
    first.close()

    clock.advance(60)
    often = yearly._replace(trigger=Cron("*/5 * * * *", utc))
    elsewhere = daily._replace(trigger=Cron("0 12 * * *", tokyo))
    hourly = held._replace(trigger=Cron("0 * * * *", utc))
    second = make([often, elsewhere, same, hourly], clock=clock)
    await settled(second, clock)
    assert await _next_run_is(store, "y", datetime(2026, 11, 26, 9, 5, tzinfo=utc))
    assert await _next_run_is(store, "d", datetime(2026, 11, 27, 3, 0, tzinfo=utc))
    assert await _next_run_is(store, "s", datetime(2027, 1, 1, tzinfo=utc))
    clock.advance(4 * 60)
    await wait_for(lambda: _count(store, "y", 1))
    # Paused meanwhile: resumed, it goes by its new schedule too, not the old slot.
    await second.resume("p", None)
    await wait_for(lambda: _next_run_is(store, "p", datetime(2026, 11, 26, 10, 0, tzinfo=utc)))


async def test_slots_missed_behind_a_long_run_are_one_entry_and_a_count(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    """A task every minute whose run hangs for hours misses a slot a minute: the action log
    (kept for days) gets the first miss at once and the rest as one count when the run ends,
    not a row per slot."""
    clock = ManualClock()
    t0 = clock.now()
    flag = tasks_dir / "go"
    task = spec("slow", f"while [ ! -e {flag} ]; do sleep 0.05; done", tasks_dir)
    task = task._replace(trigger=Every(60))
    sched = make([task], clock=clock)
    await wait_for(lambda: sched.counts() == (1, 0))

    async def next_run_is(due: datetime) -> bool:
        state = await store.state("slow")
        return state is not None and state.next_run == due

    for n in range(1, 6):  # five slots while it runs
        clock.advance(60)
        await wait_for(lambda n=n: next_run_is(t0 + timedelta(seconds=60 * (n + 1))))  # type: ignore[misc]
    flag.touch()
    await wait_for(lambda: _count(store, "slow", 1))
    clock.advance(60)
    await wait_for(lambda: _count(store, "slow", 2))
    await settled(sched, clock)
    missed = [e.message for e in await store.logs("slow") if e.action == "missed"]
    assert sorted(missed) == [
        "1 slot missed: the previous run is still going",
        "4 more slots missed while the previous run went on",
    ]


async def test_a_run_killed_by_a_signal_names_it_and_says_what_sigkill_most_often_is(
    make: Factory, store: Store, tasks_dir: Path
) -> None:
    """Before: "killed by signal 9", and a script whose command was killed: "exit 137"."""
    clock = ManualClock()
    specs = [
        spec("oom", "kill -KILL $$", tasks_dir),
        spec("crash", "kill -SEGV $$", tasks_dir),
        spec("inner", "bash -c 'kill -KILL $$'", tasks_dir),
    ]
    make(specs, clock=clock, max_concurrent=3)
    errors = {}
    for tid in ("oom", "crash", "inner"):
        await wait_for(lambda tid=tid: _count(store, tid, 1))
        state = await store.state(tid)
        assert state is not None and state.last_error is not None
        errors[tid] = re.sub(r" in [0-9.]+s", "", state.last_error)
    assert errors["oom"] == "killed by SIGKILL (not by moltsched: most often, out of memory)"
    assert errors["crash"] == "killed by SIGSEGV"
    assert errors["inner"].startswith(  # then bash's own line: "… Killed  bash -c …"
        "exit 137 (128 + 9: what it ran was killed by SIGKILL, most often out of memory): "
    )
