"""The daemon's signals, honoured from its first moment to its last.

SIGTERM and SIGINT stop it (a second one stops the runs at once, without waiting out their
grace: Ctrl-C twice), SIGHUP reloads its configuration. Python's default for all three
is to die on the spot, so handlers go in before anything slow happens (`Signals.early()`, as
the command line starts the daemon, before the heavy imports and the configuration): what
arrives then is remembered. Once the event loop runs, the loop takes the signals over; a
SIGHUP before the daemon is ready is a reload deferred until it is, one during shutdown is
ignored. When the loop is gone the three are ignored: the process is stopping anyway.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

STOPPING = (signal.SIGTERM, signal.SIGINT)
HANDLED = (*STOPPING, signal.SIGHUP)

# A stop signal this soon after the first is that one's echo, not a second stop: `timeout`,
# when its time is up, signals its command and then its own process group, which the command
# is in. A person's second Ctrl-C comes later than this.
ECHO_S = 0.05


class Stops:
    """When the first stop signal came: a second one then either hurries the runs (their grace
    is over) or is the first one's echo."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: float | None = None

    def first(self) -> None:
        self._first = self._clock()

    def echo(self) -> bool:
        return self._first is not None and self._clock() - self._first < ECHO_S


class Signals:
    """What the daemon has been asked by signal, and whom to tell."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.stop_signal: signal.Signals | None = None
        self._stops = Stops(clock)
        self.reload_pending = False
        self._reload: Callable[[], None] | None = None
        self._stopping = False
        self.hurry: Callable[[], None] | None = None  # a second stop: runs lose their grace

    @functools.cached_property
    def stop(self) -> asyncio.Event:
        """Set when the daemon is asked to stop. Made when first used: the signals are
        taken before asyncio is imported, which waits for the configuration (bot.lean)."""
        import asyncio

        return asyncio.Event()

    @classmethod
    def early(cls) -> Signals:
        """Remember the signals that arrive before the event loop runs."""
        signals = cls()
        for sig in HANDLED:
            signal.signal(sig, signals._early)
        return signals

    def _early(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if sig is signal.SIGHUP:
            self.reload_pending = True
        elif self.stop_signal is None:
            self.stop_signal = sig

    def attach(self) -> asyncio.Event:
        """Take the signals over on the running loop; the event is set when asked to stop."""
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in HANDLED:
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.stop_signal is not None:
            self._on_signal(self.stop_signal)
        return self.stop

    def ready(self, reload: Callable[[], None]) -> None:
        """The daemon runs: reloads go to `reload`, and one asked for meanwhile starts now."""
        self._reload = reload
        if self.reload_pending and not self._stopping:
            self.reload_pending = False
            log.info("SIGHUP arrived during start-up: reloading now")
            reload()

    def stopping(self) -> None:
        """Shutdown has begun: a SIGHUP from now on is ignored."""
        self._stopping = True
        self._reload = None

    def detach(self) -> None:
        """The loop is ending: ignore the three signals until the process is gone."""
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in HANDLED:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig is signal.SIGHUP:
            if self._stopping:
                log.info("SIGHUP during shutdown: ignored")
            elif self._reload is None:
                self.reload_pending = True
                log.info("SIGHUP during start-up: the reload waits until the daemon is ready")
            else:
                self._reload()
            return
        if not self.stop.is_set():
            self._stops.first()
            self.stop_signal = sig
            log.info("%s: stopping; running runs are interrupted and recorded", sig.name)
        elif self._stops.echo():
            log.info(
                "%s again at once: taken as the first one's echo (as `timeout` sends it); "
                "send it again to stop the runs without their grace",
                sig.name,
            )
        elif self.hurry is not None:
            log.warning("%s again: stopping the runs now, without their grace", sig.name)
            self.hurry()
        self.stop.set()
