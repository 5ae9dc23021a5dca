"""Entries of the action log that anyone may cause again and again, written without bound on
neither the disk nor the journal: the first of each kind at once, the same again within
QUIET_S counted, and the count given with its next entry (or when the daemon stops).

What is counted: a stranger's messages on Signal and callers refused by the control socket
(`bot.denials`), and the reads everyone allowed makes (`query` entries): an agent that polls
`status` every 10 s writes an entry an hour, not 8,640 a day.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

QUIET_S = 3600.0
KEPT = 1000  # kinds counted at once; past it, the oldest one's count is given now

K = TypeVar("K", bound=Hashable)


class Counted(NamedTuple, Generic[K]):
    """What to write of `key`: this one (`this`), with the `more` counted before it; or,
    without it, only the count."""

    key: K
    more: int
    this: bool = True

    def before(self) -> str:
        """The count before this one, as the end of its entry."""
        return f"; {self.more} more before it, not logged one by one" if self.more else ""


class Tally(Generic[K]):
    """Each kind of entry, and how many times it came since it was last written."""

    def __init__(self) -> None:
        self._counted: OrderedDict[K, tuple[float, int]] = OrderedDict()  # (written at, since)

    def note(self, key: K, now: float) -> list[Counted[K]]:
        """What to write of one more `key` (`now`: time.monotonic()): nothing while it is
        being counted; else this one, with the count before it, and the count of a kind
        forgotten to make room."""
        written_at, since = self._counted.pop(key, (-QUIET_S, 0))
        if now - written_at < QUIET_S:
            self._counted[key] = (written_at, since + 1)
            return []
        self._counted[key] = (now, 0)
        found = [Counted(key, since)]
        if len(self._counted) > KEPT:
            oldest, (_, count) = self._counted.popitem(last=False)
            found += [Counted(oldest, count, this=False)] if count else []
        return found

    def counted(self) -> list[Counted[K]]:
        """The counts not written yet (when the daemon stops)."""
        found = [Counted(k, n, this=False) for k, (_, n) in self._counted.items() if n]
        self._counted.clear()
        return found
