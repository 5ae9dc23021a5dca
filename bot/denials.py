"""Refusals, logged without letting whoever is refused write without bound.

A stranger's message on Signal, a caller outside `control.group` on the control socket: the
first refusal of each is logged at once, the next ones within an hour are counted
(`scheduler_core.tally`), so whoever floods the bot's number, or an agent left out of the
group that polls `status`, writes a line an hour to the action log and the journal, not a
line a try.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from scheduler_core.tally import Counted, Tally

if TYPE_CHECKING:
    from bot.access import Peer
    from scheduler_core.store import Store

log = logging.getLogger(__name__)


class ControlRefusals:
    """Callers the control socket refused (not in `control.group`), logged as `denied`."""

    UNKNOWN = "an unknown process"  # the kernel did not say who

    def __init__(self, store: Store) -> None:
        self.store = store
        self._denials: Tally[str] = Tally()

    def refused(self, peer: Peer | None) -> None:
        key = peer.actor if peer is not None else self.UNKNOWN
        for d in self._denials.note(key, time.monotonic()):
            self._log(d)

    def log_counted(self) -> None:
        """The refusals counted and not logged yet (as the daemon stops)."""
        for d in self._denials.counted():
            self._log(d)

    def _log(self, d: Counted[str]) -> None:
        if d.this:
            log.warning("control socket: refused %s (not in control.group)", d.key)
            text = f"control socket: {d.key} is not allowed (see control.group){d.before()}"
        else:
            log.warning("control socket: refused %s %d more time(s)", d.key, d.more)
            text = f"control socket: {d.key} refused {d.more} more time(s), not logged one by one"
        self.store.log_later("denied", text, actor=None if d.key == self.UNKNOWN else d.key)
