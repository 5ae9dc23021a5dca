"""The alert policy (pure) and the alert texts.

A failure or timeout alerts once a task has failed `after_failures` runs in a row; while it
keeps failing, a reminder goes out at most every `repeat_every`; when an alerted task succeeds
again, a recovery message says so (if `recovery`). A task that never alerted sends no recovery.
Interrupted runs are neither failures nor successes. The outbox that carries the texts to the
recipients lives in the store; delivery is the front end's (`bot.outbox`).

A task with `max_age` that has not succeeded for that long, counted from its last success or
from when it was added, whatever the reason, is *stale*: that is said once per stale period
(`stale_at` says when), and its next success is said too.

A task that keeps changing between failing and working (`FLAP_CHANGES` changes in its last
`FLAP_RUNS` runs) is *flapping*: that is said once, and nothing more until it settles (its
last `SETTLE_RUNS` runs the same), which is said once too, as working or as failing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_core.model import Outcome
from scheduler_core.record import Record


class AlertKind(StrEnum):
    FAILURE = "failure"
    REMINDER = "reminder"
    RECOVERY = "recovery"
    FLAPPING = "flapping"
    SETTLED = "settled"
    STALE = "stale"  # max_age: it has not succeeded for that long
    FRESH = "fresh"  # and now it has


FLAP_RUNS = 10
FLAP_CHANGES = 4
SETTLE_RUNS = 5


class AlertPolicy(Record):
    """The `alerts:` section."""

    after_failures: int = 1
    repeat_every: float = 6 * 3600.0
    recovery: bool = True


def decide(
    policy: AlertPolicy,
    outcome: Outcome,
    consecutive_failures: int,
    alerted_at: datetime | None,
    now: datetime,
) -> AlertKind | None:
    """What to send after a run, given the task's failure streak and its last alert."""
    if outcome in (Outcome.FAILED, Outcome.TIMEOUT):
        if consecutive_failures < policy.after_failures:
            return None
        if alerted_at is None:
            return AlertKind.FAILURE
        if now - alerted_at >= timedelta(seconds=policy.repeat_every):
            return AlertKind.REMINDER
        return None
    if outcome is Outcome.SUCCESS and alerted_at is not None:
        return AlertKind.RECOVERY if policy.recovery else None
    return None


def flapping(worked: Sequence[bool]) -> bool:
    """Whether runs that ended so (True: worked, oldest first) make a flapping task."""
    recent = worked[-FLAP_RUNS:]
    changes = sum(a != b for a, b in itertools.pairwise(recent))
    settled = len(worked) >= SETTLE_RUNS and len(set(worked[-SETTLE_RUNS:])) == 1
    return changes >= FLAP_CHANGES and not settled


def decide_flapping(worked: Sequence[bool]) -> AlertKind | None:
    """FLAPPING when the newest run (last in `worked`) makes the task flap, SETTLED when it
    ends the flapping, None when neither changes (then the usual policy applies unless the
    task was flapping before and still is: see `quiet`)."""
    before, now = flapping(worked[:-1]), flapping(worked)
    if now and not before:
        return AlertKind.FLAPPING
    if before and not now:
        return AlertKind.SETTLED
    return None


def quiet(worked: Sequence[bool]) -> bool:
    """Flapping still: no alert for this run."""
    return flapping(worked[:-1]) and flapping(worked)


def alert_text(
    kind: AlertKind,
    task_name: str,
    task_id: str,
    *,
    message: str,
    failures: int,
    output: str,
) -> str:
    """A phone-sized alert: what happened, and the last lines of the run's output."""
    who = task_id if task_name == task_id else f"{task_name} ({task_id})"
    if kind is AlertKind.RECOVERY:
        return f"✅ {who} is working again: {message}"
    if kind is AlertKind.FLAPPING:
        return (
            f"🔁 {who} is flapping between failing and working; "
            "no more alerts for it until it settles. Last: " + message
        )
    if kind is AlertKind.SETTLED:
        if failures == 0:
            return f"✅ {who} has settled: working, {SETTLE_RUNS} runs in a row."
        return f"⚠️ {who} has settled into failing ({failures} runs in a row): {message}"
    head = f"⚠️ {who} failed: {message}"
    if kind is AlertKind.REMINDER:
        head = f"⚠️ {who} is still failing ({failures} runs in a row): {message}"
    # The output's last lines, but not one the message already quotes (it ends with the
    # last line of stderr): an alert says each thing once.
    lines = [ln.rstrip()[:160] for ln in output.splitlines() if ln.strip()][-5:]
    lines = [ln for ln in lines if ln.strip() not in message]
    return "\n".join([head, *lines])


def stale_at(
    max_age: float, last_success: datetime | None, added: datetime | None, now: datetime
) -> datetime:
    """When a task with `max_age` becomes stale: that long after its last success, or after
    it was added if it never succeeded."""
    return (last_success or added or now) + timedelta(seconds=max_age)


def stale_alert_due(
    max_age: float,
    last_success: datetime | None,
    added: datetime | None,
    alerted: datetime | None,
    now: datetime,
) -> bool:
    """Whether the task is stale now and its stale period has not been alerted yet."""
    since = last_success or added or now
    if alerted is not None and alerted >= since:
        return False  # this period was said already
    return stale_at(max_age, last_success, added, now) <= now
