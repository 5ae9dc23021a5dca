"""The engine's data: what a task is (TaskSpec), what state it is in (TaskState), what a run
left behind (RunRecord, LogEntry). Immutable; times are aware UTC datetimes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from scheduler_core.record import Record
from scheduler_core.triggers import Trigger


class Status(StrEnum):
    """What a task is doing, as `status` shows it."""

    IDLE = "idle"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ERROR = "error"
    INTERRUPTED = "interrupted"


def shown_status(stored: Status, paused: bool, queued: bool) -> Status:
    """A task's status as `status` shows it, from what is stored (idle, running, error,
    interrupted), its pause, and whether a run of it waits for a slot: the one rule."""
    if stored is Status.RUNNING:
        return stored
    if paused:
        return Status.PAUSED
    return Status.QUEUED if queued else stored


class Outcome(StrEnum):
    """How a run ended."""

    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # cut short by a pause, a preemption or a shutdown: it resumes
    STOPPED = "stopped"  # ended by `stop`: not resumed, not retried; the schedule stands


# Plain dict lookups: calling an Enum class is slow enough to show in a 10,000-task status.
STATUS_BY_VALUE: dict[str, Status] = {s.value: s for s in Status}
OUTCOME_BY_VALUE: dict[str, Outcome] = {o.value: o for o in Outcome}


class Cause(StrEnum):
    """Why a run started."""

    SCHEDULE = "schedule"
    ON_DEMAND = "on-demand"
    CATCH_UP = "catch-up"
    RESUME = "resume"
    RETRY = "retry"  # a failed or timed-out run again, after `retry_delay`
    ONE_SHOT = "one-shot"  # asked for at a time (`run TASK --in 20m`)


class CatchUp(StrEnum):
    """What to do with slots missed while the daemon was down."""

    ONCE = "once"
    SKIP = "skip"


_NO_ENV: Mapping[str, str] = {}

# What every run is given by moltsched (DESIGN.md section 5), so not a task's own `env:`: one
# of them set there would send its checkpoints elsewhere, or hide its processes from the
# daemon, which knows them by MOLTSCHED_DB and MOLTSCHED_RUN_ID (scheduler_core.procs).
RUN_VARIABLES = (
    "MOLTSCHED_TASK_ID",
    "MOLTSCHED_RUN_ID",
    "MOLTSCHED_CHECKPOINT",
    "MOLTSCHED_DB",
    "MOLTSCHED_CONFIG",
    "MOLTSCHED_PYTHON",
)


class TaskSpec(NamedTuple):
    """One configured task, validated and with its paths resolved.

    A NamedTuple, as TaskState is: a cached configuration (config.cache) holds 10,000 of
    these, and a frozen dataclass is rebuilt field by field in Python: unpickling them took
    nearly three times as long, in every `status` with no daemon. Change one with `_replace`.
    """

    id: str
    name: str
    argv: tuple[str, ...]
    trigger: Trigger
    priority: int = 5
    enabled: bool = True
    timeout: float = 300.0
    grace: float = 10.0
    catch_up: CatchUp = CatchUp.ONCE
    interruptible: bool = True
    alert: bool = True
    env: Mapping[str, str] = _NO_ENV  # one shared empty mapping: no task writes to its env
    # A `script:` task's file; its `#!` line is read as each run starts (see `shebang.script_argv`)
    # and `argv` is what runs when it has none.
    script: str | None = None
    retries: int = 0  # a failed or timed-out run is run again this many times at most
    retry_delay: float = 30.0  # before the first retry; each further one waits twice as long
    max_age: float | None = None  # alert when it has not succeeded for this long


class Retention(Record):
    """How much history the store keeps (the `retention:` section)."""

    runs_per_task: int = 1000
    log_days: float = 90.0
    # Stdout and stderr kept with runs, all tasks together; past it, the oldest runs'
    # output is cleared (the runs themselves stay, within runs_per_task).
    output_bytes: int = 64 * 1024 * 1024


class EngineSettings(Record):
    """What the engine needs to know beyond the tasks."""

    state_dir: Path
    tasks_dir: Path
    config_path: Path | None = None
    max_concurrent: int = 2
    retention: Retention = Retention()

    @property
    def db_path(self) -> Path:
        return self.state_dir / "moltsched.db"


class TaskState(NamedTuple):
    """A task's persistent state, as the store keeps it.

    A NamedTuple rather than a frozen dataclass: `status` builds 10,000 of these per call, and a
    frozen dataclass takes seven times as long to construct.
    """

    id: str
    name: str
    status: Status
    paused: bool
    last_run: datetime | None
    next_run: datetime | None
    run_count: int
    error_count: int
    consecutive_failures: int
    last_error: str | None
    last_outcome: Outcome | None
    checkpoint: str | None
    alerted_at: datetime | None = None  # when its current failure streak was last alerted

    @classmethod
    def blank(cls, spec: TaskSpec) -> TaskState:
        """A task the store has no row for yet (added since a daemon last ran)."""
        return cls(spec.id, spec.name, Status.IDLE, False, None, None, 0, 0, 0, None, None, None)


class OutboxItem(Record):
    """An alert waiting in the outbox for one recipient."""

    id: int
    task_id: str | None
    kind: str
    recipient: str
    text: str
    attempts: int
    next_attempt: datetime
    created: datetime | None = None  # when it was queued (the fallback counts from it)


class RunRecord(Record):
    """One run: ended (finished or cut short), or under way (`ended` None, its output so far)."""

    run_id: int
    task_id: str
    cause: Cause
    due: datetime | None
    started: datetime
    ended: datetime | None
    outcome: Outcome | None
    exit_code: int | None
    duration_s: float | None
    stdout: str
    stderr: str
    message: str = ""  # how it ended, in a line ("exit 3 in 0.2s: imap timeout")


class LogEntry(Record):
    """One line of the action log."""

    time: datetime
    task_id: str | None
    action: str
    message: str
    duration_s: float | None
    actor: str | None = None


class Ended(Record):
    """How a run ended, judged."""

    outcome: Outcome
    message: str  # in a line: "exit 3 in 0.2s: imap timeout"
    exit_code: int | None
    duration_s: float
    stdout: str
    stderr: str


class RunResult(Record):
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
    retry_at: datetime | None = None  # it failed, and is retried then


class LaterRun(Record):
    """A run asked for at a time, kept in the store until it starts: a one-shot run
    (`run TASK --in 20m`) or a retry. `took_slot`: the scheduled slot this retry takes
    (a retry never waits past the task's next slot: it runs in its place)."""

    id: int
    task_id: str
    cause: Cause
    due: datetime
    attempt: int = 0  # a retry's number (1 is the first retry)
    actor: str | None = None
    took_slot: datetime | None = None
