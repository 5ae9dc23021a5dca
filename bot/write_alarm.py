"""The database cannot be written: the owner hears it on the phone, not from the journal.

Every run needs its row before it starts, so while writes fail (`Store.health`: the disk
full, the file read-only or damaged, the lock held by another process past the busy timeout)
no run starts. This alert cannot wait in the outbox, which is in the same database: it goes
straight to each alert recipient over Signal, or through the fallback command where there is
no Signal or Signal cannot take it, and is tried again with backoff until it is delivered or
out of date. One message when writes begin to fail (at most one an hour: a disk at the edge
of full fails and works by turns), a reminder every `alerts.repeat_every` while they keep
failing, and one when a write works again after that, saying for how long and how many runs
could not start.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.fallback import Fallback
from bot.outbox import Sender
from bot.timed import TimedLoop
from scheduler_core.clock import Clock
from scheduler_core.errors import StoreError
from scheduler_core.scheduler import Scheduler
from scheduler_core.triggers import format_duration

log = logging.getLogger(__name__)

REPEAT_S = 3600.0
PROBE_S = 10.0  # while writes fail, a write that changes nothing this often tells when they work
BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 300.0
# MOLTSCHED_ALERT_KIND for the fallback command.
FAILING, WORKING = "database", "database_ok"


@dataclass
class _Message:
    kind: str
    text: str
    to: list[str]  # Signal recipients it has not reached yet
    fallback: bool  # the fallback command is still to deliver it
    reached: bool = False  # someone has it
    attempts: int = 0
    retry_at: datetime | None = None


class WriteAlarm(TimedLoop):
    def __init__(
        self,
        scheduler: Scheduler,
        recipients: Callable[[], Sequence[str]],
        clock: Clock,
        signal: Sender | None = None,
        fallback: Fallback | None = None,
        remind_every: Callable[[], float | None] = lambda: None,
    ) -> None:
        super().__init__(clock)
        self.scheduler = scheduler
        self.recipients = recipients  # the alerter's, as the last reload left them
        self.remind_every = remind_every  # `alerts.repeat_every`: while it keeps failing
        self.signal = signal
        self.fallback = fallback
        self._since: datetime | None = None  # when writes began to fail; None while they work
        self._error: StoreError | None = None
        self._not_started = 0  # the scheduler's count when writes began to fail
        self._over = ""  # how long it lasted and what it cost, for the all-clear
        self._told: datetime | None = None  # when the owner was last to be told they fail
        self._owed = False  # someone was told they fail: the all-clear is theirs
        self._message: _Message | None = None
        self._probed = clock.now()  # when a write was last tried, to see if writes work
        scheduler.store.health.watch(self._changed)
        if scheduler.store.health.error is not None:  # refused already (at the start)
            self._changed(scheduler.store.health.error)

    def _changed(self, error: StoreError | None) -> None:
        now = self.clock.now()
        if error is not None:
            self._since, self._error, self._probed = now, error, now
            self._not_started = self.scheduler.owed.not_started
            log.error("the database cannot be written, so no run can start: %s", error)
        elif self._since is not None:
            took = _took(now - self._since)
            lost = self.scheduler.owed.not_started - self._not_started
            self._over = f"after {took}; {lost} run(s) could not start meanwhile"
            self._since = None
            log.info("the database can be written again, %s", self._over)
        self.wake()

    async def step(self) -> datetime | None:
        times = [await self._probe(), await self._speak()]
        return min((t for t in times if t is not None), default=None)

    async def _probe(self) -> datetime | None:
        """While writes fail: try one now and then, for nothing may write for a long time (a
        daily task's next run), and the runs held back go as soon as one works."""
        if self._since is None:
            return None
        now, due = self.clock.now(), self._probed + timedelta(seconds=PROBE_S)
        if now < due:
            return due
        self._probed = now
        with contextlib.suppress(StoreError):
            await self.scheduler.store.probe()
        return None if self._since is None else now + timedelta(seconds=PROBE_S)

    async def _speak(self) -> datetime | None:
        """Tell the owner what is due to be told; when to look again."""
        now, message = self.clock.now(), self._message
        if message is not None and (message.kind == FAILING) != (self._since is not None):
            # Out of date before it went: whoever it reached is owed the all-clear.
            self._owed = self._owed or (message.kind == FAILING and message.reached)
            self._message = message = None
        if message is None:
            if self._since is not None and not self._owed:
                if self._told is not None and now < self._told + timedelta(seconds=REPEAT_S):
                    return self._told + timedelta(seconds=REPEAT_S)
                self._told = now
                text = f"⚠️ moltsched cannot write its database, so no run can start: {self._error}"
                message = self._compose(FAILING, text[:600])
            elif self._since is not None and (every := self.remind_every()) is not None:
                assert self._told is not None  # owed: someone was told
                if now < self._told + timedelta(seconds=every):
                    return self._told + timedelta(seconds=every)
                self._told, took = now, _took(now - self._since)
                text = f"⚠️ moltsched still cannot write its database (for {took}), so no run "
                message = self._compose(FAILING, f"{text}can start: {self._error}"[:600])
            elif self._since is None and self._owed:
                text = f"✅ moltsched can write its database again, {self._over}."
                message = self._compose(WORKING, text)
            if message is None:
                return None
            self._message = message
        if message.retry_at is not None and message.retry_at > now:
            return message.retry_at
        if await self._deliver(message):
            self._owed = message.kind == FAILING
            self._message = None
            return None
        message.attempts += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (message.attempts - 1))
        message.retry_at = now + timedelta(seconds=delay)
        return message.retry_at

    def _compose(self, kind: str, text: str) -> _Message | None:
        """The message for every alert recipient; None if there is no one to tell."""
        to = [r for r in self.recipients() if r] if self.signal is not None else []
        fallback = self.fallback is not None and not to
        return _Message(kind, text, to, fallback) if to or fallback else None

    async def _deliver(self, message: _Message) -> bool:
        """Send it to whoever it has not reached; whether it has reached everyone. Where
        Signal fails, the fallback command delivers it for all, as for any alert."""
        failed = False
        for to in list(message.to):
            assert self.signal is not None
            try:
                await self.signal.send(to, message.text)
            except Exception as exc:
                log.warning("the database alert to %s was not delivered: %s", to, exc)
                failed = True
            else:
                message.to.remove(to)
                message.reached = True
        fallback = self.fallback if message.fallback or failed else None
        if fallback is not None and await fallback.deliver(message.text, None, message.kind):
            message.to.clear()
            message.fallback, message.reached = False, True
        return not message.to and not message.fallback


def _took(span: timedelta) -> str:
    return format_duration(max(1, round(span.total_seconds())))
