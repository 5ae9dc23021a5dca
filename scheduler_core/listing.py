"""Every task's state as `status` shows it: the store's, with runs waiting for a slot shown
as `queued` (only the scheduler's queue knows them) and their tasks' next slot after the
waiting one (the store keeps the waiting one until it starts: see `timetable`), and at most
`LISTINGS` long listings produced at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime

from scheduler_core.model import Status, TaskSpec, TaskState, shown_status
from scheduler_core.queue import RunQueue
from scheduler_core.store import Store
from scheduler_core.timetable import Timetable

LISTINGS = 2  # long answers (`status --json`) produced at once; see `iter_states`


class Listing:
    def __init__(
        self,
        store: Store,
        queue: RunQueue,
        timetable: Timetable,
        *,
        unowned: Callable[[str], datetime | None] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.timetable = timetable
        # No process holds the state (no daemon, no foreground run): a run the store shows
        # as running was left by one that was killed, and is `interrupted`, as the next start
        # records it (see `scheduler_core.recovery`). A task no daemon has scheduled yet is
        # shown due when its schedule says (`unowned` tells it for a task id), not saved:
        # the daemon's start decides it.
        self.unowned = unowned
        self._listings = asyncio.Semaphore(LISTINGS)

    async def states(self) -> list[TaskState]:
        """Every task's state, with runs waiting for a slot shown as `queued`."""
        return self._shown(await self.store.states())

    async def states_of(self, ids: Sequence[str]) -> list[TaskState]:
        """`states()` of just these tasks: what a chat answer shows of thousands."""
        return self._shown(await self.store.states_of(ids))

    def blank(self, spec: TaskSpec) -> TaskState:
        """The state of a task the store has no row for yet (added since a daemon last ran)."""
        return self._shown([TaskState.blank(spec)])[0]

    async def unsettled(self) -> set[str]:
        """The tasks whose status is not `idle`: what a screen cut short shows first."""
        return {*await self.store.unsettled(), *self.queue.task_ids()}

    async def iter_states(self, batch: int = 500) -> AsyncGenerator[list[TaskState], None]:
        """Like `states()`, a batch at a time (for answers about thousands of tasks).

        At most `LISTINGS` of these go at once; more wait their turn. Each holds a batch and
        its text in memory while its reader catches up: a hundred `status --json` calls at
        once on 10,000 tasks would hold 430 MB, and the daemon's one core does not answer
        them sooner by interleaving them (it only makes every one of them as slow as the last).
        """
        async with self._listings:
            async for states in self.store.iter_states(batch):
                yield self._shown(states)

    def _shown(self, states: list[TaskState]) -> list[TaskState]:
        if self.unowned is not None:
            states = [_unowned(s, self.unowned) for s in states]
        if not self.queue:
            return states
        return [self._queued(s) if s.id in self.queue else s for s in states]

    def _queued(self, state: TaskState) -> TaskState:
        status = shown_status(state.status, state.paused, True)
        return state._replace(status=status, next_run=self.timetable.due_of(state.id))


def _unowned(state: TaskState, first_due: Callable[[str], datetime | None]) -> TaskState:
    if state.status is Status.RUNNING:
        return state._replace(status=shown_status(Status.INTERRUPTED, state.paused, False))
    if state.next_run is None and not state.paused:
        return state._replace(next_run=first_due(state.id))
    return state
