"""One wiring of the engine, for the daemon and for the CLI with no daemon.

`build_engine` makes the scheduler with the tasks' environment and the after-run hooks (the
alert policy; the daemon adds max_age and metrics), all on one clock. A run started by
`moltsched run` in the foreground therefore alerts like a run of the daemon's: its alert
waits in the outbox until a daemon delivers it (over Signal, or by the fallback command).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.fallback import Fallback
from bot.limiter import Limiter
from bot.outbox import Alerter, Outbox, Sender
from bot.stale import StaleWatch
from config.loader import AppConfig
from scheduler_core.active import FinishHook
from scheduler_core.alerts import AlertPolicy
from scheduler_core.cgroups import RunCgroups
from scheduler_core.clock import Clock, SystemClock
from scheduler_core.launcher import ProcessLauncher
from scheduler_core.model import RunResult, TaskSpec, TaskState
from scheduler_core.scheduler import Scheduler
from scheduler_core.shebang import which
from scheduler_core.store import Store


@dataclass
class Engine:
    """The scheduler and what runs after each of its runs."""

    config: AppConfig
    store: Store
    scheduler: Scheduler
    clock: Clock
    alerter: Alerter | None
    hooks: list[FinishHook] = field(default_factory=list)

    async def after_run(self, spec: TaskSpec, result: RunResult, state: TaskState) -> None:
        for hook in self.hooks:
            await hook(spec, result, state)

    def deliver_alerts(self, sender: Sender, limiter: Limiter | None) -> Outbox:
        """The outbox that sends queued alerts through `sender` (the daemon's Signal front
        end); the alerter wakes it when it queues one."""
        outbox = Outbox(
            self.store, sender, clock=self.clock, limiter=limiter, recipients=self.recipients
        )
        if self.alerter is not None:
            self.alerter.deliverers.append(outbox.wake)
        return outbox

    def alert_watches(self) -> tuple[Fallback | None, StaleWatch | None]:
        """The alert fallback command and the max_age watch, where the configuration asks
        and alerts go somewhere, each wired in."""
        if self.alerter is None:
            return None, None
        fallback = None
        a = self.config.alerts
        if a.fallback_command:
            fallback = Fallback(
                self.store,
                a.fallback_command,
                a.fallback_after,
                signal_configured=self.config.signal is not None,
                clock=self.clock,
            )
            self.alerter.deliverers.append(fallback.wake)
        stale = StaleWatch(self.scheduler, self.alerter, self.config.zone)
        self.hooks.append(stale.on_finish)
        return fallback, stale

    def recipients(self) -> tuple[str, ...]:
        """Whom alerts go to now (a reload may change them)."""
        return self.alerter.recipients if self.alerter is not None else ()

    def remind_every(self) -> float | None:
        """How often a failure that goes on is said again (`alerts.repeat_every`), now."""
        return self.alerter.policy.repeat_every if self.alerter is not None else None

    def reconfigure(self, config: AppConfig) -> None:
        """A reload: recipients and the alert policy apply to the next run."""
        self.config = config
        if self.alerter is not None:
            self.alerter.recipients = recipients_of(config)  # none: alerts are queued no more
            self.alerter.policy = policy_of(config)


def build_engine(
    config: AppConfig,
    store: Store,
    *,
    clock: Clock | None = None,
    cgroups: RunCgroups | None = None,
) -> Engine:
    clock = clock or SystemClock()
    launcher = ProcessLauncher(config.settings, task_environment(), cgroups)
    scheduler = Scheduler(store, config.settings, config.tasks, clock=clock, launcher=launcher)
    alerter = None
    recipients = recipients_of(config)
    if recipients:
        alerter = Alerter(store, policy_of(config), recipients, None, clock=clock)
    engine = Engine(config, store, scheduler, clock, alerter)
    if alerter is not None:
        engine.hooks.append(alerter.on_finish)
    scheduler.on_finish = engine.after_run
    return engine


def recipients_of(config: AppConfig) -> tuple[str, ...]:
    """Whom alerts are queued for: Signal's `alert_to`; with no `signal:` section but a
    fallback command, one row with no recipient, which the fallback alone delivers."""
    if config.signal is not None:
        return tuple(config.signal.alert_to)
    return ("",) if config.alerts.fallback_command else ()


def policy_of(config: AppConfig) -> AlertPolicy:
    a = config.alerts
    return AlertPolicy(a.after_failures, a.repeat_every, a.recovery)


# What systemd hands the daemon alone: a task that saw NOTIFY_SOCKET could tell systemd the
# service is ready or stopping, and one that saw WATCHDOG_* or LISTEN_* could act on them.
SYSTEMD_ONLY = ("NOTIFY_SOCKET", "JOURNAL_STREAM")
SYSTEMD_PREFIXES = ("WATCHDOG_", "LISTEN_")


def task_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment runs start from (DESIGN.md section 5): the owner's world, not ours.

    PATH stays the daemon's own, so `#!/usr/bin/env python3` finds the system's Python and a
    `pip install` in a task does not change our environment; the folder of `moltsched` is
    added at the end only when `moltsched` is not found on it (under systemd, say), so
    `moltsched checkpoint save` works from any script. `MOLTSCHED_PYTHON` names an
    interpreter that has `scheduler_core.checkpoint`.
    """
    env = {
        k: v
        for k, v in (os.environ if environ is None else environ).items()
        if k not in SYSTEMD_ONLY and not k.startswith(SYSTEMD_PREFIXES)
    }
    path = env.get("PATH", os.defpath)
    if which("moltsched", path=path) is None:
        ours = str(_moltsched_folder())
        env["PATH"] = os.pathsep.join([p for p in path.split(os.pathsep) if p] + [ours])
    env["MOLTSCHED_PYTHON"] = sys.executable
    return env


def _moltsched_folder() -> Path:
    """Where the `moltsched` that runs us lives (the console script beside our Python)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "moltsched" and argv0.is_file():
        return argv0.resolve().parent
    return Path(sys.executable).parent
