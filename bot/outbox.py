"""Failure alerts: decide after each run (`Alerter`), deliver from the outbox (`Outbox`).

An alert is written to the outbox in SQLite, one row per recipient, before anything is sent.
`Outbox.run()` delivers pending rows oldest first through a `Sender` (the Signal front end);
a failed send is retried with exponential backoff, and later rows wait so the order holds. A
row is marked sent as soon as the send returns, so each alert goes out once, also across a
restart. (A crash between a send and its mark would send that one again: the one window
that SQLite cannot close for a remote service without idempotency keys.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from scheduler_core.alerts import AlertKind, AlertPolicy, alert_text, decide
from scheduler_core.clock import Clock, SystemClock
from scheduler_core.model import Outcome, TaskSpec, TaskState
from scheduler_core.scheduler import RunResult
from scheduler_core.store import Store

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 300.0


class Sender(Protocol):
    """Delivers one message to one recipient; raises if it could not."""

    async def send(self, recipient: str, text: str) -> None: ...


class Outbox:
    """Delivers the outbox's alerts, in order, retrying with backoff."""

    def __init__(self, store: Store, sender: Sender, *, clock: Clock | None = None) -> None:
        self.store = store
        self.sender = sender
        self.clock: Clock = clock or SystemClock()
        self._wake = asyncio.Event()
        self._closing = False

    def wake(self) -> None:
        """New alerts were queued (or the service may be back): look again."""
        self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `close()`."""
        while not self._closing:
            self._wake.clear()
            retry_at = await self.deliver_due()
            if self._closing:
                return
            await self.clock.sleep_until(retry_at, self._wake)

    async def deliver_due(self) -> datetime | None:
        """Send what is due, oldest first; the time of the next retry, or None if idle."""
        for item in await self.store.pending_alerts():
            now = self.clock.now()
            if item.next_attempt > now:
                return item.next_attempt  # keep the order: nothing after it goes first
            try:
                await self.sender.send(item.recipient, item.text)
            except Exception as exc:
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**item.attempts)
                retry_at = now + timedelta(seconds=delay)
                log.warning(
                    "alert to %s not delivered (attempt %d): %s; retrying in %.0fs",
                    item.recipient,
                    item.attempts + 1,
                    exc,
                    delay,
                )
                await self.store.alert_failed(item, str(exc) or type(exc).__name__, retry_at)
                return retry_at
            await self.store.alert_sent(item, self.clock.now())
        return None


class Alerter:
    """The scheduler's after-run hook: applies the alert policy and queues the texts."""

    def __init__(
        self,
        store: Store,
        policy: AlertPolicy,
        recipients: Sequence[str],
        outbox: Outbox | None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.recipients = tuple(recipients)
        self.outbox = outbox
        self.clock: Clock = clock or SystemClock()

    async def on_finish(self, spec: TaskSpec, result: RunResult, state: TaskState) -> None:
        if not spec.alert or not self.recipients:
            return
        now = self.clock.now()
        kind = decide(
            self.policy, result.outcome, state.consecutive_failures, state.alerted_at, now
        )
        if kind is None:
            if state.alerted_at is not None and result.outcome is Outcome.SUCCESS:
                # Recovered with recovery messages off: the next failure alerts afresh.
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
        alerted_at = None if kind is AlertKind.RECOVERY else now
        await self.store.queue_alert(
            spec.id, str(kind), [(to, text) for to in self.recipients], alerted_at, now
        )
        if self.outbox is not None:
            self.outbox.wake()
