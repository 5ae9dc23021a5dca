"""Failure alerts: decide after each run (`Alerter`), deliver from the outbox (`Outbox`).

An alert is written to the outbox in SQLite, one row per recipient, before anything is sent.
`Outbox.run()` delivers pending rows oldest first through a `Sender` (the Signal front end);
a failed send is retried with exponential backoff, and later rows wait so the order holds. A
row is marked sent as soon as the send returns, so each alert goes out once, also across a
restart. (A crash between a send and its mark would send that one again: the one window
that SQLite cannot close for a remote service without idempotency keys.)

Sends to a recipient wait for its limiter (bot.limiter). Alerts that pile up meanwhile, or
that are due together, go as one digest message naming every task in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from bot.limiter import Limiter
from bot.timed import TimedLoop
from scheduler_core.alerts import (
    FLAP_RUNS,
    AlertKind,
    AlertPolicy,
    alert_text,
    decide,
    decide_flapping,
    quiet,
)
from scheduler_core.clock import Clock
from scheduler_core.model import OutboxItem, Outcome, RunResult, TaskSpec, TaskState
from scheduler_core.store import Store

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 300.0
DIGEST_MAX = 500  # alerts folded into one message at most
DIGEST_LINES = 10  # beyond this many, a digest names the tasks without their messages
DIGEST_KINDS = {
    "failure": "⚠️ failed",
    "reminder": "⚠️ still failing",
    "recovery": "✅ working again",
    "flapping": "🔁 flapping",
    "settled": "settled",
    "stale": "⏰ not succeeding",
    "fresh": "✅ succeeding again",
}


class Sender(Protocol):
    """Delivers one message to one recipient; raises if it could not."""

    async def send(self, recipient: str, text: str) -> None: ...


class Outbox(TimedLoop):
    """Delivers the outbox's alerts, in order, retrying with backoff."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        clock: Clock,
        limiter: Limiter | None = None,
        recipients: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.sender = sender
        # Whom alerts go to now (a reload changes it): what waits for anyone else is given up.
        self.recipients = recipients
        self._retry_now = False  # see `connected`
        self.limiter = limiter

    async def step(self) -> datetime | None:
        return await self.deliver_due()

    def connected(self) -> None:
        """Signal is connected (again): every alert waiting for its retry goes now, not when
        its back-off (up to BACKOFF_MAX_S, after a long outage) ends."""
        self._retry_now = True
        self.wake()

    async def deliver_due(self) -> datetime | None:
        """Send what is due, oldest first, one message per recipient (a digest if several are
        due); the time to look again, or None if nothing waits. Each recipient's alerts are
        read apart (`pending_alerts`): one whose sends keep failing holds up no one else."""
        pending = await self.store.pending_alerts(DIGEST_MAX)
        retry_now, self._retry_now = self._retry_now, False
        if not pending:
            return None
        now = self.clock.now()
        if retry_now:
            pending = [i._replace(next_attempt=min(i.next_attempt, now)) for i in pending]
        by_recipient: dict[str, list[OutboxItem]] = {}
        for item in pending:
            by_recipient.setdefault(item.recipient, []).append(item)
        later: list[datetime] = []
        if self.recipients is not None:
            current = set(self.recipients())
            if gone := [i for r, items in by_recipient.items() if r not in current for i in items]:
                await self.store.alerts_dropped(gone, now, "no longer in signal.alert_to")
                log.warning(
                    "%d alert(s) given up: %s no longer in signal.alert_to",
                    len(gone),
                    ", ".join(sorted({i.recipient for i in gone})),
                )
                by_recipient = {r: v for r, v in by_recipient.items() if r in current}
                later.append(now)  # more of theirs may wait behind these
        for recipient, items in by_recipient.items():
            if items[0].next_attempt > now:
                later.append(items[0].next_attempt)  # keep the order: nothing after it first
                continue
            due = [i for i in items if i.next_attempt <= now]
            wait = self.limiter.ready_in(recipient) if self.limiter is not None else 0.0
            if wait > 0:
                later.append(now + timedelta(seconds=wait))  # more may pile up: one digest
                continue
            text = due[0].text if len(due) == 1 else digest(due)
            try:
                await self.sender.send(recipient, text)
            except Exception as exc:
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** due[0].attempts)
                retry_at = now + timedelta(seconds=delay)
                log.warning(
                    "alert to %s not delivered (attempt %d): %s; retrying in %.0fs",
                    recipient,
                    due[0].attempts + 1,
                    exc,
                    delay,
                )
                await self.store.alerts_failed(due, str(exc) or type(exc).__name__, retry_at)
                later.append(retry_at)
                continue
            await self.store.alerts_sent(due, self.clock.now())
            if len(due) < len(items) or len(items) == DIGEST_MAX:  # more may wait behind
                later.append(now)
        return min(later) if later else None


