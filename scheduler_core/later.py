"""Runs kept for later: one-shots (`run TASK --in 20m`) and retries.

The store holds them (`later` table), so a restart loses none; one that came due while the
daemon was down runs once when it is back. Here they wait by due time. One that comes due
while its task runs, waits or is paused is held until the task is free: a task never
overlaps itself, and a pause holds its later runs. A run kept for later leaves the store when
it starts (in the transaction that records its start), or when it is cancelled.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime

from scheduler_core.model import Cause, LaterRun, TaskSpec
from scheduler_core.slots import retry_due
from scheduler_core.store import Store

# One-shot runs waiting per task, at most: enough for any reminder routine, and a bound on
# what a confused agent can pile up.
MAX_ONE_SHOTS = 10
# A one-shot asked for less than this from one of the same task waiting already is that one:
# a request said twice (an agent retrying a call that timed out, a message sent again) adds
# no second run, which would only go right after the first (a task never overlaps itself).
SAME_ONE_SHOT_S = 60.0


class LaterRuns:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._heap: list[tuple[datetime, int, LaterRun]] = []
        self._held: dict[str, list[LaterRun]] = {}
        self._gone: set[int] = set()  # cancelled while in the heap (removed when popped)

    async def load(self) -> list[LaterRun]:
        """Take in what the store keeps (at start-up); what it kept."""
        self._heap.clear()
        self._held.clear()
        self._gone.clear()
        runs = await self.store.later_runs()
        for run in runs:
            self._push(run)
        return runs

    def _push(self, run: LaterRun) -> None:
        heapq.heappush(self._heap, (run.due, run.id, run))

    def top(self) -> datetime | None:
        """The earliest due time (perhaps of a cancelled run: waking for one costs a look)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> list[LaterRun]:
        """Take out every run due by `now`, earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, run_id, run = heapq.heappop(self._heap)
            if run_id in self._gone:
                self._gone.discard(run_id)
            else:
                due.append(run)
        return due

    def hold(self, run: LaterRun) -> None:
        """Its task is busy or paused: it goes once the task is free (`release`)."""
        self._held.setdefault(run.task_id, []).append(run)

    def release(self, task_id: str) -> bool:
        """The task is free again: its held runs are due at once. Whether there were any."""
        held = self._held.pop(task_id, [])
        for run in held:
            self._push(run)
        return bool(held)

    def of(self, task_id: str) -> list[LaterRun]:
        """The task's runs kept here, soonest first."""
        runs = [r for _, i, r in self._heap if r.task_id == task_id and i not in self._gone]
        return sorted(runs + self._held.get(task_id, []), key=lambda r: (r.due, r.id))

    async def add_one_shot(
        self, task_id: str, due: datetime, now: datetime, actor: str | None, note: str
    ) -> tuple[LaterRun, bool] | None:
        """Keep a one-shot run for `due`: it and True; the one waiting already less than
        SAME_ONE_SHOT_S from `due` and False; None if the task has MAX_ONE_SHOTS waiting."""
        kept = await self.store.add_one_shot(
            task_id, due, now, actor=actor, note=note, limit=MAX_ONE_SHOTS, near_s=SAME_ONE_SHOT_S
        )
        if kept is not None and kept[1]:
            self._push(kept[0])
        return kept

    def plan_retry(
        self, spec: TaskSpec, attempt: int, now: datetime, next_slot: datetime | None
    ) -> tuple[LaterRun, str]:
        """Retry `attempt + 1` of a run of `spec` that failed at `now` (see
        `slots.retry_due`), not kept yet (its id is 0), and the note that logs it: it takes
        the next slot if it would not come before it. The store keeps it with the failed
        run's end (`Store.finish_and_retry`); then it is `kept` here."""
        due, takes_slot = retry_due(spec, attempt, now, next_slot)
        note = f"retry {attempt + 1} of {spec.retries} at {due.isoformat(timespec='seconds')}"
        if takes_slot:
            note += ", in place of the scheduled run"
        took = next_slot if takes_slot else None
        return LaterRun(0, spec.id, Cause.RETRY, due, attempt + 1, None, took), note

    def kept(self, run: LaterRun) -> None:
        """A run the store keeps now: it waits here for its time."""
        self._push(run)

    async def drop(self, runs: Sequence[LaterRun]) -> None:
        """These runs leave the store without running (their task is gone). One that starts
        leaves it with its start (`Store.start_runs`)."""
        await self.store.drop_later([r.id for r in runs])

    async def cancel(self, task_id: str, actor: str | None, now: datetime) -> list[LaterRun]:
        """Remove every run kept for the task (logged with who did); what was removed."""
        gone = await self.store.cancel_later(task_id, actor, now)
        self._forget(task_id, gone)
        return gone

    async def forget_task(self, task_id: str) -> None:
        """The task was removed from the configuration: its later runs go with it."""
        runs = self.of(task_id)
        await self.store.drop_later([r.id for r in runs])
        self._forget(task_id, runs)

    def _forget(self, task_id: str, runs: Sequence[LaterRun]) -> None:
        self._held.pop(task_id, None)
        queued = {i for _, i, _ in self._heap}
        self._gone.update(r.id for r in runs if r.id in queued)
