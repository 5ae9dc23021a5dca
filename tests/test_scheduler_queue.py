"""The scheduler's queue and slots through the in-process launcher (tests/fake_launcher.py):
each run ends when the test says, so these wait for events, never for time, and prove that
nothing else started by the scheduler having processed what it was woken for."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

from scheduler_core.active import Admission
from scheduler_core.model import Cause, TaskSpec
from scheduler_core.queue import RunQueue
from scheduler_core.store import Store
from scheduler_core.triggers import Cron, Every
from tests.fake_launcher import Make
from tests.helpers import ManualClock, spec, wait_for

NEVER = Cron("0 0 1 1 *", ZoneInfo("UTC"))  # run only on demand in these tests


def task(tasks_dir: Path, task_id: str, priority: int, **kw: object) -> TaskSpec:
    return replace(spec(task_id, "true", tasks_dir, trigger=Every(60)), priority=priority, **kw)


async def test_on_demand_first_then_priority_then_due_time(
    make_fake: Make, tasks_dir: Path
) -> None:
    background = {"interruptible": False}  # so the on-demand run waits its turn here
    specs = [
        task(tasks_dir, "low", 9, **background),
        task(tasks_dir, "high", 1, **background),
        task(tasks_dir, "mid", 5, **background),
        replace(task(tasks_dir, "asked", 10), trigger=NEVER),
    ]
    sched, launcher = make_fake(specs, ManualClock(), 1)
    (first,) = await launcher.started(1)
    assert first.spec.id == "high"  # all three were due at once: by priority
    submission = sched.submit("asked")
    assert submission.admission is Admission.QUEUED
    for n in range(2, 5):
        launcher.started_runs[-1].end()
        await launcher.started(n)
    assert launcher.order() == ["high", "asked", "mid", "low"]
    launcher.started_runs[-1].end()
    assert (await submission.result).task_id == "asked"


async def test_an_on_demand_run_cuts_the_lowest_priority_run_which_resumes_after(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    specs = [
        task(tasks_dir, "a", 3),
        task(tasks_dir, "b", 8),
        replace(task(tasks_dir, "asked", 5), trigger=NEVER),
    ]
    await store.sync_tasks(specs)
    await store.set_checkpoint("b", '{"done": 4}')
    sched, launcher = make_fake(specs, ManualClock(), 2)
    await launcher.started(2)
    submission = sched.submit("asked")
    runs = await launcher.started(3)
    by_id = {run.spec.id: run for run in runs}
    assert by_id["b"].interrupted == "for an on-demand run of asked"  # the lowest priority
    assert by_id["a"].interrupted is None and runs[2].spec.id == "asked"
    runs[2].end()
    assert (await submission.result).cause is Cause.ON_DEMAND
    resumed = (await launcher.started(4))[3]
    assert resumed.spec.id == "b" and resumed.checkpoint == '{"done": 4}'  # from its checkpoint
    assert [r.cause for r in await store.runs("b")] == [Cause.RESUME, Cause.SCHEDULE]


async def test_a_slot_that_comes_while_its_task_runs_is_missed_not_queued(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    clock = ManualClock()
    sched, launcher = make_fake([task(tasks_dir, "a", 5)], clock, 2)
    (run,) = await launcher.started(1)
    clock.advance(60)  # its next slot, while the first run goes on

    async def missed() -> bool:
        return any(e.action == "missed" for e in await store.logs("a"))

    await wait_for(missed)
    # The slot has been processed (the miss is logged as it is): nothing else was started.
    assert len(launcher.started_runs) == 1 and sched.counts() == (1, 0)
    run.end()
    await wait_for(lambda: sched.counts() == (0, 0))  # recorded, its slot free
    clock.advance(60)
    await launcher.started(2)
    assert launcher.order() == ["a", "a"]


async def test_the_queue_knows_its_on_demand_runs_through_every_change() -> None:
    """`on_demand` (what preemption weighs) follows adds, promotions, drops and pops."""
    q = RunQueue()
    loop = asyncio.get_running_loop()
    q.add("bg", Cause.SCHEDULE, None, 5, loop.create_future())
    q.add("asked", Cause.ON_DEMAND, None, 5, loop.create_future())
    assert [w.task_id for w in q.on_demand()] == ["asked"]
    q.promote("bg", 5)  # asked for while waiting in the background
    assert sorted(w.task_id for w in q.on_demand()) == ["asked", "bg"]
    q.drop("asked")
    assert [w.task_id for w in q.on_demand()] == ["bg"]
    popped = q.pop()
    assert popped is not None and popped.task_id == "bg" and q.on_demand() == []
    q.add("again", Cause.ON_DEMAND, None, 5, loop.create_future())
    q.clear()
    assert q.on_demand() == [] and len(q) == 0
