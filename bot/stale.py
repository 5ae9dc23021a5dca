"""max_age, the dead man's switch: one alert when a task has not succeeded for that long,
counted from its last success or from when it was added, whatever the reason (failing runs,
missed slots, a daemon that was down, a pause that was forgotten); one more when it succeeds
again.

Looked at when the daemon starts, and then exactly when the next task would become stale
(a timer on the clock), never on a poll; the end of a run of such a task, or a reload, makes
it look again. The policy is `scheduler_core.alerts` (`stale_at`, `stale_alert_due`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.outbox import Alerter
from bot.timed import TimedLoop
from commands.reply import short_time
from scheduler_core.alerts import AlertKind, stale_alert_due, stale_at
from scheduler_core.model import Outcome, RunResult, TaskSpec, TaskState
from scheduler_core.scheduler import Scheduler
from scheduler_core.triggers import format_duration

log = logging.getLogger(__name__)


class StaleWatch(TimedLoop):
    def __init__(self, scheduler: Scheduler, alerter: Alerter, zone: ZoneInfo) -> None:
        super().__init__(alerter.clock)
        self.scheduler = scheduler
        self.alerter = alerter
        self.zone = zone

    async def step(self) -> datetime | None:
        """Alert every task stale now and not alerted for it; when the next one would be."""
        specs = {s.id: s for s in self.scheduler.specs if s.max_age is not None}
        if not specs:
            return None
        store, now = self.scheduler.store, self.clock.now()
        soonest: datetime | None = None
        for task_id, last_success, added, alerted in await store.staleness(list(specs)):
            spec = specs[task_id]
            assert spec.max_age is not None
            if stale_alert_due(spec.max_age, last_success, added, alerted, now):
                await self._alert(spec, last_success, added, now)
            elif alerted is None or alerted < (last_success or added or now):
                at = stale_at(spec.max_age, last_success, added, now)
                soonest = at if soonest is None else min(soonest, at)
        return soonest

    async def _alert(
        self, spec: TaskSpec, last_success: datetime | None, added: datetime | None, now: datetime
    ) -> None:
        assert spec.max_age is not None
        who = spec.id if spec.name == spec.id else f"{spec.name} ({spec.id})"
        if last_success is not None:
            since = f"last success {short_time(last_success, self.zone, now)}"
        else:
            since = f"no success since it was added {short_time(added, self.zone, now)}"
        text = f"⏰ {who} has not succeeded in {format_duration(spec.max_age)} ({since})."
        state = await self.scheduler.store.state(spec.id)
        if not spec.enabled:
            text += " It is disabled (enabled: false in the configuration)."
        elif state is not None:
            text += " " + _why(state, self.zone, now)
        log.warning("%s has not succeeded in %s", spec.id, format_duration(spec.max_age))
        await self._queue(spec, AlertKind.STALE, text, now, now)

    async def on_finish(self, spec: TaskSpec, result: RunResult, state: TaskState) -> None:
        """After each run: a stale task that succeeded says so; its clock starts again."""
        if spec.max_age is None or result.outcome is not Outcome.SUCCESS:
            return  # only a success moves the time it becomes stale
        rows = await self.scheduler.store.staleness([spec.id])
        if rows and rows[0][3] is not None:
            who = spec.id if spec.name == spec.id else f"{spec.name} ({spec.id})"
            text = f"✅ {who} has succeeded again: {result.message}"
            await self._queue(spec, AlertKind.FRESH, text, None, self.clock.now())
        self.wake()

    async def _queue(
        self, spec: TaskSpec, kind: AlertKind, text: str, alerted: datetime | None, now: datetime
    ) -> None:
        messages = [(to, text) for to in self.alerter.recipients]
        store = self.scheduler.store
        await store.queue_alert(spec.id, str(kind), messages, alerted, now, stale=True)
        self.alerter.wake_deliverers()


def _why(state: TaskState, zone: ZoneInfo, now: datetime) -> str:
    """What the task's state says about why it has not succeeded."""
    if state.paused:
        return "It is paused."
    if state.last_run is None:
        return "It has not run."
    when = short_time(state.last_run, zone, now)
    if state.last_error:
        return f"Last run {when}: {state.last_error[:200]}"
    return f"Last run {when}: {state.last_outcome or 'running'}."
