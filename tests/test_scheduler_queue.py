"""The scheduler's queue and slots through the in-process launcher (tests/fake_launcher.py):
each run ends when the test says, so these wait for events, never for time, and prove that
nothing else started by the scheduler having processed what it was woken for."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler_core.active import Admission
from scheduler_core.errors import WaitsForItselfError
from scheduler_core.model import Cause, Outcome, Status, TaskSpec
from scheduler_core.queue import RunQueue
from scheduler_core.requests import Stopped
from scheduler_core.store import Store
from scheduler_core.triggers import Cron, Every
from tests.fake_launcher import Make
from tests.helpers import ManualClock, spec, wait_for

NEVER = Cron("0 0 1 1 *", ZoneInfo("UTC"))  # run only on demand in these tests


def task(tasks_dir: Path, task_id: str, priority: int, **kw: object) -> TaskSpec:
    return spec(task_id, "true", tasks_dir, trigger=Every(60))._replace(priority=priority, **kw)


async def test_on_demand_first_then_priority_then_due_time(
    make_fake: Make, tasks_dir: Path
) -> None:
    background = {"interruptible": False}  # so the on-demand run waits its turn here
    specs = [
        task(tasks_dir, "low", 9, **background),
        task(tasks_dir, "high", 1, **background),
        task(tasks_dir, "mid", 5, **background),
        task(tasks_dir, "asked", 10)._replace(trigger=NEVER),
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
        task(tasks_dir, "asked", 5)._replace(trigger=NEVER),
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


async def test_a_slot_that_comes_while_its_run_waits_for_a_slot_says_so(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    """One slot, taken by `long`: `a`'s run waits for it, and `a`'s next slot comes. The
    miss said "the previous run is still going", while `status` said `queued`."""
    clock = ManualClock()
    long = task(tasks_dir, "long", 1)._replace(trigger=NEVER)
    sched, launcher = make_fake([long, task(tasks_dir, "a", 5)], clock, 1)
    (first,) = await launcher.started(1)
    assert first.spec.id == "a"
    first.end()
    await wait_for(lambda: sched.counts() == (0, 0))
    sched.submit("long")
    (*_, busy) = await launcher.started(2)
    clock.advance(60)  # a's slot: its run waits for the one slot
    await wait_for(lambda: sched.counts() == (1, 1))
    clock.advance(60)  # and a's next slot, while that run still waits

    async def missed() -> list[str]:
        return [e.message for e in await store.logs("a") if e.action == "missed"]

    await wait_for(missed)
    assert await missed() == ["1 slot missed: its previous run is still waiting for a slot"]
    busy.end()
    (*_, waited) = await launcher.started(3)
    assert waited.spec.id == "a"


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


async def test_a_run_that_asks_for_another_lends_it_its_slot(
    make_fake: Make, tasks_dir: Path
) -> None:
    """`moltsched run b` in a's script, every slot taken: b starts at once in a's slot, and
    a is not cut for it (before, a was cut, resumed, asked again: for ever)."""
    clock = ManualClock()
    specs = [
        task(tasks_dir, "a", 9),
        task(tasks_dir, "c", 9),
        task(tasks_dir, "b", 5)._replace(trigger=NEVER),
    ]
    sched, launcher = make_fake(specs, clock, 1)
    (a,) = await launcher.started(1)
    submission = sched.submit("b", caller=a.pid)
    assert submission.admission is Admission.STARTED
    b = (await launcher.started(2))[1]
    assert b.spec.id == "b" and a.interrupted is None
    assert sched.counts() == (2, 1)  # a and b go in one slot; c waits
    a.end()  # the asker ends first: b keeps the slot as its own
    await wait_for(lambda: sched.counts() == (1, 1))
    await wait_for(clock.asleep)
    assert launcher.order() == ["a", "b"]  # c still waits: one slot, and b has it
    b.end()
    assert (await submission.result).task_id == "b"
    await launcher.started(3)
    assert launcher.order() == ["a", "b", "c"]


async def test_runs_asked_for_in_a_chain_share_the_first_asker_s_slot(
    make_fake: Make, tasks_dir: Path
) -> None:
    clock = ManualClock()
    never = {"trigger": NEVER}
    specs = [
        task(tasks_dir, "a", 5),
        task(tasks_dir, "d", 9),
        task(tasks_dir, "b", 5, **never),
        task(tasks_dir, "c", 5, **never),
    ]
    sched, launcher = make_fake(specs, clock, 1)
    (a,) = await launcher.started(1)
    sched.submit("b", caller=a.pid)
    b = (await launcher.started(2))[1]
    sched.submit("c", caller=b.pid)
    c = (await launcher.started(3))[2]
    assert sched.counts() == (3, 1) and a.interrupted is None and b.interrupted is None
    for run in (c, b, a):
        run.end()
    await launcher.started(4)
    assert launcher.order() == ["a", "b", "c", "d"]


async def test_an_asker_lends_one_slot_at_a_time_and_is_never_the_one_cut(
    make_fake: Make, tasks_dir: Path
) -> None:
    clock = ManualClock()
    never = {"trigger": NEVER}
    specs = [
        task(tasks_dir, "a", 9),
        task(tasks_dir, "d", 5),
        task(tasks_dir, "b", 5, **never),
        task(tasks_dir, "c", 5, **never),
        task(tasks_dir, "x", 5, **never),
    ]
    sched, launcher = make_fake(specs, clock, 2)
    a, d = sorted(await launcher.started(2), key=lambda r: r.spec.id)
    sched.submit("b", caller=a.pid)  # on a's slot
    b = (await launcher.started(3))[2]
    # From the phone: a is the lowest priority, but cutting it would free no slot (b has
    # it) and cut who asked; d is cut instead.
    sched.submit("x")
    x = (await launcher.started(4))[3]
    assert x.spec.id == "x" and d.interrupted == "for an on-demand run of x"
    assert a.interrupted is None
    # a asks for c too: c waits for a's slot (b has it), and a is still not cut for it.
    assert sched.submit("c", caller=a.pid).admission is Admission.QUEUED
    await wait_for(clock.asleep)
    assert a.interrupted is None and launcher.order() == ["d", "a", "b", "x"]
    b.end()
    assert (await launcher.started(5))[4].spec.id == "c"  # a's slot, lent again
    assert a.interrupted is None


async def test_a_run_that_asks_for_a_run_waiting_for_it_is_refused(
    make_fake: Make, tasks_dir: Path
) -> None:
    """Its own task, or the task whose run asked for it: either would wait for ever."""
    specs = [task(tasks_dir, "a", 5), task(tasks_dir, "b", 5, trigger=NEVER)]
    sched, launcher = make_fake(specs, ManualClock(), 1)
    (a,) = await launcher.started(1)
    with pytest.raises(WaitsForItselfError, match=r"^a cannot wait for its own run$"):
        sched.submit("a", caller=a.pid)
    assert sched.submit("a").admission is Admission.ALREADY_RUNNING  # anyone else joins it
    sched.submit("b", caller=a.pid)
    b = (await launcher.started(2))[1]
    with pytest.raises(WaitsForItselfError, match=r"^b cannot wait for a: a is waiting for b$"):
        sched.submit("a", caller=b.pid)


async def test_the_queue_knows_the_runs_a_run_asked_for_through_every_change() -> None:
    """`borrowing` (what may start in a lent slot) follows adds, promotions, drops and pops."""
    q = RunQueue()
    loop = asyncio.get_running_loop()
    q.add("bg", Cause.SCHEDULE, None, 5, loop.create_future())
    q.add("asked", Cause.ON_DEMAND, None, 5, loop.create_future(), lender=7)
    assert [(w.task_id, w.lender) for w in q.borrowing()] == [("asked", 7)]
    q.promote("bg", 5, lender=8)  # a waiting background run, asked for by a run
    assert sorted((w.task_id, w.lender) for w in q.borrowing()) == [("asked", 7), ("bg", 8)]
    q.drop("asked")
    assert [w.task_id for w in q.borrowing()] == ["bg"]
    popped = q.pop()
    assert popped is not None and popped.lender == 8 and q.borrowing() == []
    q.add("plain", Cause.ON_DEMAND, None, 5, loop.create_future())
    q.promote("plain", 5, lender=9)  # waiting on demand already: it takes the lender
    assert [(w.task_id, w.lender) for w in q.borrowing()] == [("plain", 9)]
    q.clear()
    assert q.borrowing() == [] and len(q) == 0


async def test_a_run_that_breaks_inside_the_launcher_is_recorded_failed(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    """Whatever goes wrong inside, the run gets an outcome: before, it stayed `running` in
    the database with no outcome and no alert until the next restart."""
    clock = ManualClock()
    sched, launcher = make_fake([task(tasks_dir, "a", 5)], clock, 1)
    (first,) = await launcher.started(1)
    first.breaks(RuntimeError("a bug"))
    await wait_for(lambda: sched.counts() == (0, 0))
    (run,) = await store.runs("a")
    state = await store.state("a")
    assert run.outcome is Outcome.FAILED and state is not None and state.status is Status.ERROR
    assert state.last_error == "failed inside the scheduler: RuntimeError: a bug"
    clock.advance(60)  # and the task goes on
    (await launcher.started(2))[1].end()
    await wait_for(lambda: sched.counts() == (0, 0))
    assert [r.outcome for r in await store.runs("a")] == [Outcome.SUCCESS, Outcome.FAILED]


async def test_a_run_that_asks_for_a_task_waiting_in_the_background_lends_it_its_slot(
    make_fake: Make, tasks_dir: Path
) -> None:
    """c waits for a's slot already (both were due): a's `moltsched run c` joins that run and
    lends it the slot, instead of waiting for a run that waits for a."""
    sched, launcher = make_fake(
        [task(tasks_dir, "a", 1), task(tasks_dir, "c", 9)], ManualClock(), 1
    )
    (a,) = await launcher.started(1)
    assert sched.counts() == (1, 1)  # c waits
    assert sched.submit("c", caller=a.pid).admission is Admission.ALREADY_QUEUED
    c = (await launcher.started(2))[1]
    assert c.spec.id == "c" and a.interrupted is None


async def test_a_waiting_slot_stays_due_in_the_store_until_its_run_starts(
    make_fake: Make, store: Store, tasks_dir: Path
) -> None:
    """The store keeps a slot whose run waits for a free one as its task's next time, so a
    daemon that stops or crashes meanwhile makes that run at its next start; the next slot is
    recorded in the transaction of the run's start. `status` shows the next slot all along.
    A waiting run that is stopped lets its slot go: the next slot is recorded then."""
    clock = ManualClock()
    specs = [task(tasks_dir, "a", 1), task(tasks_dir, "b", 5), task(tasks_dir, "c", 6)]
    sched, launcher = make_fake(specs, clock, 1)
    (first,) = await launcher.started(1)
    slot, after = clock.now(), clock.now() + timedelta(seconds=60)
    stored = {s.id: s.next_run for s in await store.states()}
    assert stored == {"a": after, "b": slot, "c": slot}
    shown = {s.id: s for s in await sched.listing.states()}
    assert [shown[t].status for t in "bc"] == [Status.QUEUED, Status.QUEUED]
    assert [shown[t].next_run for t in "abc"] == [after, after, after]

    first.end()
    assert [r.spec.id for r in await launcher.started(2)] == ["a", "b"]
    assert {s.id: s.next_run for s in await store.states()}["b"] == after

    assert (await sched.stop("c", "test"))[0] is Stopped.WAITING

    async def c_let_go() -> bool:
        return {s.id: s.next_run for s in await store.states()}["c"] == after

    await wait_for(c_let_go)
