"""The runs waiting for a slot: their order, one per task, promotion, and whom to cut.

Waiting runs start in the order on-demand, resume, then priority, then due time (then first
come). A task waits at most once: asking again joins the run already waiting, and an
on-demand request for a task waiting in the background moves it to the front (promotion).
When on-demand runs wait and no slot is free, `victims` says which background runs to
interrupt for them. A run asked for by another run (`moltsched run b` in a's script) names
that run as its `lender`: it may start in the lender's slot (see `Scheduler._dispatch`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from scheduler_core.model import Cause, LaterRun, RunResult

_RANK = {
    Cause.ON_DEMAND: 0,
    Cause.RESUME: 1,
    Cause.CATCH_UP: 2,
    Cause.SCHEDULE: 2,
    Cause.RETRY: 2,
    Cause.ONE_SHOT: 2,
}


@dataclass(order=True)
class Waiting:
    """A run waiting for a slot; `result` is what its asker awaits."""

    key: tuple[int, int, float, int]
    task_id: str = field(compare=False)
    cause: Cause = field(compare=False)
    due: datetime | None = field(compare=False)
    result: asyncio.Future[RunResult] = field(compare=False)
    live: bool = field(default=True, compare=False)  # False: dropped or promoted
    later: LaterRun | None = field(default=None, compare=False)  # a one-shot or a retry
    lender: int | None = field(default=None, compare=False)  # the run id of the run that asked


class RunQueue:
    """Waiting runs, best first, at most one per task."""

    def __init__(self) -> None:
        self._heap: list[Waiting] = []
        self._by_task: dict[str, Waiting] = {}
        self._asking: dict[str, Waiting] = {}  # the on-demand ones (a burst must not scan)
        self._borrowing: dict[str, Waiting] = {}  # the ones with a lender
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._by_task)

    def task_ids(self) -> Iterable[str]:
        return self._by_task.keys()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_task

    def get(self, task_id: str) -> Waiting | None:
        return self._by_task.get(task_id)

    def add(
        self,
        task_id: str,
        cause: Cause,
        due: datetime | None,
        priority: int,
        result: asyncio.Future[RunResult],
        later: LaterRun | None = None,
        lender: int | None = None,
    ) -> Waiting:
        key = (_RANK[cause], priority, due.timestamp() if due else 0.0, next(self._seq))
        waiting = Waiting(key, task_id, cause, due, result, later=later, lender=lender)
        heapq.heappush(self._heap, waiting)
        self._by_task[task_id] = waiting
        if cause is Cause.ON_DEMAND:
            self._asking[task_id] = waiting
        if lender is not None:
            self._borrowing[task_id] = waiting
        return waiting

    def promote(self, task_id: str, priority: int, lender: int | None = None) -> Waiting | None:
        """An on-demand request for a task waiting in the background: it goes to the front,
        with the same result (and `lender`, if a run asked). None if the task does not wait,
        or already waits on demand (then it takes `lender` if it had none)."""
        waiting = self._by_task.get(task_id)
        if waiting is None:
            return None
        if waiting.cause is Cause.ON_DEMAND:
            if waiting.lender is None and lender is not None:
                waiting.lender = lender
                self._borrowing[task_id] = waiting
            return None
        waiting.live = False
        return self.add(
            task_id, Cause.ON_DEMAND, waiting.due, priority, waiting.result, waiting.later, lender
        )

    def drop(self, task_id: str) -> Waiting | None:
        """Take a task's waiting run out (a pause, a removal, a start on a lent slot); it is
        returned."""
        waiting = self._by_task.pop(task_id, None)
        self._asking.pop(task_id, None)
        self._borrowing.pop(task_id, None)
        if waiting is not None:
            waiting.live = False
        return waiting

    def pop(self) -> Waiting | None:
        """The best waiting run, taken out; None if none waits."""
        while self._heap:
            waiting = heapq.heappop(self._heap)
            if waiting.live:
                del self._by_task[waiting.task_id]
                self._asking.pop(waiting.task_id, None)
                self._borrowing.pop(waiting.task_id, None)
                return waiting
        return None

    def on_demand(self) -> list[Waiting]:
        return list(self._asking.values())

    def borrowing(self) -> list[Waiting]:
        """The waiting runs that a running run asked for, oldest request first."""
        return list(self._borrowing.values())

    def clear(self) -> list[Waiting]:
        """Empty it; what was waiting."""
        left = list(self._by_task.values())
        self._heap.clear()
        self._by_task.clear()
        self._asking.clear()
        self._borrowing.clear()
        return left


class Cuttable(Protocol):
    """What `victims` needs to know of a running run."""

    @property
    def priority(self) -> int: ...

    @property
    def cuttable(self) -> bool:
        """An interruptible background run not cut already."""
        ...

    @property
    def started_at(self) -> float: ...


C = TypeVar("C", bound=Cuttable)


def victims(running: Iterable[C], needed: int) -> list[C]:
    """The background runs to interrupt for `needed` on-demand runs: the lowest priority
    first, and of those the one that started last (it loses the least work)."""
    ranked = sorted((r for r in running if r.cuttable), key=lambda r: (-r.priority, -r.started_at))
    return ranked[: max(needed, 0)]
