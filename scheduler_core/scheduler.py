"""The scheduler: one heap of due times, one wake event, one TaskGroup of runs.

The store holds the truth (`next_run` per task); the heap is derived from it in `prepare()`.
`run()` sleeps until the heap's top is due or the wake event is set (a command, a finished
run, a close), never on a fixed poll. Due slots become waiting runs; waiting runs start in the
order on-demand, resume, then priority, then due time, at most `max_concurrent` at once, and a
task never overlaps itself. A failing run is data: it is recorded and never disturbs the others.

Late slots (downtime, suspend, a clock jump) follow the task's `catch_up`: `once` runs one
catch-up run, `skip` waits for the next slot; either way the missed slots are logged `missed`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, KeysView, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_core.clock import Clock, SystemClock
from scheduler_core.errors import SchedulerError, TaskNotFoundError, log_failure
from scheduler_core.launcher import Launcher, ProcessLauncher, Run
from scheduler_core.model import (
    CatchUp,
    Cause,
    EngineSettings,
    Outcome,
    Status,
    TaskSpec,
    TaskState,
)
from scheduler_core.store import Store
from scheduler_core.triggers import Every, advance

log = logging.getLogger(__name__)

# A slot processed later than this (or than one period, if shorter) counts as missed.
MISFIRE_GRACE_S = 60.0
LISTINGS = 2  # long answers (`status --json`) produced at once; see `iter_states`

_RANK = {Cause.ON_DEMAND: 0, Cause.RESUME: 1, Cause.CATCH_UP: 2, Cause.SCHEDULE: 2}


@dataclass(frozen=True)
class RunResult:
    """How one run ended, for whoever asked for it."""

    task_id: str
    run_id: int | None
    cause: Cause
    outcome: Outcome
    exit_code: int | None
    duration_s: float
    stdout: str
    stderr: str
    message: str
    started: datetime


class Admission(StrEnum):
    """What happened to a run request: started, queued, or joined one already under way."""

    STARTED = "started"
    QUEUED = "queued"
    ALREADY_RUNNING = "already-running"
    ALREADY_QUEUED = "already-queued"


@dataclass(frozen=True)
class Submission:
    """A run request's admission and the future of its result."""

    admission: Admission
    result: asyncio.Future[RunResult]


@dataclass(order=True)
class _Waiting:
    key: tuple[int, int, float, int]
    task_id: str = field(compare=False)
    cause: Cause = field(compare=False)
    due: datetime | None = field(compare=False)
    result: asyncio.Future[RunResult] = field(compare=False)
    live: bool = field(default=True, compare=False)


@dataclass
class _Active:
    waiting: _Waiting
    spec: TaskSpec
    run: Run
    preempted: bool = False  # interrupted to free its slot for an on-demand run
    # Known once the start is recorded (see _launch).
    run_id: int = 0
    checkpoint: str | None = None
    started: datetime | None = None

    @property
    def result(self) -> asyncio.Future[RunResult]:
        return self.waiting.result


FinishHook = Callable[[TaskSpec, RunResult, TaskState], Awaitable[None]]


