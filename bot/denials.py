"""Refusals, logged without letting whoever is refused write without bound.

A stranger's message on Signal, a caller outside `control.group` on the control socket: the
first refusal of each is logged at once, the next ones within an hour are counted
(`scheduler_core.tally`), so whoever floods the bot's number, or an agent left out of the
group that polls `status`, writes a line an hour to the action log and the journal, not a
line a try. An admin's message that signal-cli could not read is said the same way
(`Unreadable`).
"""

from __future__ import annotations

import contextlib
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


class SignalRefusals:
    """Messages from strangers on Signal, logged as `denied` with the sender."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._denials: Tally[str] = Tally()

    async def refused(self, sender: str, why: str) -> None:
        await self._log(self._denials.note(sender, time.monotonic()), why)

    async def log_counted(self) -> None:
        """The refusals counted and not logged yet (as the bot stops)."""
        await self._log(self._denials.counted())

    async def _log(self, found: list[Counted[str]], why: str = "") -> None:
        for d in found:
            if d.this:
                log.warning("Signal: denied a message from %s (%s)", d.key, why)
                text = f"from {d.key} ({why}){d.before()}"
            else:
                log.warning("Signal: denied %d more message(s) from %s", d.more, d.key)
                text = f"from {d.key}: {d.more} more, not logged one by one"
            with contextlib.suppress(Exception):
                await self.store.log("denied", text, actor=d.key)


UNREADABLE_QUIET_S = 3600.0  # an admin's unreadable messages are said at most this often


class Unreadable:
    """An admin's message signal-cli could not read: said once an hour per admin, as it comes
    again with every message they send until someone acts."""

    def __init__(self) -> None:
        self._said: dict[str, float] = {}  # admin -> when last said (monotonic)

    def note(self, sender: str, why: str) -> None:
        now = time.monotonic()
        said = self._said.get(sender)
        if said is not None and now - said < UNREADABLE_QUIET_S:
            return
        self._said[sender] = now
        log.warning(
            "Signal: could not read a message from %s (%s): if their phone or Signal was "
            "replaced, signal-cli does not trust the new key yet; until it does, their "
            "commands go unanswered and alerts to them fail. To trust it, see the README "
            "(Troubleshooting, a message gets no answer)",
            sender,
            why,
        )
