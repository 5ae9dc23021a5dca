"""max_age on a real store, with a clock the test moves: why a stale task has not succeeded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.outbox import Alerter
from bot.stale import StaleWatch
from scheduler_core.alerts import AlertPolicy
from scheduler_core.model import EngineSettings
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from tests.helpers import ManualClock, spec


async def test_the_alert_says_a_task_is_disabled(
    store: Store, settings: EngineSettings, tasks_dir: Path
) -> None:
    clock = ManualClock(datetime.now(UTC))
    off = spec("off", "true", tasks_dir, max_age=60.0, enabled=False)
    sched = Scheduler(store, settings, [off], clock=clock)
    await sched.prepare()
    alerter = Alerter(store, AlertPolicy(), ["+1"], None, clock=clock)
    watch = StaleWatch(sched, alerter, ZoneInfo("UTC"))
    assert await watch.step() is not None  # not stale yet: it says when it will be
    clock.advance(61)
    assert await watch.step() is None
    (item,) = await store.pending_alerts()
    assert item.kind == "stale" and item.text.startswith("⏰ off has not succeeded in 1m (")
    assert item.text.endswith("It is disabled (enabled: false in the configuration).")
