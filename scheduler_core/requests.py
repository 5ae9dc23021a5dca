"""What is asked of the scheduler from outside its loop: run now, run later, cancel, stop,
pause, resume, reload, close. A mixin of `Scheduler` (`scheduler_core.scheduler`), which owns the
loop and the state these requests change; each request changes that state and wakes the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from scheduler_core.active import Active, Admission, Submission, fail
from scheduler_core.errors import SchedulerError, WaitsForItselfError
from scheduler_core.later import MAX_ONE_SHOTS, LaterRuns
from scheduler_core.launcher import Launcher
from scheduler_core.model import (
    Cause,
    EngineSettings,
    LaterRun,
    RunRecord,
    RunResult,
    Status,
    TaskSpec,
    TaskState,
)
from scheduler_core.queue import RunQueue, Waiting
from scheduler_core.reads import Reads
from scheduler_core.slots import due_after_reload, due_on_resume
from scheduler_core.timetable import Timetable

# How far ahead a one-shot run may be asked for.
LATER_MAX_S = 366 * 86400.0


class Phase(StrEnum):
    """Where the scheduler is in its life: made, prepared (heap built), running its loop,
    closing (no new runs; running ones interrupted), stopped (every run recorded)."""

    NEW = "new"
    PREPARED = "prepared"
    RUNNING = "running"
    CLOSING = "closing"
    STOPPED = "stopped"


class Stopped(StrEnum):
    """What `stop` found: a run it ended, a run that had not started yet, or nothing."""

    RUN = "run"
    WAITING = "waiting"
    NOTHING = "nothing"


class Requests(Reads):
    # The scheduler's state (set up by Scheduler.__init__).
    settings: EngineSettings
    launcher: Launcher
    phase: Phase
    _timetable: Timetable
    _later: LaterRuns
    _queue: RunQueue
    _running: dict[str, Active]
    _paused: set[str]
    _wake: asyncio.Event
    _hurry: asyncio.Event

    def close(self, *, now: bool = False) -> None:
        """Stop dispatching and interrupt running runs (`now`: without waiting out their
        grace, also when closing already); `run()` returns once they are recorded. Closed
        during `prepare()`, it starts nothing; `now` also hurries what a crash left."""
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.CLOSING
        if now:
            self._hurry.set()
        for active in self._running.values():
            active.run.interrupt("the scheduler is stopping", now=now)
        self._wake.set()

    @property
    def closing(self) -> bool:
        """close() was called and runs are still being stopped."""
        return self.phase is Phase.CLOSING

    def under_way(self, task_id: str) -> RunRecord | None:
        active = self._running.get(task_id)
        if active is None or active.started is None:
            return None  # not started yet (its start is being recorded)
        stdout, stderr = active.run.output()
        w = active.waiting
        return RunRecord(
            run_id=active.run_id,
            task_id=task_id,
            cause=w.cause,
            due=w.due,
            started=active.started,
            ended=None,
            outcome=None,
            exit_code=None,
            duration_s=None,
            stdout=stdout,
            stderr=stderr,
        )

    def _enqueue(
        self,
        task_id: str,
        cause: Cause,
        due: datetime | None,
        later: LaterRun | None = None,
        lender: int | None = None,
    ) -> Waiting:
        raise NotImplementedError  # Scheduler's

    def _active_run(self, run_id: int | None) -> Active | None:
        raise NotImplementedError  # Scheduler's

    def submit(
        self, task_id: str, cause: Cause = Cause.ON_DEMAND, *, caller: int | None = None
    ) -> Submission:
        """Ask for a run now. Joins the run already under way or waiting, if there is one.

        `caller`: the pid that asked. When it is one of a running run's processes (a task's
        script runs `moltsched run b`), that run lends the new run its slot: it starts at once
        even when every slot is taken, and the asking run is not cut for it.
        WaitsForItselfError if a run asks for its own task, or for a run that asked for it.
        """
        spec = self.spec(task_id)
        if self.phase in (Phase.CLOSING, Phase.STOPPED):
            raise SchedulerError("the scheduler is shutting down")
        asker = self._active_run(self.launcher.run_of(caller)) if caller is not None else None
        waiter = asker
        for _ in range(len(self._running)):  # the asker, the run that asked for it, ...
            if waiter is None:
                break
            if waiter.spec.id == task_id:
                assert asker is not None
                raise WaitsForItselfError(asker.spec.id, task_id)
            waiter = self._active_run(waiter.waiting.lender)
        lender = asker.run_id if asker is not None else None
        active = self._running.get(task_id)
        if active is not None:
            return Submission(Admission.ALREADY_RUNNING, active.result)
        waiting = self._queue.get(task_id)
        if waiting is not None:
            if cause is Cause.ON_DEMAND:
                # An on-demand request does not wait behind background runs.
                self._queue.promote(task_id, spec.priority, lender)
                self._wake.set()
            return Submission(Admission.ALREADY_QUEUED, waiting.result)
        w = self._enqueue(task_id, cause, None, lender=lender)
        taken = sum(a.takes_slot for a in self._running.values())
        free = taken < self.settings.max_concurrent or (asker is not None and asker.lent_to is None)
        return Submission(Admission.STARTED if free else Admission.QUEUED, w.result)

    async def reconfigure(
        self, specs: Sequence[TaskSpec], settings: EngineSettings
    ) -> tuple[list[str], list[str], list[str], list[str]]:
        """Apply a reloaded configuration; returns the ids added, removed, changed, and
        removed with a run that is now stopped.

        Added tasks are scheduled as at start-up; removed ones stop being scheduled (their
        history stays), and a run of one is stopped as `stop` does: no command could reach
        it any more. A changed schedule applies from now; a run of a changed task goes on
        with the spec it started with.
        """
        now = self.clock.now()
        old, new = self._specs, {s.id: s for s in specs}
        added = [i for i in new if i not in old]
        removed = [i for i in old if i not in new]
        changed = [i for i in new if i in old and new[i] != old[i]]
        await self.store.sync_tasks(specs)
        self._specs, self.settings = new, settings
        self.store.retention = settings.retention
        stopped = []
        for task_id in removed:
            active = self._running.get(task_id)
            if active is not None and active.stopped_by is None:
                active.stopped_by = "a reload that removed the task"
                active.run.interrupt(f"stopped by {active.stopped_by}")
                stopped.append(task_id)
            self._timetable.forget(task_id)
            self._timetable.release(task_id)  # a removed task's time is of no use
            self._paused.discard(task_id)
            await self._later.forget_task(task_id)
            waiting = self._queue.drop(task_id)
            if waiting is not None:
                if waiting.later is not None:
                    await self.store.drop_later([waiting.later.id])
                fail(waiting.result, SchedulerError(f"{task_id} was removed by a reload"))
        states = {s.id: s for s in await self.store.states()}
        for task_id in added + changed:
            spec, state, before = new[task_id], states.get(task_id), old.get(task_id)
            if before and (before.trigger, before.enabled) == (spec.trigger, spec.enabled):
                continue  # same schedule: its heap entry stands
            if state is not None and state.paused:
                self._timetable.forget(task_id)
                self._paused.add(task_id)
            elif spec.enabled:
                stored = state.next_run if state else None
                self._timetable.set(task_id, due_after_reload(before, spec, stored, now))
            else:
                self._timetable.forget(task_id, save=True)
        self._wake.set()
        return added, removed, changed, stopped

    def counts(self) -> tuple[int, int]:
        """Runs under way, and runs waiting for a slot."""
        return len(self._running), len(self._queue)

    def is_paused(self, task_id: str) -> bool:
        return task_id in self._paused

    async def pause(self, task_id: str, actor: str | None) -> tuple[TaskState, RunResult | None]:
        """No scheduled runs until `resume`; a running run is interrupted (checkpoint kept).

        Returns the task's state and, if a run was cut short, how it ended.
        """
        spec = self.spec(task_id)
        if task_id in self._paused:
            return await self._state(task_id), None
        self._paused.add(task_id)
        self._timetable.forget(task_id)
        self._timetable.saved(self._timetable.release(task_id))  # the waiting slot is let go
        waiting = self._queue.drop(task_id)
        if waiting is not None:
            if waiting.later is not None:
                self._later.hold(waiting.later)  # it goes when the task is resumed
            fail(waiting.result, SchedulerError(f"{task_id} was paused before it started"))
        state = await self.store.set_paused(task_id, True, actor)
        active = self._running.get(task_id)
        cut: RunResult | None = None
        if active is not None:
            active.run.interrupt("paused")
            done, _ = await asyncio.wait({active.result}, timeout=spec.grace + 5)
            if done and not active.result.exception():
                cut = active.result.result()
            state = await self.store.state(task_id) or state
        return state, cut

    async def resume(self, task_id: str, actor: str | None) -> tuple[TaskState, bool, bool]:
        """Schedule a paused task again. An interrupted run goes on at once, from its
        checkpoint, and so do one-shots and retries that came due while it was paused
        (held); slots that passed while paused are not caught up (the pause was meant).

        Returns the state, whether the interrupted run goes on, and whether held runs go.
        """
        spec = self.spec(task_id)
        if task_id not in self._paused:
            return await self._state(task_id), False, False
        self._paused.discard(task_id)
        released = self._later.release(task_id)
        if released:
            self._wake.set()
        state = await self.store.set_paused(task_id, False, actor)
        started = state.status is Status.INTERRUPTED and self.phase is Phase.RUNNING
        if started:
            self._enqueue(task_id, Cause.RESUME, None)
        if spec.enabled:
            due = due_on_resume(spec, state.next_run, self.clock.now())
            looping = self.phase in (Phase.RUNNING, Phase.CLOSING)
            self._timetable.set(task_id, due, save=looping)
            if looping:
                self._wake.set()
            else:
                await self.store.set_next_runs([(task_id, due)])
            state = state._replace(next_run=due)
        return state, started, released

    async def _state(self, task_id: str) -> TaskState:
        state = await self.store.state(task_id)
        assert state is not None  # every configured task has a row
        return state

    async def run_later(
        self, task_id: str, due: datetime, actor: str | None
    ) -> tuple[LaterRun, bool]:
        """A one-shot run at `due`, kept in the store until it starts, and True; or the one
        of the task waiting already near that time (`later.SAME_ONE_SHOT_S`) and False.
        SchedulerError if the time is past or too far, or the task has MAX_ONE_SHOTS waiting
        already."""
        spec = self.spec(task_id)
        now = self.clock.now()
        ahead = (due - now).total_seconds()
        if ahead <= 0:
            raise SchedulerError(f"{due.isoformat(timespec='seconds')} is in the past")
        if ahead > LATER_MAX_S:
            raise SchedulerError("a one-shot run can be at most a year ahead")
        note = f"one-shot run at {due.isoformat(timespec='seconds')} by {actor or 'unknown'}"
        kept = await self._later.add_one_shot(spec.id, due, now, actor, note)
        if kept is None:
            raise SchedulerError(
                f"{spec.id} has {MAX_ONE_SHOTS} one-shot runs pending already, the most it "
                f"may have; cancel {spec.id} removes them"
            )
        if kept[1]:
            self._wake.set()
        return kept

    async def cancel(self, task_id: str, actor: str | None) -> list[LaterRun]:
        """Remove the task's one-shot runs and retries that have not started; what went.
        A retry that had taken a scheduled slot gives it back."""
        spec = self.spec(task_id)
        gone = await self._later.cancel(spec.id, actor, self.clock.now())
        waiting = self._queue.get(spec.id)
        if waiting is not None and waiting.later is not None:
            # Come due and waiting for a slot: its row was among those removed just now.
            self._queue.drop(spec.id)
            fail(waiting.result, SchedulerError(f"{spec.id}'s pending run was cancelled"))
        for run in gone:
            slot = run.took_slot
            if slot is not None and spec.enabled and spec.id not in self._paused:
                looping = self.phase in (Phase.RUNNING, Phase.CLOSING)
                self._timetable.set(spec.id, slot, save=looping)
                if not looping:  # no loop to save it (the CLI with no daemon)
                    await self.store.set_next_runs([(spec.id, slot)])
        self._wake.set()
        return gone

    async def stop(self, task_id: str, actor: str | None) -> tuple[Stopped, RunResult | None]:
        """End the task's run now (SIGTERM to all it started, its grace, SIGKILL), recorded
        `stopped`: it is not resumed or retried, its checkpoint is kept, and its schedule
        stands. A run waiting for a slot is taken out instead. Returns what was found and,
        for a run, how it ended."""
        spec = self.spec(task_id)
        who = actor or "unknown"
        active = self._running.get(spec.id)
        if active is None:
            waiting = self._queue.drop(spec.id)
            if waiting is None:
                return Stopped.NOTHING, None
            self._timetable.saved(self._timetable.release(spec.id))  # its slot is let go
            self._wake.set()  # to save it
            if waiting.later is not None:
                await self.store.drop_later([waiting.later.id])
            fail(
                waiting.result, SchedulerError(f"{spec.id} was stopped by {who} before it started")
            )
            return Stopped.WAITING, None
        active.stopped_by = who
        active.run.interrupt(f"stopped by {who}")
        done, _ = await asyncio.wait({active.result}, timeout=spec.grace + 5)
        ended = active.result.result() if done and not active.result.exception() else None
        return Stopped.RUN, ended
