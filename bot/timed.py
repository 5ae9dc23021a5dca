"""A loop on the engine's clock: do the work, then sleep until the time the work named (none:
until woken), or until `wake()`. The alert outbox, the alert fallback and the max_age watch
are such loops; none of them polls.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from scheduler_core.clock import Clock

log = logging.getLogger(__name__)


class TimedLoop:
    # After a step that failed (the database busy past its timeout, say), try again this late.
    RETRY_S = 60.0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock  # the scheduler's (bot.engine): one clock for all timing
        self._wake = asyncio.Event()
        self._closing = False

    async def step(self) -> datetime | None:
        """Do what is due; when to look again (None: only when woken)."""
        raise NotImplementedError

    def wake(self) -> None:
        """Something changed: look again now."""
        self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """Step until `close()`. A failing step is logged and tried again later: it never
        takes the daemon down."""
        while not self._closing:
            self._wake.clear()
            try:
                again = await self.step()
            except Exception:
                log.exception("%s failed; trying again in %.0fs", type(self).__name__, self.RETRY_S)
                again = self.clock.now() + timedelta(seconds=self.RETRY_S)
            if self._closing:
                return
            await self.clock.sleep_until(again, self._wake)
