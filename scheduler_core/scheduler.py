"""The scheduler loop: one heap of due times, one wake event, one TaskGroup of runs.

Its parts: what a read needs (`reads`: the tasks, the store, the clock, the listing), slot
timing (`slots`, pure), the due times (`timetable`), missed slots (`misses`), the waiting queue
(`queue`), runs kept for later (`later`: one-shots and retries), crash recovery (`recovery`),
what the store refused while it could not write (`owed`), and runs through a launcher
(`launcher`). This module owns the loop; what is asked of it from outside (run now or later,
cancel, stop, pause, resume, reload, close) is `requests`, a mixin over the same state, with the
life-cycle state (`Phase`).

The store holds the truth (`next_run` per task); the heap is derived from it in `prepare()`.
`run()` sleeps until the heap's top is due or the wake event is set (a command, a finished
run, a close), never on a fixed poll. Due slots become waiting runs; waiting runs start in the
order on-demand, resume, then priority, then due time, at most `max_concurrent` at once, and a
task never overlaps itself. A run asked for by a running run (`moltsched run b` in a's script)
starts at once in the asking run's slot, lent to it. A failing run is data: it is recorded and
never disturbs the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import datetime

from scheduler_core.active import Active, FinishHook, fail
from scheduler_core.clock import Clock, SystemClock
from scheduler_core.errors import SchedulerError, StoreError, log_failure
from scheduler_core.later import LaterRuns
from scheduler_core.launcher import Launcher, ProcessLauncher
from scheduler_core.misses import Misses
from scheduler_core.model import (
    Cause,
    Ended,
    EngineSettings,
    LaterRun,
    Outcome,
    RunResult,
    TaskSpec,
)
from scheduler_core.owed import Owed
from scheduler_core.queue import RunQueue, Waiting, victims
from scheduler_core.recovery import restore
from scheduler_core.requests import Phase, Requests
from scheduler_core.slots import decide
from scheduler_core.store import Store
from scheduler_core.timetable import Timetable

log = logging.getLogger(__name__)


class Scheduler(Requests):
    """Runs configured tasks on their schedules and on demand."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        specs: Sequence[TaskSpec],
        *,
        clock: Clock | None = None,
        on_finish: FinishHook | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self._queue = RunQueue()
        self._timetable = Timetable()
        super().__init__(store, specs, clock or SystemClock(), self._queue, self._timetable)
        self.settings = settings
        self.on_finish = on_finish
        self.launcher: Launcher = launcher or ProcessLauncher(settings)
        self._misses = Misses()  # what the action log says of missed slots
        self._later = LaterRuns(store)  # one-shots and retries
        self._running: dict[str, Active] = {}
        self._to_resume: list[str] = []
        self._paused: set[str] = set()
        self._wake = asyncio.Event()
        self._scheduling = False  # run() with schedule=True: retries and later runs go
        self.phase = Phase.NEW
        self._drained = asyncio.Event()
        self._hurry = asyncio.Event()  # close(now=True): what is stopped loses its grace
        self.owed = Owed()  # what the store refused while writes failed
        self._late: asyncio.Future[None] | None = None  # recording the ends it refused
        store.health.watch(self._writes_work)

    def running_specs(self) -> list[TaskSpec]:
        """The tasks with a run under way now."""
        return [active.spec for active in self._running.values()]

    async def prepare(self) -> None:
        """Sync the store with the tasks, recover from a crash, and build the timetable."""
        changed = await self.store.sync_tasks(list(self._specs.values()))
        now = self.clock.now()
        found = await restore(
            self.store, self.launcher, self._specs, self._timetable, now, changed, self._hurry
        )
        self._paused, self._to_resume = found.paused, found.to_resume
        for run in await self._later.load():
            if run.due < now:  # missed while no daemon ran: it runs once, now
                note = f"{run.cause} run due {run.due.isoformat(timespec='seconds')} was missed"
                entry = self.store.log("missed", note + "; running it now", task_id=run.task_id)
                await self._quietly(entry, f"log a missed run of {run.task_id}")
        if self.phase is Phase.NEW:
            self.phase = Phase.PREPARED

    async def try_prepare(self) -> bool:
        """prepare(), or False if the store refused its writes: a daemon started on a full
        disk runs and answers meanwhile, and `run()` prepares once writes work."""
        try:
            await self.prepare()
        except StoreError:
            if self.store.health.error is None:
                raise  # not writes refused: the database itself cannot be used
            return False
        return True

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, *, schedule: bool = True) -> None:
        """Run until `close()`, then interrupt what is running and return once drained. With
        `schedule=False` (the CLI's foreground mode) only `submit`/`run_due` start runs."""
        while self.phase is Phase.NEW and not await self.try_prepare():
            self._wake.clear()  # until writes work (`_writes_work`), or close()
            await self.clock.sleep_until(None, self._wake)
        if self.phase is Phase.PREPARED:
            self.phase = Phase.RUNNING
        self._scheduling = schedule
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    self._wake.clear()
                    if self.phase is Phase.CLOSING:
                        if not self._running:
                            break
                    else:
                        if schedule:
                            self._enqueue_resumes()
                            await self._process_due(self.clock.now())
                        self._dispatch(tg)
                        saves = self._timetable.take_saves()
                        if saves:
                            # Saved after the launch is queued, so runs due now do not wait
                            # for this commit (tasks start in the order they were created).
                            save = self.store.set_next_runs(saves)
                            tg.create_task(self._quietly(save, "save the next run times"))
                    top = None
                    if schedule and self.phase is Phase.RUNNING:
                        tops = [t for t in (self._timetable.top(), self._later.top()) if t]
                        top = min(tops, default=None)
                    await self.clock.sleep_until(top, self._wake)
        finally:
            self.phase = Phase.STOPPED
            self._drained.set()
            for w in self._queue.clear():
                fail(w.result, SchedulerError("the scheduler stopped before the run"))

    async def drained(self) -> None:
        """Returns once `run()` has ended, every run recorded."""
        await self._drained.wait()

    def _enqueue_resumes(self) -> None:
        """Interrupted runs go again first, from their checkpoints."""
        for task_id in self._to_resume:
            idle = task_id not in self._running and task_id not in self._queue
            if task_id in self._specs and idle and task_id not in self._paused:
                self._enqueue(task_id, Cause.RESUME, None)
        self._to_resume.clear()

    async def _process_due(self, now: datetime) -> list[Waiting]:
        """Turn every due heap entry into a waiting run (or a logged miss)."""
        back = self._timetable.rewind(now, self._specs)
        if back is not None:
            log.warning("the clock went back by %s; rescheduling interval tasks", back)
        created: list[Waiting] = []
        for later in self._later.pop_due(now):
            waiting = await self._take_later(later, now)
            if waiting is not None:
                created.append(waiting)
        for due, task_id in list(self._timetable.pop_due(now)):
            spec = self._specs.get(task_id)
            if spec is None or not spec.enabled:
                continue  # removed or disabled
            queued = task_id in self._queue and task_id not in self._running
            busy = queued or task_id in self._running
            decision = decide(spec, due, now, busy, waiting=queued)
            if decision.start is not None:
                created.append(self._enqueue(task_id, decision.start, due))
                self._timetable.hold(task_id)  # the slot stays due in the store until it starts
            for note in self._misses.notes(task_id, decision, busy):
                log.info("%s: %s", task_id, note)
                entry = self.store.log("missed", note, task_id=task_id, when=now)
                await self._quietly(entry, f"log a missed slot of {task_id}")
            self._timetable.set(task_id, decision.next_due)
        return created

    async def _take_later(self, later: LaterRun, now: datetime) -> Waiting | None:
        """A one-shot or retry come due: queued, or held while its task is busy or paused."""
        task_id = later.task_id
        if task_id not in self._specs:
            await self._quietly(self._later.drop([later]), "drop a run of a removed task")
            return None
        if task_id in self._running or task_id in self._queue or task_id in self._paused:
            self._later.hold(later)
            return None
        return self._enqueue(task_id, later.cause, later.due, later)

    async def _quietly(self, write: Awaitable[object], what: str) -> None:
        """A failing write is logged, never a reason to stop scheduling (due times stay in the
        heap; the next save or a restart puts them right in the store)."""
        try:
            await write
        except Exception:
            log_failure(log, "could not %s", what, said=self.store.health.error is not None)

    def _enqueue(
        self,
        task_id: str,
        cause: Cause,
        due: datetime | None,
        later: LaterRun | None = None,
        lender: int | None = None,
    ) -> Waiting:
        result: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        priority = self._specs[task_id].priority
        waiting = self._queue.add(task_id, cause, due, priority, result, later, lender)
        self._wake.set()
        return waiting

    def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        # Never also running: submit() joins a run under way, and a slot that comes while its
        # task runs is logged missed instead of queued.
        batch: list[Active] = []
        for asked in self._queue.borrowing():
            # A run that a running run asked for goes in the asker's slot, if that is not
            # lent already: the asker waits for it, so the two are one run's worth of work.
            lender = self._active_run(asked.lender)
            if lender is not None and lender.lent_to is None:
                self._queue.drop(asked.task_id)
                batch.append(self._activate(asked, lender))
        free = self.settings.max_concurrent - sum(a.takes_slot for a in self._running.values())
        while free > 0 and (w := self._queue.pop()) is not None:
            batch.append(self._activate(w))
            free -= 1
        if batch:
            tg.create_task(self._launch(batch, tg))
        asking = self._queue.on_demand()
        if asking:
            self._preempt(asking)

    def _activate(self, w: Waiting, lender: Active | None = None) -> Active:
        spec = self._specs[w.task_id]
        active = self._running[w.task_id] = Active(w, spec, self.launcher.prepare(spec))
        if lender is not None:
            active.on_loan_from, lender.lent_to = lender, active
        return active

    def _active_run(self, run_id: int | None) -> Active | None:
        """The running run with this id, if any."""
        if run_id is None:
            return None
        return next((a for a in self._running.values() if a.run_id == run_id), None)

    def _preempt(self, asking: list[Waiting]) -> None:
        """On-demand runs do not wait behind background runs: for each one still waiting, cut
        a background run (`queue.victims`); it resumes from its checkpoint as soon as a slot
        frees, after the on-demand runs. A run that asked for a run still waiting is not cut:
        it would be cut for what it asked for, and ask again when it resumes."""
        needed = len(asking) - sum(1 for a in self._running.values() if a.preempted)
        askers = {w.lender for w in self._queue.borrowing()}
        running = [a for a in self._running.values() if a.run_id not in askers]
        for victim, w in zip(victims(running, needed), asking, strict=False):
            victim.preempted = True
            log.info("interrupting %s for an on-demand run of %s", victim.spec.id, w.task_id)
            victim.run.interrupt(f"for an on-demand run of {w.task_id}")

    async def _launch(self, batch: list[Active], tg: asyncio.TaskGroup) -> None:
        """Record the starts of runs dispatched together in one transaction, then start them.

        Ten tasks due at the same second then wait for one commit, not for ten in a row.
        """
        started = self.clock.now()
        slots = [s for a in batch for s in self._timetable.release(a.spec.id)]
        self._timetable.saved([(t, due) for t, due in slots if due is None])  # not due at all
        next_due = {t: due for t, due in slots if due is not None}
        try:
            kept = [a.waiting.later.id for a in batch if a.waiting.later is not None]
            records = await self.store.start_runs(
                [(a.spec.id, a.waiting.cause, a.waiting.due) for a in batch],
                started,
                kept,
                next_due,
            )
        except Exception as exc:  # e.g. the disk is full: fail these runs, keep scheduling
            self._timetable.saved(list(next_due.items()))
            said = self.store.health.error is not None
            log_failure(log, "could not record the start of %d run(s)", len(batch), said=said)
            for active in batch:
                self._running.pop(active.spec.id, None)
                active.end_loans()
                fail(active.result, exc)
                self.owed.refused_start(active.waiting)
            self._wake.set()
            return
        for active, (run_id, checkpoint) in zip(batch, records, strict=True):
            active.run_id, active.checkpoint, active.started = run_id, checkpoint, started
            self.owed.started(active.spec.id)
            tg.create_task(self._execute(active), name=f"run:{active.spec.id}")

    def _writes_work(self, error: StoreError | None) -> None:
        """The store takes writes again: what it refused goes now (see `owed`)."""
        if error is not None:
            return
        self._wake.set()  # and a prepare() the store refused goes again (see `run()`)
        ends = self.owed.give_back(self._specs, self._timetable, self._later, self._to_resume)
        if ends:
            self._late = asyncio.ensure_future(self._record_ends(ends))

    async def _record_ends(self, ends: list[tuple[Active, Ended, datetime]]) -> None:
        for active, end, when in ends:
            try:
                await self._finish(active, end, when)
            except Exception:
                log_failure(log, "could not record the end of %s's run", active.spec.id)

    async def _execute(self, active: Active) -> None:
        spec = active.spec
        end = Ended(Outcome.FAILED, "it never ended", None, 0.0, "", "")
        try:
            try:
                end = active.stopped(await active.run.go(active.run_id, active.checkpoint))
            except Exception as exc:  # a bug: the run still gets an outcome, and alerts
                log_failure(log, "run of %s failed inside the scheduler", spec.id)
                why = f"failed inside the scheduler: {type(exc).__name__}: {exc}"
                end = Ended(Outcome.FAILED, why[:500], None, 0.0, "", "")
            cause = active.waiting.cause
            log.log(_level(end), "%s (%s run): %s, %s", spec.id, cause, end.outcome, end.message)
            result = await self._finish(active, end, self.clock.now())
        except Exception as exc:  # a broken run must never take the loop down
            log_failure(log, "could not record the end of %s's run", spec.id)
            fail(active.result, exc)
            if isinstance(exc, StoreError) and self.store.health.error is not None:
                self.owed.refused_end(active, end, self.clock.now())
        else:
            if not active.result.done():
                active.result.set_result(result)
        finally:
            self._running.pop(spec.id, None)
            active.end_loans()
            if spec.id not in self._paused:
                self._later.release(spec.id)
            self._wake.set()

    async def _finish(self, active: Active, end: Ended, now: datetime) -> RunResult:
        """Record how a run ended, keep its retry, and tell the after-run hook."""
        spec = active.spec
        retry_at = None
        if self._retries(active, end):
            # Kept with the run's end, in one transaction (see Store.finish_and_retry). A
            # retry that takes the task's next slot moves the schedule past it.
            retry, note = self._later.plan_retry(
                spec, active.attempt, now, self._timetable.due_of(spec.id)
            )
            state, kept = await self.store.finish_and_retry(
                active.run_id, spec.id, end, now, retry, note
            )
            self._later.kept(kept)
            if kept.took_slot is not None:
                self._timetable.set(spec.id, spec.trigger.next_after(kept.took_slot))
            retry_at = kept.due
        else:
            state = await self.store.finish_run(active.run_id, spec.id, end, now)
        result = active.result_of(end, retry_at)
        if end.outcome is Outcome.INTERRUPTED and self.phase is Phase.RUNNING:
            self._to_resume.append(spec.id)
        if self.on_finish is not None:
            try:
                await self.on_finish(spec, result, state)
            except Exception:
                log_failure(log, "after-run hook failed for %s", spec.id)
        return result

    def _retries(self, active: Active, end: Ended) -> bool:
        """Whether a run goes again: it failed or timed out, it has retries left, and
        something will run them (not the CLI's foreground mode; not a paused task)."""
        if end.outcome not in (Outcome.FAILED, Outcome.TIMEOUT):
            return False
        if active.attempt >= active.spec.retries or not self._scheduling:
            return False
        return self.phase is Phase.RUNNING and active.spec.id not in self._paused

    async def run_due(self) -> list[asyncio.Future[RunResult]]:
        """Start every task whose slot is due now; their results' futures."""
        created = await self._process_due(self.clock.now())
        self._wake.set()  # the loop saves the new next-run times
        return [w.result for w in created]


def _level(end: Ended) -> int:
    quiet = end.outcome in (Outcome.SUCCESS, Outcome.INTERRUPTED, Outcome.STOPPED)
    return logging.INFO if quiet else logging.WARNING
