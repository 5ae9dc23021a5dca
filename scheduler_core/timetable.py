"""When each task is due next: a heap of due times, and the changes not yet saved.

Setting a task's due time makes any earlier entry of it stale (a generation per task), so
rescheduling, pausing and removing never search the heap. The store holds the truth
(`next_run` per task); changes made here are handed to the loop to save (`take_saves`).

While a slot's run waits for a free one, its task is held: the store keeps that slot as the
task's next until the run starts, and the new time is saved with the start (`release`). A
daemon that stops or crashes meanwhile then finds the slot still due at its next start and
makes its run (or catches it up, as after any downtime), where it would have gone on to the
next slot as if the run had been made.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

from scheduler_core.model import TaskSpec
from scheduler_core.slots import after_clock_went_back


class Timetable:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []
        self._gen: dict[str, int] = {}  # an entry of an older generation is stale
        self._due: dict[str, datetime] = {}  # each task's live entry
        self._saves: list[tuple[str, datetime | None]] = []
        self._held: dict[str, tuple[str, datetime | None] | None] = {}  # and its unsaved time
        self._last_now: datetime | None = None  # to notice the clock going back

    def set(self, task_id: str, due: datetime, *, save: bool = True) -> None:
        """The task is next due at `due`, in place of any earlier time."""
        self.forget(task_id)
        heapq.heappush(self._heap, (due, self._gen[task_id], task_id))
        self._due[task_id] = due
        if save:
            self._save(task_id, due)

    def forget(self, task_id: str, *, save: bool = False) -> None:
        """The task is not due at all (paused, removed, disabled)."""
        self._gen[task_id] = self._gen.get(task_id, 0) + 1
        self._due.pop(task_id, None)
        if save:
            self._save(task_id, None)

    def _save(self, task_id: str, due: datetime | None) -> None:
        if task_id in self._held:
            self._held[task_id] = (task_id, due)
        else:
            self._saves.append((task_id, due))

    def hold(self, task_id: str) -> None:
        """A slot of the task has a run waiting to start: its new time is not saved yet."""
        self._held.setdefault(task_id, None)

    def release(self, task_id: str) -> list[tuple[str, datetime | None]]:
        """The held task's run starts (the time returned is saved with the start), or is taken
        out (pass it to `saved`)."""
        held = self._held.pop(task_id, None)
        return [held] if held is not None else []

    def saved(self, saves: list[tuple[str, datetime | None]]) -> None:
        """Save these with the next `take_saves` (a release whose start was not recorded)."""
        self._saves.extend(saves)

    def due_of(self, task_id: str) -> datetime | None:
        """When the task is next due, or None if it is not."""
        return self._due.get(task_id)

    def top(self) -> datetime | None:
        """The earliest due time (perhaps of a stale entry: waking for one costs a look)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        """Take out every live entry due by `now`, earliest first."""
        while self._heap and self._heap[0][0] <= now:
            due, gen, task_id = heapq.heappop(self._heap)
            if gen == self._gen.get(task_id):
                del self._due[task_id]
                yield due, task_id

    def rewind(self, now: datetime, specs: Mapping[str, TaskSpec]) -> timedelta | None:
        """If the wall clock went back since the last call, `every` tasks keep their interval
        from now on instead of waiting for slot times now far away (cron tasks follow the wall
        clock); how far it went back."""
        last, self._last_now = self._last_now, now
        if last is None or now >= last - timedelta(seconds=1):
            return None
        for due, gen, task_id in list(self._heap):
            spec = specs.get(task_id)
            if gen == self._gen.get(task_id) and spec is not None:
                nxt = after_clock_went_back(spec.trigger, due, now)
                if nxt is not None:
                    self.set(task_id, nxt)
        return last - now

    def take_saves(self) -> list[tuple[str, datetime | None]]:
        saves, self._saves = self._saves, []
        return saves
