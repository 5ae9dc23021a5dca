"""systemd's notify protocol, the few lines of it the daemon needs (sd_notify(3)).

`READY=1` once the store is open and the scheduler runs, `STOPPING=1` on shutdown, and
`WATCHDOG=1` at half the `WatchdogSec` interval from the event loop itself, so a stuck loop
gets the daemon restarted. Without `$NOTIFY_SOCKET` (not under systemd) nothing is sent and
no watchdog timer runs: an idle daemon still wakes for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

log = logging.getLogger(__name__)


NOTIFY_WAIT_S = 2.0  # READY, RELOADING, STOPPING: what systemd must hear, if it can
_failing = False  # the last notification failed: the next failure is not logged again


def notify(message: str, wait: float = NOTIFY_WAIT_S) -> bool:
    """Send one notification to systemd; False if not running under it (or it failed).

    A supervisor whose socket's queue is full (busy, or no longer reading) is waited for at
    most `wait` seconds, then the notification is lost rather than the daemon's loop:
    watchdog pings do not wait at all. A failure is logged once until one succeeds.
    """
    global _failing
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(wait)
            sock.connect(address)
            sock.send(message.encode())
    except OSError as exc:
        if not _failing:
            log.warning("could not notify systemd: %s", exc.strerror or exc)
        _failing = True
        return False
    _failing = False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects, or None if it expects none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


async def watchdog(interval: float, stop: asyncio.Event) -> None:
    """Ping at half the interval until `stop` is set."""
    while not stop.is_set():
        notify("WATCHDOG=1", wait=0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval / 2)
