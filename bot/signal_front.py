"""The Signal front end: SignalBot inside the daemon's loop, and a supervised receive loop.

signalbot 2.2.1 is used for what it does well: the start-up checks against
signal-cli-rest-api, its HTTP session, and sending. Receiving is supervised here: signalbot's
own producer simply ends when the service closes the websocket cleanly, and after a frame it
cannot parse it stays away for up to minutes while the service drops every message sent
meanwhile (DESIGN.md section 7). So the daemon reads the websocket itself (through
signalbot's client), decides on the raw envelope who may command (`bot.envelope`), and
reconnects within seconds whatever happened. `SignalBot.stop()` is never called: it stops
the event loop; the session is closed instead.

Uses signalbot internals (`_async_init`, `_signal`), hence the exact pin in pyproject.toml;
tests/test_signal_front.py runs the real SignalBot against the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from signalbot import SendMessage, SignalBot

from bot.envelope import Decision, Gate, Verdict
from config.loader import SignalConfig
from scheduler_core.safe import safe_text
from scheduler_core.store import Store

log = logging.getLogger(__name__)

Replies = Callable[[str, str], AsyncIterator[str]]
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0
SEEN_KEPT = 2000


class SignalNotConnected(ConnectionError):
    """The bot has no working connection to signal-cli-rest-api right now."""


class SignalFront:
    """Answers admins over Signal and delivers alerts (the outbox's Sender)."""

    def __init__(self, config: SignalConfig, replies: Replies, store: Store) -> None:
        self.config = config
        self.replies = replies
        self.store = store
        self.gate = Gate(config.account, config.admins, config.groups)
        self.connected = False
        self._bot: SignalBot | None = None
        self._ready = False
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._closing = False
        self._stopped = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    def update(self, config: SignalConfig) -> None:
        """A reload: new admins and groups apply to the next message."""
        self.config = config
        self.gate = Gate(config.account, config.admins, config.groups)

    async def run(self) -> None:
        """Stay connected until `close()`."""
        self._bot = SignalBot(
            {
                "phone_number": self.config.account,
                "signal_service": self.config.service,
                "download_attachments": False,
                "retry_interval": 1,
            }
        )
        backoff = RECONNECT_FIRST_S
        try:
            while not self._closing:
                try:
                    if not self._ready:
                        await self._bot._async_init()  # health, about, groups; waits if down
                        self._ready = True
                    self.connected = True
                    log.info("Signal connected to %s", self.config.service)
                    async for raw in self._bot._signal.messages.receive():
                        backoff = RECONNECT_FIRST_S
                        await self._frame(raw)
                    log.warning("Signal: the service closed the connection; reconnecting")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("Signal connection lost (%s); reconnecting in %.1fs", exc, backoff)
                    self._ready = False
                self.connected = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
        finally:
            self.connected = False

    async def close(self) -> None:
        """Stop: finish answering, then close signalbot's session (never `SignalBot.stop()`)."""
        self._closing = True
        self._stopped.set()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._bot is not None:
            with contextlib.suppress(Exception):
                await self._bot.close()

    async def send(self, recipient: str, text: str) -> None:
        """Deliver one message (the outbox's Sender); raises if it could not."""
        if self._bot is None or not self._ready:
            raise SignalNotConnected("Signal is not connected")
        await self._bot.messages.send(SendMessage(text=safe_text(text)), recipient)

    async def _frame(self, raw: str) -> None:
        """One websocket frame; never raises, so no frame can stop the bot listening."""
        try:
            decision = self.gate.decide(raw)
        except Exception:
            log.exception("Signal: could not read a frame; ignoring it")
            return
        if decision.verdict is Verdict.IGNORE:
            return
        if decision.key in self._seen:
            return  # the same message delivered twice runs once
        self._seen[decision.key] = None
        if len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)
        if decision.verdict is Verdict.DENIED:
            log.warning("Signal: denied a message from %s (%s)", decision.sender, decision.why)
            with contextlib.suppress(Exception):
                await self.store.log(
                    "denied", f"from {decision.sender} ({decision.why})", actor=decision.sender
                )
            return
        task = asyncio.create_task(self._answer(decision))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _answer(self, decision: Decision) -> None:
        try:
            async for text in self.replies(decision.text, f"signal:{decision.sender}"):
                await self.send(decision.reply_to, text)
        except Exception:
            log.exception("Signal: could not answer %s", decision.sender)