class Scheduler:
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
        self.store = store
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.on_finish = on_finish
        self.launcher: Launcher = launcher or ProcessLauncher(settings)
        self._specs: dict[str, TaskSpec] = {s.id: s for s in specs}
        self._heap: list[tuple[datetime, int, str]] = []
        self._gen: dict[str, int] = {}
        self._waiting: list[_Waiting] = []
        self._waiting_by_task: dict[str, _Waiting] = {}
        self._running: dict[str, _Active] = {}
        self._to_resume: list[str] = []
        self._next_runs: list[tuple[str, datetime | None]] = []  # to save to the store
        self._paused: set[str] = set()
        self._last_now: datetime | None = None  # to notice the clock going back
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._listings = asyncio.Semaphore(LISTINGS)
        self._closing = False
        self._loop_running = False
        self._drained = asyncio.Event()
        self._prepared = False

    # --- setup -------------------------------------------------------------------------------

    @property
    def specs(self) -> list[TaskSpec]:
        return list(self._specs.values())

    def running_specs(self) -> list[TaskSpec]:
        """The tasks with a run under way now."""
        return [active.spec for active in self._running.values()]

    @property
    def task_ids(self) -> KeysView[str]:
        return self._specs.keys()

    def spec(self, task_id: str) -> TaskSpec:
        try:
            return self._specs[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id, self._specs) from None

    async def prepare(self) -> None:
        """Sync the store with the tasks, record crashed runs, and build the heap."""
        now = self.clock.now()
        await self.store.sync_tasks(list(self._specs.values()))
        crashed = await self.store.recover_crashed(now)
        if crashed:
            log.warning("recorded %d run(s) cut short by a crash as interrupted", len(crashed))
            await self._stop_leftovers(crashed)
        updates: list[tuple[str, datetime | None]] = []
        for state in await self.store.states():
            spec = self._specs[state.id]
            if state.paused:
                self._paused.add(spec.id)  # no heap entry, no resume, until resumed
                continue
            if state.status is Status.INTERRUPTED and spec.enabled:
                self._to_resume.append(spec.id)
            due = state.next_run
            if not spec.enabled:
                if due is not None:
                    updates.append((spec.id, None))
                continue
            if due is None:  # never scheduled
                due = spec.trigger.first_due(now)
                updates.append((spec.id, due))
            self._push(spec.id, due)
        await self.store.set_next_runs(updates)
        self._prepared = True

    async def _stop_leftovers(self, crashed: list[tuple[int, str]]) -> None:
        """A daemon killed on its own (`kill -9`, the OOM killer) leaves its runs going as
        orphans. They are stopped (SIGTERM, the task's grace, SIGKILL) before anything is
        resumed; otherwise a resumed task would run twice at once, both saving checkpoints."""
        grace = max((self._specs[t].grace for _, t in crashed if t in self._specs), default=10.0)
        stopped = await self.launcher.stop_leftovers([run_id for run_id, _ in crashed], grace)
        if stopped:
            log.warning("stopped %d process(es) left running by the daemon that died", stopped)

    def _push(self, task_id: str, due: datetime) -> None:
        gen = self._gen.get(task_id, 0) + 1
        self._gen[task_id] = gen
        heapq.heappush(self._heap, (due, gen, task_id))

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, *, schedule: bool = True) -> None:
        """Run until `close()`, then interrupt what is running and return once drained.

        With `schedule=False` nothing starts by itself: only `submit`/`run_due` requests run
        (the foreground mode of the CLI when no daemon is up).
        """
        if not self._prepared:
            await self.prepare()
        self._loop_running = True
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    self._wake.clear()
                    if self._closing:
                        if not self._running:
                            break
                    else:
                        if schedule:
                            self._enqueue_resumes()
                            await self._process_due(self.clock.now())
                        self._dispatch(tg)
                        if self._next_runs:
                            # Saved after the launch is queued, so runs due now do not wait
                            # for this commit (tasks start in the order they were created).
                            tg.create_task(self._save_next_runs(self._next_runs))
                            self._next_runs = []
                    top = (
                        self._heap[0][0] if schedule and self._heap and not self._closing else None
                    )
                    await self.clock.sleep_until(top, self._wake)
        finally:
            self._loop_running = False
            self._drained.set()
            for w in self._waiting:
                _fail(w.result, SchedulerError("the scheduler stopped before the run"))
            self._waiting.clear()
            self._waiting_by_task.clear()

    def close(self) -> None:
        """Stop dispatching and interrupt running runs; `run()` returns once they are recorded."""
        self._closing = True
        for active in self._running.values():
            active.run.interrupt("the scheduler is stopping")
        self._wake.set()

    async def drained(self) -> None:
        """Returns once `run()` has ended, every run recorded."""
        await self._drained.wait()

    def _enqueue_resumes(self) -> None:
        """Interrupted runs go again first, from their checkpoints."""
        for task_id in self._to_resume:
            idle = task_id not in self._running and task_id not in self._waiting_by_task
            if task_id in self._specs and idle and task_id not in self._paused:
                self._enqueue(task_id, Cause.RESUME, None)
        self._to_resume.clear()

    def _clock_went_back(self, now: datetime) -> None:
        """The wall clock moved back: `every` tasks keep their interval from now on, instead of
        waiting for slot times that are now far away. (Cron tasks follow the wall clock.)"""
        last, self._last_now = self._last_now, now
        if last is None or now >= last - timedelta(seconds=1):
            return
        log.warning("the clock went back by %s; rescheduling interval tasks", last - now)
        for due, gen, task_id in list(self._heap):
            spec = self._specs.get(task_id)
            if spec is None or gen != self._gen.get(task_id):
                continue
            trigger = spec.trigger
            if isinstance(trigger, Every) and due > now + timedelta(seconds=trigger.seconds):
                nxt = now + timedelta(seconds=trigger.seconds)
                self._push(task_id, nxt)
                self._next_runs.append((task_id, nxt))

    async def _process_due(self, now: datetime) -> list[_Waiting]:
        """Turn every due heap entry into a waiting run (or a logged miss)."""
        self._clock_went_back(now)
        created: list[_Waiting] = []
        updates = self._next_runs
        while self._heap and self._heap[0][0] <= now:
            due, gen, task_id = heapq.heappop(self._heap)
            spec = self._specs.get(task_id)
            if spec is None or gen != self._gen.get(task_id) or not spec.enabled:
                continue  # stale (rescheduled, paused) or disabled
            nxt, skipped = advance(spec.trigger, due, now)
            period = (spec.trigger.next_after(due) - due).total_seconds()
            late = (now - due).total_seconds() > min(MISFIRE_GRACE_S, period)
            missed = skipped + (1 if late else 0)
            busy = task_id in self._running or task_id in self._waiting_by_task
            if busy:
                missed = skipped + 1
                await self._note(
                    task_id, now, f"{_slots(missed)} missed: the previous run is still going"
                )
            elif late and spec.catch_up is CatchUp.ONCE:
                created.append(self._enqueue(task_id, Cause.CATCH_UP, due))
                await self._note(
                    task_id,
                    now,
                    f"{_slots(missed)} missed since {due.isoformat(timespec='seconds')}; "
                    "running one catch-up run",
                )
            else:
                if not late:
                    created.append(self._enqueue(task_id, Cause.SCHEDULE, due))
                if missed:
                    what = "skipped (catch_up: skip)" if late else "skipped"
                    await self._note(
                        task_id,
                        now,
                        f"{_slots(missed)} missed since {due.isoformat(timespec='seconds')}; "
                        f"{what}",
                    )
            self._push(task_id, nxt)
            updates.append((task_id, nxt))
        return created

    async def _note(self, task_id: str, now: datetime, message: str) -> None:
        """Log a missed slot; a failing write is logged, never a reason to stop scheduling."""
        log.info("%s: %s", task_id, message)
        try:
            await self.store.log("missed", message, task_id=task_id, when=now)
        except Exception:
            log_failure(log, "could not log for %s: %s", task_id, message)

    async def _save_next_runs(self, updates: list[tuple[str, datetime | None]]) -> None:
        try:
            await self.store.set_next_runs(updates)
        except Exception:  # the heap still has them; the next save or a restart fixes the db
            log_failure(log, "could not save the next run times of %d task(s)", len(updates))

    def _enqueue(self, task_id: str, cause: Cause, due: datetime | None) -> _Waiting:
        spec = self._specs[task_id]
        fut: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        due_key = due.timestamp() if due else 0.0
        w = _Waiting(
            (_RANK[cause], spec.priority, due_key, next(self._seq)), task_id, cause, due, fut
        )
        heapq.heappush(self._waiting, w)
        self._waiting_by_task[task_id] = w
        self._wake.set()
        return w

    def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        batch: list[_Active] = []
        while self._waiting and len(self._running) < self.settings.max_concurrent:
            w = heapq.heappop(self._waiting)
            if not w.live:
                continue
            # Never also running: submit() joins a run under way, and a slot that comes while
            # its task runs is logged missed instead of queued.
            del self._waiting_by_task[w.task_id]
            spec = self._specs[w.task_id]
            active = self._running[w.task_id] = _Active(w, spec, self.launcher.prepare(spec))
            batch.append(active)
        if batch:
            tg.create_task(self._launch(batch, tg))
        if self._waiting and self._waiting[0].cause is Cause.ON_DEMAND:
            self._preempt()

    def _preempt(self) -> None:
        """On-demand runs do not wait behind background runs: for each one still waiting, cut
        the lowest-priority interruptible background run (it resumes from its checkpoint as
        soon as a slot frees, after the on-demand runs)."""
        asking = [w for w in self._waiting if w.live and w.cause is Cause.ON_DEMAND]
        needed = len(asking) - sum(1 for a in self._running.values() if a.preempted)
        victims = sorted(
            (
                a
                for a in self._running.values()
                if not a.preempted
                and a.waiting.cause is not Cause.ON_DEMAND
                and a.spec.interruptible
            ),
            key=lambda a: (-a.spec.priority, -(a.started.timestamp() if a.started else 0)),
        )
        for victim, w in zip(victims[: max(needed, 0)], asking, strict=False):
            victim.preempted = True
            log.info("interrupting %s for an on-demand run of %s", victim.spec.id, w.task_id)
            victim.run.interrupt(f"for an on-demand run of {w.task_id}")

    async def _launch(self, batch: list[_Active], tg: asyncio.TaskGroup) -> None:
        """Record the starts of runs dispatched together in one transaction, then start them.

        Ten tasks due at the same second then wait for one commit, not for ten in a row.
        """
        started = self.clock.now()
        try:
            records = await self.store.start_runs(
                [(a.spec.id, a.waiting.cause, a.waiting.due) for a in batch], started
            )
        except Exception as exc:  # e.g. the disk is full: fail these runs, keep scheduling
            log_failure(log, "could not record the start of %d run(s)", len(batch))
            for active in batch:
                self._running.pop(active.spec.id, None)
                _fail(active.result, exc)
            self._wake.set()
            return
        for active, (run_id, checkpoint) in zip(batch, records, strict=True):
            active.run_id, active.checkpoint, active.started = run_id, checkpoint, started
            tg.create_task(self._execute(active), name=f"run:{active.spec.id}")

    async def _execute(self, active: _Active) -> None:
        try:
            result = await self._run_one(active)
        except Exception as exc:  # a broken run must never take the loop down
            log_failure(log, "run of %s failed inside the scheduler", active.spec.id)
            _fail(active.result, exc)
        else:
            if not active.result.done():
                active.result.set_result(result)
        finally:
            self._running.pop(active.spec.id, None)
            self._wake.set()

    async def _run_one(self, active: _Active) -> RunResult:
        spec, run_id, cause, started = (
            active.spec,
            active.run_id,
            active.waiting.cause,
            active.started,
        )
        assert started is not None
        ended = await active.run.go(run_id, active.checkpoint)
        outcome, message = ended.outcome, ended.message
        level = (
            logging.INFO if outcome in (Outcome.SUCCESS, Outcome.INTERRUPTED) else logging.WARNING
        )
        log.log(level, "%s (%s run): %s, %s", spec.id, cause, outcome, message)
        state = await self.store.finish_run(
            run_id,
            spec.id,
            outcome=outcome,
            exit_code=ended.exit_code,
            ended=self.clock.now(),
            duration_s=round(ended.duration_s, 3),
            stdout=ended.stdout,
            stderr=ended.stderr,
            message=message,
        )
        result = RunResult(
            spec.id,
            run_id,
            cause,
            outcome,
            ended.exit_code,
            ended.duration_s,
            ended.stdout,
            ended.stderr,
            message,
            started,
        )
        if outcome is Outcome.INTERRUPTED and not self._closing:
            self._to_resume.append(spec.id)
        if self.on_finish is not None:
            try:
                await self.on_finish(spec, result, state)
            except Exception:
                log_failure(log, "after-run hook failed for %s", spec.id)
        return result

    # --- requests ----------------------------------------------------------------------------

    def submit(self, task_id: str, cause: Cause = Cause.ON_DEMAND) -> Submission:
        """Ask for a run now. Joins the run already under way or waiting, if there is one."""
        self.spec(task_id)
        if self._closing:
            raise SchedulerError("the scheduler is shutting down")
        active = self._running.get(task_id)
        if active is not None:
            return Submission(Admission.ALREADY_RUNNING, active.result)
        waiting = self._waiting_by_task.get(task_id)
        if waiting is not None:
            if cause is Cause.ON_DEMAND and waiting.cause is not Cause.ON_DEMAND:
                # Promote it: an on-demand request does not wait behind background runs.
                waiting.live = False
                promoted = self._enqueue(task_id, cause, waiting.due)
                promoted.result = waiting.result
            return Submission(Admission.ALREADY_QUEUED, waiting.result)
        w = self._enqueue(task_id, cause, None)
        free = len(self._running) < self.settings.max_concurrent
        return Submission(Admission.STARTED if free else Admission.QUEUED, w.result)

    async def reconfigure(
        self, specs: Sequence[TaskSpec], settings: EngineSettings
    ) -> tuple[list[str], list[str], list[str]]:
        """Apply a reloaded configuration; returns the ids added, removed and changed.

        Added tasks are scheduled as at start-up; removed ones stop being scheduled (their
        history stays); a changed schedule applies from now. Nothing running is disturbed:
        a run goes on with the spec it started with.
        """
        now = self.clock.now()
        old, new = self._specs, {s.id: s for s in specs}
        added = [i for i in new if i not in old]
        removed = [i for i in old if i not in new]
        changed = [i for i in new if i in old and new[i] != old[i]]
        await self.store.sync_tasks(specs)
        self._specs, self.settings = new, settings
        self.store.retention = settings.retention
        for task_id in removed:
            self._gen[task_id] = self._gen.get(task_id, 0) + 1
            self._paused.discard(task_id)
            waiting = self._waiting_by_task.pop(task_id, None)
            if waiting is not None:
                waiting.live = False
                _fail(waiting.result, SchedulerError(f"{task_id} was removed by a reload"))
        states = {s.id: s for s in await self.store.states()}
        for task_id in added + changed:
            spec, state = new[task_id], states.get(task_id)
            before = old.get(task_id)
            if before is not None and (before.trigger, before.enabled) == (
                spec.trigger,
                spec.enabled,
            ):
                continue  # same schedule: its heap entry stands
            self._gen[task_id] = self._gen.get(task_id, 0) + 1
            if state is not None and state.paused:
                self._paused.add(task_id)
                continue
            if not spec.enabled:
                self._next_runs.append((task_id, None))
                continue
            if before is None and state is not None and state.next_run is not None:
                due = state.next_run  # a task that comes back: as at start-up
            elif before is None:
                due = spec.trigger.first_due(now)
            else:
                due = spec.trigger.next_after(now)  # a changed schedule applies from now
            self._push(task_id, due)
            self._next_runs.append((task_id, due))
        self._wake.set()
        return added, removed, changed

    def counts(self) -> tuple[int, int]:
        """Runs under way, and runs waiting for a slot."""
        return len(self._running), len(self._waiting_by_task)

    def is_paused(self, task_id: str) -> bool:
        return task_id in self._paused

    async def pause(self, task_id: str, actor: str | None) -> tuple[TaskState, RunResult | None]:
        """No scheduled runs until `resume`; a running run is interrupted (checkpoint kept).

        Returns the task's state and, if a run was cut short, how it ended.
        """
        spec = self.spec(task_id)
        if task_id in self._paused:
            state = await self.store.state(task_id)
            assert state is not None
            return state, None
        self._paused.add(task_id)
        self._gen[task_id] = self._gen.get(task_id, 0) + 1  # drops its heap entry
        waiting = self._waiting_by_task.pop(task_id, None)
        if waiting is not None:
            waiting.live = False
            _fail(waiting.result, SchedulerError(f"{task_id} was paused before it started"))
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

    async def resume(self, task_id: str, actor: str | None) -> tuple[TaskState, bool]:
        """Schedule a paused task again. An interrupted run goes on at once, from its
        checkpoint; slots that passed while paused are not caught up (the pause was meant).

        Returns the state and whether a run started.
        """
        spec = self.spec(task_id)
        if task_id not in self._paused:
            state = await self.store.state(task_id)
            assert state is not None
            return state, False
        self._paused.discard(task_id)
        state = await self.store.set_paused(task_id, False, actor)
        now = self.clock.now()
        started = False
        if state.status is Status.INTERRUPTED and self._loop_running and not self._closing:
            self._enqueue(task_id, Cause.RESUME, None)
            started = True
        if spec.enabled:
            due = state.next_run
            if due is None:
                due = spec.trigger.first_due(now)
            elif due <= now:
                due = advance(spec.trigger, due, now)[0]
            self._push(task_id, due)
            if self._loop_running:
                self._next_runs.append((task_id, due))
                self._wake.set()
            else:
                await self.store.set_next_runs([(task_id, due)])
            state = state._replace(next_run=due)
        return state, started

    async def run_due(self) -> list[asyncio.Future[RunResult]]:
        """Start every task whose slot is due now; their results' futures."""
        created = await self._process_due(self.clock.now())
        self._wake.set()  # the loop saves the new next-run times
        return [w.result for w in created]

    async def states(self) -> list[TaskState]:
        """Every task's state, with runs waiting for a slot shown as `queued`."""
        states = await self.store.states()
        if not self._waiting_by_task:
            return states
        return [self._overlay(s) for s in states]

    async def states_of(self, ids: Sequence[str]) -> list[TaskState]:
        """`states()` of just these tasks: what a chat answer shows of thousands."""
        states = await self.store.states_of(ids)
        if not self._waiting_by_task:
            return states
        return [self._overlay(s) for s in states]

    async def iter_states(self, batch: int = 500) -> AsyncGenerator[list[TaskState], None]:
        """Like `states()`, a batch at a time (for answers about thousands of tasks).

        At most `LISTINGS` of these go at once; more wait their turn. Each holds a batch and
        its text in memory while its reader catches up: a hundred `status --json` calls at
        once on 10,000 tasks took 430 MB before, and the daemon's one core does not answer
        them sooner by interleaving them (it only made every one of them as slow as the last).
        """
        async with self._listings:
            async for states in self.store.iter_states(batch):
                if self._waiting_by_task:
                    states = [self._overlay(s) for s in states]
                yield states

    def _overlay(self, state: TaskState) -> TaskState:
        if state.id in self._waiting_by_task and state.status is not Status.RUNNING:
            return state._replace(status=Status.QUEUED)
        return state


def _fail(fut: asyncio.Future[RunResult], exc: BaseException) -> None:
    """Fail a run's future. Scheduled runs have no one waiting for the result: mark the
    exception as seen (it was logged) so asyncio does not complain about it at exit."""
    if not fut.done():
        fut.set_exception(exc)
        fut.add_done_callback(lambda f: f.exception())


def _slots(n: int) -> str:
    return "1 slot" if n == 1 else f"{n} slots"
