"""What the store refused while writes failed (a full disk, a file made read-only), owed to it
once they work: runs that could not start, and ends of runs that could not be recorded.

A refused start is kept as each task's first refused slot (and each one-shot, retry and
resume), so that it is decided again as a slot missed while the daemon was down (its
`catch_up`), not run once per refused slot; a task that ran since owes nothing. A refused end
is recorded late, with its after-run hook (the failure alert): otherwise its row would say
`running` until the next start, which would resume it as if it had been cut short.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from scheduler_core.active import Active
from scheduler_core.later import LaterRuns
from scheduler_core.model import Cause, Ended, TaskSpec
from scheduler_core.queue import Waiting
from scheduler_core.timetable import Timetable


class Owed:
    def __init__(self) -> None:
        self.not_started = 0  # runs whose start the store refused, since the daemon began
        self._starts: dict[tuple[str, int], Waiting] = {}
        self._ends: list[tuple[Active, Ended, datetime]] = []

    def refused_start(self, w: Waiting) -> None:
        self.not_started += 1
        if w.cause is not Cause.ON_DEMAND:  # who asked on demand was told it failed
            self._starts.setdefault((w.task_id, w.later.id if w.later else 0), w)

    def started(self, task_id: str) -> None:
        """A run of the task started: its refused slot is owed no more."""
        self._starts.pop((task_id, 0), None)

    def refused_end(self, active: Active, end: Ended, when: datetime) -> None:
        self._ends.append((active, end, when))

    def give_back(
        self,
        specs: Mapping[str, TaskSpec],
        timetable: Timetable,
        later: LaterRuns,
        to_resume: list[str],
    ) -> list[tuple[Active, Ended, datetime]]:
        """Writes work again: each refused start goes back where it came from (a slot to the
        timetable, to be decided again as one missed while down; a resume to the resumes; a
        one-shot or retry to the runs kept for later). The refused ends, oldest first, to be
        recorded. Nothing is owed after."""
        for w in self._starts.values():
            if w.task_id not in specs:
                continue  # removed meanwhile
            if w.later is not None:
                later.hold(w.later)
                later.release(w.task_id)
            elif w.cause is Cause.RESUME:
                to_resume.append(w.task_id)
            elif w.due is not None and w.due < (timetable.due_of(w.task_id) or w.due):
                timetable.set(w.task_id, w.due, save=False)  # not if paused (not due at all)
        ends, self._starts, self._ends = self._ends, {}, []
        return ends
