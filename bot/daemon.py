"""The composition root: `moltsched daemon`.

Opens the store, builds the scheduler and the control socket, and runs them until SIGTERM or
SIGINT. Shutdown order: stop accepting commands, stop dispatching, interrupt running runs and
record them `interrupted` (each gets its task's `grace`), close the store, release the lock,
exit 0. Only `bot/` knows about sockets and signals; the engine knows neither.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

# The whole command stack is imported at start, `commands.runs` too (which `execute` loads only
# when asked, for the command line's reads): a request must never be the first to read our
# files (the daemon may be out of descriptors by then, or the package upgraded under it).
import commands.runs  # noqa: F401
from bot import client
from bot.access import Access, private_state
from bot.control import ControlServer
from bot.denials import ControlRefusals
from bot.engine import Engine, build_engine
from bot.fallback import Fallback
from bot.lock import RUNNING, STOPPING, OtherDaemon, StateLock, lock_for_daemon
from bot.outbox import Outbox
from bot.respond import Answer, nothing, reloaded, respond, unloaded_in
from bot.signals import Signals
from bot.stale import StaleWatch
from bot.state_watch import StateWatch
from bot.systemd import notify, watchdog, watchdog_interval
from bot.write_alarm import WriteAlarm
from commands.chat import converse
from commands.command import Ping, Reload, Request
from commands.context import Context
from config.checks import task_warnings
from config.loader import UNHEARD, AppConfig, ConfigError, load_config
from scheduler_core import __version__, procs
from scheduler_core.cgroups import RunCgroups
from scheduler_core.clock import Clock
from scheduler_core.errors import log_failure
from scheduler_core.runner import stop_strays
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store

if TYPE_CHECKING:
    from bot.signal_front import SignalFront

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
PING = Request(Ping()).to_wire()
# Beyond the longest grace of a running task: time to record the runs and close the store.
STOP_MARGIN_S = 10.0


async def serve(
    config: AppConfig, *, clock: Clock | None = None, signals: Signals | None = None
) -> int:
    """Run the daemon in the foreground until told to stop; the process's exit code.

    `signals` carries what arrived before the event loop ran (see bot.signals)."""
    signals = signals or Signals()
    stop = signals.attach()
    try:
        settings = config.settings
        private_state(settings.state_dir)
        try:
            ping = functools.partial(client.request, settings.state_dir, PING)
            lock = await lock_for_daemon(settings.state_dir, stop, ping)
        except OtherDaemon as exc:
            log.error("%s", exc)
            return EXIT_USAGE
        if lock is None:
            return EXIT_OK  # told to stop before it could start
        try:
            if stop.is_set():
                return EXIT_OK
            return await _serve_started(config, clock, signals, lock)
        finally:
            lock.release()
    finally:
        signals.detach()


class Daemon:
    """The running daemon's parts and its current configuration."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.scheduler = engine.scheduler
        self.signal: SignalFront | None = None
        self.fallback: Fallback | None = None
        self.stale: StaleWatch | None = None
        self.server: ControlServer | None = None
        self._reloading = asyncio.Lock()

    @property
    def config(self) -> AppConfig:
        return self.engine.config

    async def replies(self, text: str, actor: str) -> AsyncIterator[str]:
        """The bot's answers to an admin's message (what `moltsched chat` prints)."""
        ctx = Context(
            self.scheduler,
            self.config.zone,
            True,
            actor=actor,
            signal_connected=self.signal.working if self.signal else None,
            unloaded=unloaded_in(self.config.path),
        )
        async for reply in converse(text, ctx):
            yield reply.text

    async def handle(self, request: Request) -> Answer:
        """One control request."""
        if isinstance(request.command, Ping):
            # The file it runs: `client.ask_unreadable` finds it by that.
            config = str(self.config.path.resolve())
            meta = {"err": "", "exit": 0, "pid": os.getpid(), "config": config}
            return meta, nothing()
        if isinstance(request.command, Reload):
            return reloaded(*await self.reload(request.actor), as_json=request.json)
        connected = self.signal.working if self.signal is not None else None
        return await respond(
            request,
            self.scheduler,
            self.config.zone,
            daemon=True,
            signal_connected=connected,
            unloaded=unloaded_in(self.config.path),
        )

    async def reload(self, actor: str = "SIGHUP") -> tuple[int, str, list[str]]:
        """Re-read the configuration (SIGHUP, `moltsched reload`); keep the old one if bad.

        systemd hears RELOADING=1 before and READY=1 after, whatever the outcome (the old
        configuration stays in use when the new one is rejected); the action log records it
        with who asked. A control socket whose file was removed is made again first. What
        `validate` would warn of in the tasks it added or changed is logged and answered."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        warnings: list[str] = []
        try:
            if self.server is not None:
                await self.server.restore()
            code, message, warnings = await self._reload()
        except Exception as exc:  # never takes the daemon down (half an upgrade, a bug)
            log.exception("reload failed")
            code, message = 1, f"reload failed: {exc}"
        finally:
            notify(f"READY=1\nSTATUS=running {len(self.config.tasks)} task(s)")
        action = "reloaded" if code == 0 else "reload_rejected"
        try:
            await self.scheduler.store.log(action, message[:500], actor=actor)
        except Exception:  # the log must not turn a reload into a failure
            log_failure(log, "could not record the reload")
        return code, message, warnings

    async def _reload(self) -> tuple[int, str, list[str]]:
        async with self._reloading:
            path = self.config.path
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                log.error("reload rejected; the running configuration is kept. %s", exc)
                return EXIT_USAGE, f"reload rejected, the running configuration is kept: {exc}", []
            if new.settings.state_dir != self.config.settings.state_dir:
                message = (
                    f"reload rejected: state_dir changed to {new.settings.state_dir}; "
                    "that takes a restart"
                )
                log.error("%s", message)
                return EXIT_USAGE, message, []
            tasks = await self.scheduler.reconfigure(new.tasks, new.settings)
            added, removed, changed, stopped = tasks
            self._apply_signal(new)
            self._apply_control(new)
            self.engine.reconfigure(new)
            self._apply_alerts(new)
            parts = [f"{len(new.tasks)} task(s)"]
            gone = [f"{i} (its run is stopped)" if i in stopped else i for i in removed]
            for word, ids in (("added", added), ("removed", gone), ("changed", changed)):
                if ids:
                    parts.append(f"{word} {', '.join(ids)}")
            message = f"reloaded {path}: " + "; ".join(parts)
            log.info("%s", message)
            warnings = await asyncio.to_thread(_warnings, new, {*added, *changed})
            return 0, message, warnings

    def _apply_alerts(self, new: AppConfig) -> None:
        """The fallback command (none: it runs no more) and max_age apply at once; adding a
        fallback command where there was none takes a restart."""
        if self.fallback is not None:
            self.fallback.argv = new.alerts.fallback_command  # none: it runs no more
            self.fallback.after = timedelta(seconds=new.alerts.fallback_after)
            self.fallback.wake()
        elif new.alerts.fallback_command:
            log.warning("alerts.fallback_command was added; it applies after a restart")
        if new.alerts_unheard:
            log.warning(UNHEARD)
        if self.stale is not None:
            self.stale.wake()

    def _apply_control(self, new: AppConfig) -> None:
        """control.group applies at once; the metrics endpoint takes a restart."""
        if self.server is not None and new.control_group != self.config.control_group:
            self.server.allow(Access(new.control_group))
        if new.metrics != self.config.metrics:
            log.warning("metrics: changed; it applies after a restart")

    def _apply_signal(self, new: AppConfig) -> None:
        """Admins, groups, alert recipients and the alert policy apply at once; a different
        service, account, or adding or removing Signal takes a restart."""
        before, after = (
            (c.service, c.account) if c else None for c in (self.config.signal, new.signal)
        )
        if before != after:
            log.warning("the signal: section changed in a way that takes a restart")
            return
        if self.signal is not None and new.signal is not None:
            self.signal.update(new.signal)


async def _serve_started(
    config: AppConfig, clock: Clock | None, signals: Signals, lock: StateLock
) -> int:
    settings = config.settings
    stop = signals.stop
    store = await Store.open(settings.db_path, settings.retention)
    try:
        # Runs get cgroups of their own under systemd with Delegate=yes (see the unit).
        engine = build_engine(config, store, clock=clock, cgroups=RunCgroups.take())
        scheduler = engine.scheduler
        if not await _prepared(scheduler, signals):
            log.info("moltsched daemon stopped before it started")
            return EXIT_OK
        daemon = Daemon(engine)
        outbox: Outbox | None = None
        if config.signal is not None:
            # Only when configured: signalbot and aiohttp are most of the RSS of a daemon.
            from bot.signal_front import SignalFront

            daemon.signal = SignalFront(config.signal, daemon.replies, store)
            outbox = engine.deliver_alerts(daemon.signal, daemon.signal.limiter)
            daemon.signal.on_connect = outbox.connected
        fallback, stale = daemon.fallback, daemon.stale = engine.alert_watches()
        alarm = WriteAlarm(
            scheduler, engine.recipients, engine.clock, daemon.signal, fallback, engine.remind_every
        )
        metrics = None
        if config.metrics is not None:
            from bot.metrics import Metrics  # imported only when asked for (RSS)

            metrics = Metrics(scheduler, lambda: daemon.signal.working if daemon.signal else None)
            await metrics.start(config.metrics.host, config.metrics.port)  # or when it can
            engine.hooks.append(metrics.on_finish)
        refusals = ControlRefusals(store)
        server = ControlServer(
            settings.state_dir / client.SOCKET_NAME,
            daemon.handle,
            Access(config.control_group),
            on_denied=refusals.refused,
        )
        daemon.server = server
        try:
            await server.start()
        except OSError as exc:
            # Most often: the path is longer than a unix socket allows (about 107 bytes).
            log.error("cannot open the control socket %s: %s", server.path, exc)
            return EXIT_USAGE
        watch = StateWatch(engine.clock, lock, server, store)  # after the socket: it restores it
        helpers = [h for h in (fallback, stale, alarm, watch) if h is not None]
        lock.mark(RUNNING)
        log.info(
            "moltsched %s daemon running: %d task(s), max_concurrent %d, state in %s, pid %d",
            __version__,
            len(config.tasks),
            settings.max_concurrent,
            settings.state_dir,
            os.getpid(),
        )
        if config.alerts_unheard:
            log.warning(UNHEARD)
        elif config.signal is None:
            log.info("no signal: section in the configuration; running without Signal")
        # Orphans of runs are re-parented to us (see scheduler_core.procs); the daemon starts
        # nothing else. They are reaped as each run ends (not on SIGCHLD: a burst of runs
        # would overflow the loop's signal wake-up pipe), and stopped at shutdown.
        procs.only_runs()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(scheduler.run(), name="scheduler")
                notify(f"READY=1\nSTATUS=running {len(config.tasks)} task(s)")

                def reload() -> None:
                    tg.create_task(daemon.reload("SIGHUP"), name="reload")

                signals.ready(reload)
                interval = watchdog_interval()
                if interval:
                    tg.create_task(watchdog(interval, stop), name="watchdog")
                front = daemon.signal
                if front is not None and outbox is not None:
                    signal_task = tg.create_task(front.run(), name="signal")
                    tg.create_task(outbox.run(), name="outbox")
                for helper in helpers:
                    tg.create_task(helper.run(), name=type(helper).__name__)
                await stop.wait()
                lock.mark(STOPPING)  # before the socket goes: see StateLock.never_free
                signals.stopping()
                notify("STOPPING=1")
                # The runs get their grace; tell systemd before its TimeoutStopSec runs out.
                graces = [spec.grace for spec in scheduler.running_specs()]
                if graces:
                    needed = max(graces) + STOP_MARGIN_S
                    notify(f"EXTEND_TIMEOUT_USEC={int(needed * 1_000_000)}")
                await server.close()
                scheduler.close()
                tg.create_task(_stop_strays(scheduler), name="strays")
                for helper in helpers:
                    helper.close()
                if front is not None and outbox is not None:
                    outbox.close()
                    await front.close()
                    signal_task.cancel()
        finally:
            await server.close()
            await server.finish()
            refusals.log_counted()
        if metrics is not None:
            await metrics.close()
        log.info("moltsched daemon stopped")
        return EXIT_OK
    finally:
        await store.close()


def _warnings(config: AppConfig, ids: set[str]) -> list[str]:
    """What `validate` would warn of in these tasks, logged."""
    found = task_warnings(config.tasks, config.settings.tasks_dir, os.environ.get("PATH"), ids)
    for warning in found:
        log.warning("reload: %s", warning)
    return found


async def _prepared(scheduler: Scheduler, signals: Signals) -> bool:
    """Prepare the scheduler (if the store refuses, the schedule starts once writes work);
    False if told to stop meanwhile. After a crash this waits out the grace of what the
    runs cut short left going: a stop ends the start after it, a second one at once."""
    signals.hurry = functools.partial(scheduler.close, now=True)

    async def close_on_stop() -> None:
        await signals.stop.wait()
        scheduler.close()

    closing = asyncio.create_task(close_on_stop())
    try:
        await scheduler.try_prepare()
    finally:
        closing.cancel()
    return not signals.stop.is_set()


async def _stop_strays(scheduler: Scheduler) -> None:
    """Once the runs are drained, stop what no run could claim (see scheduler_core.procs)."""
    await scheduler.drained()
    grace = max((s.grace for s in scheduler.specs), default=10.0)
    stopped = await stop_strays(grace)
    if stopped:
        log.warning("stopped %d process(es) left behind by earlier runs", stopped)
