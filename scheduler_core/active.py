"""A run request's answer, and a run from its dispatch to its end (what the loop holds)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from scheduler_core.launcher import Run
from scheduler_core.model import Cause, Ended, Outcome, RunResult, TaskSpec, TaskState
from scheduler_core.queue import Waiting
from scheduler_core.record import Record


class Admission(StrEnum):
    """What happened to a run request: started, queued, or joined one already under way."""

    STARTED = "started"
    QUEUED = "queued"
    ALREADY_RUNNING = "already-running"
    ALREADY_QUEUED = "already-queued"


class Submission(Record):
    """A run request's admission and the future of its result."""

    admission: Admission
    result: asyncio.Future[RunResult]


@dataclass(eq=False)
class Active:
    waiting: Waiting
    spec: TaskSpec
    run: Run
    preempted: bool = False  # interrupted to free its slot for an on-demand run
    stopped_by: str | None = None  # ended by `stop`, by whom
    # A run that asked for another lends it its slot (see Scheduler._dispatch): the lender
    # and the borrower count as one run against max_concurrent while both go.
    on_loan_from: Active | None = field(default=None, repr=False)
    lent_to: Active | None = field(default=None, repr=False)
    # Known once the start is recorded (see _launch).
    run_id: int = 0
    checkpoint: str | None = None
    started: datetime | None = None

    @property
    def result(self) -> asyncio.Future[RunResult]:
        return self.waiting.result

    @property
    def attempt(self) -> int:
        """Which retry this run is (0: not a retry)."""
        later = self.waiting.later
        return later.attempt if later is not None and later.cause is Cause.RETRY else 0

    # What `queue.victims` weighs.
    @property
    def priority(self) -> int:
        return self.spec.priority

    @property
    def cuttable(self) -> bool:
        return (
            not self.preempted
            and self.waiting.cause is not Cause.ON_DEMAND
            and self.spec.interruptible
            and self.lent_to is None  # cutting it would free no slot, and cut who asked
        )

    @property
    def takes_slot(self) -> bool:
        """Whether it counts against max_concurrent: not while it runs in a lender's slot."""
        return self.on_loan_from is None

    def end_loans(self) -> None:
        """It ended: its lender may lend again, and its borrower keeps the slot as its own."""
        if self.on_loan_from is not None:
            self.on_loan_from.lent_to = None
            self.on_loan_from = None
        if self.lent_to is not None:
            self.lent_to.on_loan_from = None
            self.lent_to = None

    @property
    def started_at(self) -> float:
        return self.started.timestamp() if self.started else 0.0

    def stopped(self, end: Ended) -> Ended:
        """The ending, as `stopped` if `stop` cut it short."""
        if self.stopped_by is None or end.outcome is not Outcome.INTERRUPTED:
            return end
        message = f"stopped by {self.stopped_by} after {end.duration_s:.1f}s"
        return end._replace(outcome=Outcome.STOPPED, message=message)

    def result_of(self, end: Ended, retry_at: datetime | None = None) -> RunResult:
        assert self.started is not None
        w = self.waiting
        return RunResult(
            self.spec.id,
            self.run_id,
            w.cause,
            end.outcome,
            end.exit_code,
            end.duration_s,
            end.stdout,
            end.stderr,
            end.message,
            self.started,
            retry_at,
        )


FinishHook = Callable[[TaskSpec, RunResult, TaskState], Awaitable[None]]


def fail(fut: asyncio.Future[RunResult], exc: BaseException) -> None:
    """Fail a run's future. Scheduled runs have no one waiting for the result: mark the
    exception as seen (it was logged) so asyncio does not complain about it at exit."""
    if not fut.done():
        fut.set_exception(exc)
        fut.add_done_callback(lambda f: f.exception())
