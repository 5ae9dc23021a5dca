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


def notify(message: str) -> bool:
    """Send one notification to systemd; False if not running under it (or it failed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)
        return False
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
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval / 2)
