"""Slot timing, pure: a due slot and the time now in, a decision out. No I/O, no state.

A slot processed more than a minute late (or more than one period, if that is shorter)
counts as missed, as do the slots it skipped over. Then the task's `catch_up` decides:
`once` runs one catch-up run, `skip` waits for the next slot. A slot that comes while its
task runs or waits is missed, never queued behind it. Each miss is said once, in `note`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler_core.model import CatchUp, Cause, TaskSpec
from scheduler_core.record import Record
from scheduler_core.triggers import MAX_COUNTED, Every, Trigger, advance

# A slot processed later than this (or than one period, if shorter) counts as missed.
MISFIRE_GRACE_S = 60.0


class Decision(Record):
    """What to do with one due slot."""

    start: Cause | None  # a run to queue, or None
    next_due: datetime  # the task's next slot after this one
    note: str | None  # what was missed, for the action log
    missed: int = 0  # how many slots


def decide(
    spec: TaskSpec, due: datetime, now: datetime, busy: bool, *, waiting: bool = False
) -> Decision:
    """The slot `due` of `spec`, processed at `now`; `busy`: the task runs or waits already
    (`waiting`: its run waits for a slot)."""
    nxt, skipped = advance(spec.trigger, due, now)
    period = (spec.trigger.next_after(due) - due).total_seconds()
    late = (now - due).total_seconds() > min(MISFIRE_GRACE_S, period)
    missed = skipped + (1 if late else 0)
    since = due.isoformat(timespec="seconds")
    note: str | None
    if busy:
        missed = skipped + 1
        why = "the previous run is still going"
        if waiting:
            why = "its previous run is still waiting for a slot"
        note = f"{_slots(missed)} missed: {why}"
        return Decision(None, nxt, note, missed)
    if late and spec.catch_up is CatchUp.ONCE:
        note = f"{_slots(missed)} missed since {since}; running one catch-up run"
        return Decision(Cause.CATCH_UP, nxt, note, missed)
    note = None
    if missed:
        what = "skipped (catch_up: skip)" if late else "skipped"
        note = f"{_slots(missed)} missed since {since}; {what}"
    return Decision(None if late else Cause.SCHEDULE, nxt, note, missed)


def after_clock_went_back(trigger: Trigger, due: datetime, now: datetime) -> datetime | None:
    """The wall clock moved back: an interval task keeps its interval from now, instead of
    waiting for a slot that is now far away (the new due time; None to leave it). Cron tasks
    follow the wall clock."""
    if isinstance(trigger, Every) and due > now + timedelta(seconds=trigger.seconds):
        return now + timedelta(seconds=trigger.seconds)
    return None


def due_after_reload(
    before: TaskSpec | None, spec: TaskSpec, stored: datetime | None, now: datetime
) -> datetime:
    """A task a reload added or changed: one that comes back keeps its stored slot (as at
    start-up), a new one starts as new tasks do, and a changed schedule applies from now."""
    if before is None:
        return stored if stored is not None else spec.trigger.first_due(now)
    return spec.trigger.next_after(now)


def due_on_resume(spec: TaskSpec, stored: datetime | None, now: datetime) -> datetime:
    """A task resumed: its next slot from now. Slots that passed while it was paused are not
    caught up (the pause was meant). A slot still to come is kept unless the schedule, as it
    is now, has one sooner: the stored one may be a slot of the schedule it had when it was
    paused (a reload or a restart changed it since)."""
    if stored is None:
        return spec.trigger.first_due(now)
    if stored > now:
        return min(stored, spec.trigger.next_after(now))
    return advance(spec.trigger, stored, now)[0]


def retry_due(
    spec: TaskSpec, attempt: int, now: datetime, next_slot: datetime | None
) -> tuple[datetime, bool]:
    """When retry number `attempt + 1` of a run that ended at `now` goes: `retry_delay`,
    twice as long for each retry before it, but never past the task's next slot; and whether
    it takes that slot (then the slot is not run as well)."""
    due = now + timedelta(seconds=spec.retry_delay * 2 ** min(attempt, 30))
    if next_slot is not None and due >= next_slot:
        return next_slot, True
    return due, False


def _slots(n: int) -> str:
    if n > MAX_COUNTED:  # no longer counted one by one (see `advance`)
        return f"over {MAX_COUNTED:,} slots"
    return "1 slot" if n == 1 else f"{n:,} slots"
