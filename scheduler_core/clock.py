"""Wall-clock time for the scheduler, passed in so tests can move time instead of patching it.

`SystemClock.sleep_until` waits for an absolute wall-clock time with a Linux timerfd on
CLOCK_REALTIME (`TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET`): it fires on the due time even
after a suspend (the monotonic clock asyncio uses stands still while suspended), and it fires at
once when someone sets the clock, so the scheduler re-reads the time. That is why an idle
daemon needs no periodic wake-up to notice clock jumps. Elsewhere it falls back to a capped
asyncio sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from scheduler_core.timerfd import TimerFd

log = logging.getLogger(__name__)

_FALLBACK_CAP_S = 60.0


class Clock(Protocol):
    """Tells the time and sleeps until a wall-clock time or a wake-up, whichever comes first."""

    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None: ...


class SystemClock:
    """The real wall clock, shared by everything that waits for a time (the scheduler, the
    alert outbox): one timer armed for the earliest sleeper, each woken when its time comes,
    and all of them when the clock is set."""

    def __init__(self) -> None:
        self._timer: TimerFd | None = None
        self._timerless = not sys.platform.startswith("linux")
        self._armed: datetime | None = None
        self._sleepers: dict[asyncio.Event, datetime | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> datetime:
        return datetime.now(UTC)

    def _timerfd(self) -> TimerFd | None:
        """The timer, made at the first sleep: a process that only tells the time (a command
        answered with no daemon) does not load ctypes for it."""
        if self._timer is None and not self._timerless:
            from scheduler_core.timerfd import TimerFd

            try:
                self._timer = TimerFd()
            except (OSError, AttributeError) as exc:
                log.warning("no timerfd (%s); falling back to capped sleeps", exc)
                self._timerless = True
        return self._timer

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        timer = self._timerfd()
        if timer is None:
            timeout = None if when is None else (when - self.now()).total_seconds()
            timeout = _FALLBACK_CAP_S if timeout is None else min(max(timeout, 0), _FALLBACK_CAP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Registered once and left registered: a busy scheduler sleeps and wakes for every
            # finished run, and re-registering each time was measurable in the burst benchmark.
            loop.add_reader(timer.fd, self._fire)
            self._loop = loop
        self._sleepers[wake] = when
        self._arm()
        try:
            await wake.wait()
        finally:
            self._sleepers.pop(wake, None)

    def _arm(self) -> None:
        """The timer set for the earliest sleeper (left alone when it already is)."""
        assert self._timer is not None
        earliest = min((w for w in self._sleepers.values() if w is not None), default=None)
        if earliest == self._armed:
            return
        if earliest is None:
            self._timer.disarm()
        elif self._timer.arm(earliest.timestamp()):
            # The clock was set before the timer was read: what `_fire` would have heard.
            asyncio.get_running_loop().call_soon(self._woken, True)
        self._armed = earliest

    def _fire(self) -> None:
        assert self._timer is not None
        self._woken(self._timer.drain())

    def _woken(self, clock_set: bool) -> None:
        """Wake the sleepers whose time has come (all of them when the clock was set)."""
        self._armed = None  # expired (or the clock was set): arm again for who is left
        now = self.now()
        for wake, when in list(self._sleepers.items()):
            if clock_set or (when is not None and when <= now):
                del self._sleepers[wake]
                wake.set()
        if self._sleepers:
            self._arm()

    def close(self) -> None:
        if self._timer is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._timer.fd)
            self._timer.close()
            self._timer = None
        self._timerless = True
