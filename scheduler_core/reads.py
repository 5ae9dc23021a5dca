"""The scheduler's tasks as a read sees them: status, logs and output need the configured
specs, the store, the clock and the listing, and none of the machinery that runs them.

The scheduler is a `Reads` (and more). A command that only reads, asked with no daemon up,
is answered with a `Reads` alone: that process then does not load the scheduler, its
launcher or its alert delivery (about 7 ms of the 200 that `status --json` with no daemon
takes with 10,000 tasks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from scheduler_core.clock import Clock
from scheduler_core.errors import TaskNotFoundError
from scheduler_core.listing import Listing
from scheduler_core.model import LaterRun, RunRecord, TaskSpec
from scheduler_core.queue import RunQueue
from scheduler_core.store import Store
from scheduler_core.timetable import Timetable


class Reads:
    """The configured tasks, what the store knows of them, and the time."""

    def __init__(
        self,
        store: Store,
        specs: Sequence[TaskSpec],
        clock: Clock,
        queue: RunQueue | None = None,
        timetable: Timetable | None = None,
        *,
        unowned: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self._specs: dict[str, TaskSpec] = {s.id: s for s in specs}
        # Runs waiting for a slot show as `queued`: only a scheduler's queue has any.
        queue = queue if queue is not None else RunQueue()
        # `unowned`: no process holds the state (see `Listing`).
        first_due = self._first_due if unowned else None
        self.listing = Listing(store, queue, timetable or Timetable(), unowned=first_due)

    def _first_due(self, task_id: str) -> datetime | None:
        spec = self._specs.get(task_id)
        if spec is None or not spec.enabled:
            return None
        return spec.trigger.first_due(self.clock.now())

    @property
    def specs(self) -> list[TaskSpec]:
        return list(self._specs.values())

    @property
    def by_id(self) -> Mapping[str, TaskSpec]:
        """The configured tasks by id, to look up without copying (10,000 of them). A reload
        replaces the mapping rather than changing it: one taken stays as it was."""
        return self._specs

    def spec(self, task_id: str) -> TaskSpec:
        try:
            return self._specs[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id, self._specs) from None

    async def pending(self, task_id: str) -> list[LaterRun]:
        """The task's runs kept for later (one-shots and retries), soonest first."""
        return await self.store.later_runs(self.spec(task_id).id)

    def under_way(self, task_id: str) -> RunRecord | None:
        """The task's run under way, with what it has printed so far: only a scheduler has
        runs (see `Requests.under_way`)."""
        return None