def digest(items: Sequence[OutboxItem]) -> str:
    """Several alerts in one message: every task named, each with its first line."""
    lines = [f"{len(items)} alerts at once:"]
    if len(items) <= DIGEST_LINES:
        lines += [i.text.splitlines()[0][:120] for i in items]
    else:  # names only, grouped by what happened
        groups: dict[str, list[str]] = {}
        for item in items:
            groups.setdefault(DIGEST_KINDS.get(item.kind, item.kind), []).append(
                item.task_id or "?"
            )
        lines += [f"{what}: {', '.join(dict.fromkeys(ids))}" for what, ids in groups.items()]
    return "\n".join(lines)


class Alerter:
    """The scheduler's after-run hook: applies the alert policy and queues the texts."""

    def __init__(
        self,
        store: Store,
        policy: AlertPolicy,
        recipients: Sequence[str],
        outbox: Outbox | None,
        *,
        clock: Clock,
    ) -> None:
        self.store = store
        self.policy = policy
        self.recipients = tuple(recipients)
        self.clock = clock
        # Who delivers queued alerts (the Signal outbox, the fallback command), woken when one
        # is queued. None: the alerts wait until a daemon delivers them.
        self.deliverers: list[Callable[[], None]] = [outbox.wake] if outbox else []

    def wake_deliverers(self) -> None:
        """Alerts were queued: whoever delivers them looks now."""
        for wake in self.deliverers:
            wake()

    async def on_finish(self, spec: TaskSpec, result: RunResult, state: TaskState) -> None:
        if not spec.alert:
            return
        if result.retry_at is not None:
            return  # a run and its retries are one failure: the last of them decides
        now = self.clock.now()
        kind: AlertKind | None = None
        if result.outcome in (Outcome.SUCCESS, Outcome.FAILED, Outcome.TIMEOUT):
            worked = await self.store.recent_outcomes(spec.id, FLAP_RUNS + 1)
            kind = decide_flapping(worked)
            if kind is None and quiet(worked):
                return
        if kind is None:
            kind = decide(
                self.policy, result.outcome, state.consecutive_failures, state.alerted_at, now
            )
        if kind is None or not self.recipients:  # nothing to say, or no one to tell (a reload)
            if state.alerted_at is not None and result.outcome is Outcome.SUCCESS:
                # Recovered, unsaid: the next failure alerts afresh.
                await self.store.queue_alert(spec.id, "reset", [], None, now)
            return
        text = alert_text(
            kind,
            spec.name,
            spec.id,
            message=result.message,
            failures=state.consecutive_failures,
            output=result.stderr or result.stdout,
        )
        calm = kind is AlertKind.RECOVERY or (
            kind is AlertKind.SETTLED and result.outcome is Outcome.SUCCESS
        )
        alerted_at = None if calm else now
        await self.store.queue_alert(
            spec.id, str(kind), [(to, text) for to in self.recipients], alerted_at, now
        )
        self.wake_deliverers()
