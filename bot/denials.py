"""Refusals, logged without letting whoever is refused write without bound.

A stranger's message on Signal, a caller outside `control.group` on the control socket: the
first refusal of each is logged at once. The next ones within QUIET_S are counted instead, and
the count goes with the next line logged of them (or is logged when the daemon stops), so
whoever floods the bot's number, or an agent left out of the group that polls `status`,
writes a line an hour to the action log and the journal, not a line a try.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from bot.access import Peer
    from scheduler_core.store import Store

log = logging.getLogger(__name__)

QUIET_S = 3600.0
KEPT = 1000  # refused parties counted at once; past it, the oldest one's count is logged now


class Denied(NamedTuple):
    """What to log of `key`'s refusals: this one (`this`), with the `more` counted before it;
    or, without it, only the count."""

    key: str
    more: int
    this: bool = True

    def before(self) -> str:
        """The count before this one, as the end of its line."""
        return f"; {self.more} more before it, not logged one by one" if self.more else ""


class Denials:
    """Who was refused, and how many times since the last line logged of them."""

    def __init__(self) -> None:
        self._counted: OrderedDict[str, tuple[float, int]] = OrderedDict()  # (logged at, since)

    def note(self, key: str, now: float) -> list[Denied]:
        """What to log of one refusal (`now`: time.monotonic()): nothing while `key` is being
        counted; else this one, with the count before it, and the count of a party forgotten
        to make room."""
        logged_at, since = self._counted.pop(key, (-QUIET_S, 0))
        if now - logged_at < QUIET_S:
            self._counted[key] = (logged_at, since + 1)
            return []
        self._counted[key] = (now, 0)
        found = [Denied(key, since)]
        if len(self._counted) > KEPT:
            oldest, (_, count) = self._counted.popitem(last=False)
            found += [Denied(oldest, count, this=False)] if count else []
        return found

    def counted(self) -> list[Denied]:
        """The counts not logged yet (when the daemon stops)."""
        found = [Denied(k, n, this=False) for k, (_, n) in self._counted.items() if n]
        self._counted.clear()
        return found


class ControlRefusals:
    """Callers the control socket refused (not in `control.group`), logged as `denied`."""

    UNKNOWN = "an unknown process"  # the kernel did not say who

    def __init__(self, store: Store) -> None:
        self.store = store
        self._denials = Denials()

    def refused(self, peer: Peer | None) -> None:
        key = peer.actor if peer is not None else self.UNKNOWN
        for d in self._denials.note(key, time.monotonic()):
            self._log(d)

    def log_counted(self) -> None:
        """The refusals counted and not logged yet (as the daemon stops)."""
        for d in self._denials.counted():
            self._log(d)

    def _log(self, d: Denied) -> None:
        if d.this:
            log.warning("control socket: refused %s (not in control.group)", d.key)
            text = f"control socket: {d.key} is not allowed (see control.group){d.before()}"
        else:
            log.warning("control socket: refused %s %d more time(s)", d.key, d.more)
            text = f"control socket: {d.key} refused {d.more} more time(s), not logged one by one"
        self.store.log_later("denied", text, actor=None if d.key == self.UNKNOWN else d.key)
