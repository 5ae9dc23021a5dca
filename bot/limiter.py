"""How fast the bot may send to one recipient: a token bucket per recipient.

Signal rate-limits, then bans, numbers that send in floods, and then no alert reaches anyone.
Healthchecks, for one, holds its Signal integration to 6 messages a minute per recipient;
those are the defaults here (`signal.send_per_minute`), with a burst (`signal.send_burst`) so
that a person typing commands by hand never waits: only a flood does. Every send, replies and
alerts alike, takes a token from its recipient's bucket. When Signal says the account itself
sends too much, `hold` stops every send, to anyone, for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PER_MINUTE = 6.0
BURST = 10


class Limiter:
    """Token buckets, one per recipient, refilled at `per_minute`, holding up to `burst`."""

    def __init__(
        self,
        per_minute: float = PER_MINUTE,
        burst: int = BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # recipient: (tokens, as of)
        self._held_until = 0.0

    def hold(self, seconds: float) -> None:
        """Nothing goes to anyone for `seconds` (longer, if held longer already)."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    def held_for(self) -> float:
        """Seconds left of a hold (0: none)."""
        return max(0.0, self._held_until - self._clock())

    def ready_in(self, recipient: str) -> float:
        """Seconds until a message to `recipient` may go (0: now)."""
        tokens = self._tokens(recipient)
        wait = 0.0 if tokens >= 1 else (1 - tokens) * 60 / self.per_minute
        return max(wait, self.held_for())

    def available(self, recipient: str) -> int:
        """How many messages to `recipient` may go at once now."""
        return 0 if self.held_for() else int(self._tokens(recipient))

    def take(self, recipient: str) -> None:
        """A message to `recipient` goes now (it may go over: the caller waited, or must)."""
        self._buckets[recipient] = (self._tokens(recipient) - 1, self._clock())

    def _tokens(self, recipient: str) -> float:
        tokens, then = self._buckets.get(recipient, (float(self.burst), self._clock()))
        now = self._clock()
        return min(float(self.burst), tokens + (now - then) * self.per_minute / 60)
