"""Alerts that arrive when Signal cannot deliver them: `alerts.fallback_command`.

The command (an argv, run without a shell) gets the alert's text on stdin, and
`MOLTSCHED_ALERT_TASK` and `MOLTSCHED_ALERT_KIND` in its environment: `curl` to ntfy, `mail`
or `apprise` work without a dependency of ours. It runs for an alert that Signal has not
delivered within `alerts.fallback_after` of being queued, and at once for every alert when
there is no `signal:` section. An alert the fallback delivered is marked so (for every
recipient it was queued for), so Signal does not send it again later; the action log says
which channel delivered each alert.

A command that fails (exits non-zero, cannot start, or takes longer than COMMAND_TIMEOUT_S) is
tried again with backoff. It runs in a process group of its own, registered with
`scheduler_core.procs` so the daemon never takes it for something a task run left behind.
When the daemon stops, a command under way gets STOP_GRACE_S to finish; then it is stopped,
with all it started, and its alert waits in the outbox for the next start: a stuck `curl`
must not hold the stop past systemd's TimeoutStopSec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.timed import TimedLoop
from scheduler_core import procs
from scheduler_core.clock import Clock
from scheduler_core.model import OutboxItem
from scheduler_core.safe import safe_text
from scheduler_core.store import Store

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
ERR_KEPT = 4096  # of what the command writes to stderr: its last line goes to the log
BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 600.0
BATCH = 500

# An alert, as queued: one row per recipient, all with the same task, kind, text and time.
Key = tuple[str | None, str, str, datetime | None]


class Fallback(TimedLoop):
    def __init__(
        self,
        store: Store,
        argv: Sequence[str],
        after: float,
        *,
        signal_configured: bool,
        clock: Clock,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.argv = tuple(argv)
        self.after = timedelta(seconds=after)
        self.signal_configured = signal_configured
        self._failures: dict[Key, tuple[int, datetime]] = {}  # attempts, and when to try again
        # Commands under way: the outbox's, and the write alarm's (bot.write_alarm).
        self._sending: set[asyncio.Task[bool]] = set()

    async def step(self) -> datetime | None:
        """Run the command for each alert that is due for it; when to look again. With no
        command (a reload removed it), none: what waits, waits for Signal or a restart."""
        if not self.argv:
            return None
        pending = await self.store.pending_alerts(BATCH, signal=False)
        alerts: dict[Key, list[OutboxItem]] = {}
        for item in pending:
            alerts.setdefault((item.task_id, item.kind, item.text, item.created), []).append(item)
        now = self.clock.now()
        later: list[datetime] = []
        delivered = False
        # Alerts Signal delivered meanwhile need no more tries.
        self._failures = {k: v for k, v in self._failures.items() if k in alerts}
        for key, items in alerts.items():
            if self._closing:
                break
            due = self._due(items)
            failed = self._failures.get(key)
            if failed is not None:
                due = max(due, failed[1])
            if due > now:
                later.append(due)
                continue
            first = items[0]
            if await self.deliver(first.text, first.task_id, first.kind):
                self._failures.pop(key, None)
                await self.store.alerts_sent(items, self.clock.now(), channel="fallback")
                delivered = True
            else:
                attempts = failed[0] + 1 if failed else 1
                retry = now + timedelta(
                    seconds=min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempts - 1))
                )
                self._failures[key] = (attempts, retry)
                later.append(retry)
        if delivered and len(pending) == BATCH:  # more may wait behind what went
            later.append(now)
        return min(later) if later else None

    def _due(self, items: Sequence[OutboxItem]) -> datetime:
        created = items[0].created or self.clock.now()
        if not self.signal_configured or any(i.recipient == "" for i in items):
            return created  # no Signal to wait for
        return created + self.after

    async def deliver(self, text: str, task_id: str | None, kind: str) -> bool:
        """Run the command for one alert; whether it succeeded (not: the daemon is stopping,
        and it did not end in time, or did not start)."""
        if self._closing:
            return False
        sending = asyncio.create_task(command_delivers(self.argv, text, task_id, kind))
        self._sending.add(sending)
        try:
            return await sending
        except asyncio.CancelledError:
            us = asyncio.current_task()
            if us is not None and us.cancelling():
                raise  # we are cancelled (and the command with us), not only the command
            return False  # the stop cut it short (`_cut`)
        finally:
            self._sending.discard(sending)

    def close(self) -> None:
        super().close()
        for sending in self._sending:
            asyncio.get_running_loop().call_later(STOP_GRACE_S, self._cut, sending)

    def _cut(self, sending: asyncio.Task[bool]) -> None:
        if not sending.done():
            log.warning(
                "alert fallback %s still running at the stop; stopped after %.0fs (its alert "
                "goes at the next start)",
                self.argv[0] if self.argv else "command",
                STOP_GRACE_S,
            )
            sending.cancel()


async def command_delivers(argv: Sequence[str], text: str, task_id: str | None, kind: str) -> bool:
    """Run the fallback command `argv` for one alert; whether it succeeded."""
    env = os.environ | {"MOLTSCHED_ALERT_TASK": task_id or "", "MOLTSCHED_ALERT_KIND": kind}
    with procs.Spawning() as spawning:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("alert fallback %s cannot start: %s", argv[0], exc)
            return False
        spawning.registered(proc.pid)
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            err = await _talk(proc, text.encode())
    except TimeoutError:
        log.warning("alert fallback %s took over %.0fs; stopped", argv[0], COMMAND_TIMEOUT_S)
        return False
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing it started outlives it
        if proc.returncode is None:
            await proc.wait()
        procs.collected(proc.pid)
    if proc.returncode != 0:
        last = safe_text(err.decode(errors="replace")).strip().splitlines()[-1:] or [""]
        log.warning("alert fallback %s exited %s: %s", argv[0], proc.returncode, last[0][:200])
        return False
    log.info("alert %s for %s delivered by the fallback command", kind, task_id or "moltsched")
    return True


async def _talk(proc: asyncio.subprocess.Process, text: bytes) -> bytes:
    """Give the command the alert on stdin while reading its stderr, and wait for it to
    exit; the last ERR_KEPT bytes it wrote there. All of it could be any size: a command that
    writes without end holds no more of the daemon's memory than that."""
    assert proc.stdin is not None and proc.stderr is not None
    stdin, stderr = proc.stdin, proc.stderr

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):  # it need not read it all
            stdin.write(text)
            await stdin.drain()
        stdin.close()

    async def tail() -> bytes:
        kept = b""
        while chunk := await stderr.read(1 << 16):
            kept = (kept + chunk)[-ERR_KEPT:]
        return kept

    _, err = await asyncio.gather(feed(), tail())
    await proc.wait()
    return err
