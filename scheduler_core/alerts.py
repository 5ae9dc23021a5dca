"""The alert policy (pure) and the alert texts.

A failure or timeout alerts once a task has failed `after_failures` runs in a row; while it
keeps failing, a reminder goes out at most every `repeat_every`; when an alerted task succeeds
again, a recovery message says so (if `recovery`). A task that never alerted sends no recovery.
Interrupted runs are neither failures nor successes. The outbox that carries the texts to the
recipients lives in the store; delivery is the front end's (`bot.outbox`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_core.model import Outcome


class AlertKind(StrEnum):
    FAILURE = "failure"
    REMINDER = "reminder"
    RECOVERY = "recovery"


@dataclass(frozen=True)
class AlertPolicy:
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
    head = f"⚠️ {who} failed: {message}"
    if kind is AlertKind.REMINDER:
        head = f"⚠️ {who} is still failing ({failures} runs in a row): {message}"
    lines = [ln.rstrip()[:160] for ln in output.splitlines() if ln.strip()][-5:]
    return "\n".join([head, *lines])
