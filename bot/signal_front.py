"""The Signal front end: SignalBot inside the daemon's loop, and a supervised receive loop.

signalbot 2.2.1 is used for what it does well: the start-up checks against
signal-cli-rest-api, its HTTP session, and sending. Receiving is supervised here: signalbot's
own producer simply ends when the service closes the websocket cleanly, and after a frame it
cannot parse it stays away for up to minutes while the service drops every message sent
meanwhile (DESIGN.md section 7). So the daemon reads the websocket itself (through
signalbot's client), decides on the raw envelope who may command (`bot.envelope`), and
reconnects within seconds whatever happened. `SignalBot.stop()` is never called: it stops
the event loop; the session is closed instead.

Uses signalbot internals (`_async_init`, `_signal`), hence the pin to 2.2.x in pyproject.toml;
tests/test_signal_e2e.py runs the real SignalBot against the emulator (support/signal_service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import ClientConnectorError, ClientResponseError
from signalbot import SignalAPIError, SignalBot

from bot.denials import SignalRefusals, Unreadable
from bot.envelope import Decision, Gate, Verdict
from bot.limiter import Limiter
from bot.logs import quiet_signalbot
from bot.signal_client import close_storage, receive, send_text, signal_bot
from config.loader import SignalConfig
from scheduler_core.errors import log_failure
from scheduler_core.safe import safe_text
from scheduler_core.store import Store

log = logging.getLogger(__name__)

Replies = Callable[[str, str], AsyncIterator[str]]
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0
# A request signal-cli-rest-api has taken and does not answer is given up after this (aiohttp's
# own limit is five minutes). A send would hold the alerts behind it and the chat's replies; the
# outbox tries it again later, and a message that did go out meanwhile then arrives twice.
# The start-up checks would hold the connection; they are tried again after the back-off.
SERVICE_TIMEOUT_S = 30.0
# signal-cli-rest-api answers 429 when Signal says the account sends too much. Sending on
# would keep it limited (and Signal bans numbers that flood), so every send, to anyone, waits
# this long; twice as long at each 429 in a row, up to RATE_LIMIT_HOLD_MAX_S.
RATE_LIMIT_HOLD_S = 60.0
RATE_LIMIT_HOLD_MAX_S = 3600.0
SEEN_KEPT = 2000
EDITED_ANSWER = "An edited message is not taken as a command: send it again as a new one."
# Replies waiting for the limiter, per chat, beyond what it lets go at once: past this many
# the oldest go, and the next reply says how many (a flood of commands, not a person, fills it).
QUEUED_MAX = 5
REPLY_RETRY_S = 30.0  # a reply that found no connection is tried again at the next, or after this


@dataclass
class _Mailbox:
    """Replies to one chat waiting for their turn (see bot.limiter)."""

    queue: deque[tuple[str | None, tuple[str, str]]] = field(default_factory=deque)
    dropped: int = 0
    pump: asyncio.Task[None] | None = None
    away: bool = False  # its last send found no connection (said once)


class SignalNotConnected(ConnectionError):
    """The bot has no working connection to signal-cli-rest-api right now."""


class SignalRateLimited(ConnectionError):
    """Signal said the account sends too much: every send waits (`Limiter.hold`)."""


class SignalRefused(ConnectionError):
    """signal-cli-rest-api answered a send with an error; the message says what it said."""


class SignalFront:
    """Answers admins over Signal and delivers alerts (the outbox's Sender)."""

    def __init__(self, config: SignalConfig, replies: Replies, store: Store) -> None:
        self.config = config
        self.replies = replies
        self.store = store
        self.gate = Gate(config.account, config.admins, config.groups)
        self.connected = False
        # A send taken and never answered: the service is stuck (frozen), though its
        # connections stay open; until a send goes through, it is not called connected.
        self._unanswered = False
        self._bot: SignalBot | None = None
        self._ready = False
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._closing = False
        self._stopped = asyncio.Event()
        self._connects = asyncio.Event()  # set (and made anew) at each connection
        self.on_connect: Callable[[], None] | None = None  # called at each connection
        self._handlers: set[asyncio.Task[None]] = set()
        self.limiter = Limiter(config.send_per_minute, config.send_burst)
        self._hold_s = 0.0  # the last rate-limit hold; 0 once a send went through again
        self._boxes: dict[str, _Mailbox] = {}
        # Commands being answered, by (chat, text): the same one again meanwhile is counted,
        # not answered again.
        self._answering: dict[tuple[str, str], int] = {}
        self._refusals = SignalRefusals(store)
        self._unreadable = Unreadable()

    @property
    def working(self) -> bool:
        """Connected, and answering sends: what `status` and the metrics call connected."""
        return self.connected and not self._unanswered

    def update(self, config: SignalConfig) -> None:
        """A reload: new admins and groups apply to the next message."""
        self.config = config
        self.gate = Gate(config.account, config.admins, config.groups)
        self.limiter.per_minute = config.send_per_minute
        self.limiter.burst = config.send_burst

    async def run(self) -> None:
        """Stay connected until `close()`."""
        quiet_signalbot()  # before: its notices while it is made; after: its own handler
        self._bot = signal_bot(self.config)
        quiet_signalbot()
        backoff = previous = RECONNECT_FIRST_S
        failures = 0  # in a row; a failure is logged once per back-off step, not per attempt
        try:
            while not self._closing:
                try:
                    if not self._ready:
                        await self._start_up()
                        self._ready = True
                    self.connected = True
                    self._connects.set()
                    self._connects = asyncio.Event()
                    if self.on_connect is not None:
                        self.on_connect()
                    if failures:
                        log.info(
                            "Signal connected to %s again, after %d failed attempt(s)",
                            self.config.service,
                            failures,
                        )
                    else:
                        log.info("Signal connected to %s", self.config.service)
                    failures = 0
                    async for raw in receive(self._bot):
                        backoff = previous = RECONNECT_FIRST_S
                        await self._frame(raw)
                    log.warning("Signal: the service closed the connection; reconnecting")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if backoff < RECONNECT_MAX_S or failures == 1:
                        log.warning(
                            "Signal connection lost (%s); reconnecting in %.1fs", exc, backoff
                        )
                    elif backoff > previous:  # the last step: said once
                        log.warning(
                            "Signal still unreachable (%s); trying every %.0fs, quiet until it "
                            "is back",
                            exc,
                            RECONNECT_MAX_S,
                        )
                    self._ready = False
                self.connected = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff)
                previous, backoff = backoff, min(backoff * 2, RECONNECT_MAX_S)
        finally:
            self.connected = False

    async def _start_up(self) -> None:
        """signalbot's start-up checks: health, about, groups. signalbot's own start-up waits
        out a service that is down, logging an error a second: ask first, and let `run` back
        off instead."""
        assert self._bot is not None
        try:
            async with asyncio.timeout(SERVICE_TIMEOUT_S):
                if not await self._bot._signal.check_signal_service():
                    raise SignalNotConnected(f"{self.config.service} does not answer")
                await self._bot._async_init()
        except TimeoutError:
            raise SignalNotConnected(
                f"{self.config.service} did not answer within {SERVICE_TIMEOUT_S:g} s"
            ) from None

    async def close(self) -> None:
        """Stop: finish answering, then close signalbot's session (never `SignalBot.stop()`)."""
        self._closing = True
        self._stopped.set()
        self._connects.set()  # replies waiting for a connection wait no more
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        for box in self._boxes.values():
            if box.pump is not None:
                box.pump.cancel()
        await self._refusals.log_counted()
        if self._bot is not None:
            with contextlib.suppress(Exception):
                await self._bot.close()
            close_storage(self._bot)

    async def send(self, recipient: str, text: str) -> None:
        """Deliver one message now (the outbox's Sender, which asks `limiter` first); raises
        if it could not. It counts against the recipient's limit."""
        if self._bot is None or not self._ready:
            raise SignalNotConnected("Signal is not connected")
        self.limiter.take(recipient)
        try:
            async with asyncio.timeout(SERVICE_TIMEOUT_S):
                missed = await send_text(self._bot, self.config.account, recipient, safe_text(text))
        except TimeoutError:
            if not self._unanswered:
                log.warning(
                    "Signal: %s took a send and did not answer within %g s; it is reported "
                    "NOT connected until a send goes through",
                    self.config.service,
                    SERVICE_TIMEOUT_S,
                )
            self._unanswered = True
            raise TimeoutError(f"Signal did not answer within {SERVICE_TIMEOUT_S:g} s") from None
        except SignalAPIError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientConnectorError):  # nothing was sent
                raise SignalNotConnected(f"{self.config.service} cannot be reached") from None
            if not isinstance(cause, ClientResponseError):
                raise
            if cause.status != 429:  # in a line for the log and the outbox (doctor shows it)
                said = f"{self.config.service} refused it (HTTP {cause.status}): {cause.message}"
                if "untrusted" in cause.message:  # signal-cli's word when a key has changed
                    said += f" ({recipient}'s safety number changed: `moltsched doctor` says how)"
                raise SignalRefused(said) from None
            self._rate_limited()
            held = self.limiter.held_for()
            raise SignalRateLimited(
                f"Signal rate-limits this account; nothing is sent for {held:.0f}s"
            ) from None
        self._hold_s = 0.0
        if self._unanswered:
            self._unanswered = False
            log.info("Signal: %s answers sends again", self.config.service)
        if missed:  # taken, and not sent again: the others would have it twice
            await self._missed(recipient, missed)

    async def _missed(self, recipient: str, missed: list[tuple[str, str]]) -> None:
        said = f"Signal delivered to {recipient}, but not to "
        said += ", ".join(f"{who} ({why})" for who, why in missed)
        changed = [who for who, why in missed if why == "IDENTITY_FAILURE"]
        if changed:  # signal-cli's word for a safety number that changed (a new phone)
            trust = self.config.url(f"/v1/identities/{self.config.account}/trust/{changed[0]}")
            said += (
                f"; {changed[0]}'s safety number changed: compare it with theirs, then trust it "
                f'(PUT {trust} with {{"trust_all_known_keys": true}})'
            )
        said = safe_text(said)[:500]  # the service's words, as `signal_client.said` keeps them
        log.warning("%s", said)
        with contextlib.suppress(Exception):  # the send itself went through
            await self.store.log("not_delivered", said)

    def _rate_limited(self) -> None:
        """A 429: hold every send (longer at each 429 in a row). Sends that were under way
        when the hold began do not make it longer."""
        if self.limiter.held_for() > 0:
            return
        self._hold_s = min(RATE_LIMIT_HOLD_MAX_S, 2 * self._hold_s or RATE_LIMIT_HOLD_S)
        self.limiter.hold(self._hold_s)
        log.warning(
            "Signal: %s says this account is rate-limited (HTTP 429): nothing is sent for "
            "%.0fs; replies and alerts wait (alerts.fallback_command takes alerts after "
            "fallback_after). To lift it sooner, answer Signal's challenge (README, Signal)",
            self.config.service,
            self._hold_s,
        )

    async def _frame(self, raw: str) -> None:
        """One websocket frame; never raises, so no frame can stop the bot listening."""
        try:
            decision = self.gate.decide(raw)
        except Exception:
            log.exception("Signal: could not read a frame; ignoring it")
            return
        if decision.verdict is Verdict.IGNORE:
            return
        if decision.verdict is Verdict.UNREADABLE:
            self._unreadable.note(decision.sender, decision.why)
            return
        if decision.key in self._seen:
            return  # the same message delivered twice runs once
        self._seen[decision.key] = None
        if len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)
        if decision.verdict is Verdict.DENIED:
            await self._refusals.refused(decision.sender, decision.why)
            return
        same = (decision.reply_to, decision.text)
        if same in self._answering:
            self._answering[same] += 1  # answered once, with a count
            return
        self._answering[same] = 0
        task = asyncio.create_task(self._answer(decision, same))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _answer(self, decision: Decision, same: tuple[str, str]) -> None:
        try:
            if decision.verdict is Verdict.EDITED:  # never run: it may be of one that ran
                self._post(decision.reply_to, EDITED_ANSWER, same)
                return
            async for text in self.replies(decision.text, f"signal:{decision.sender}"):
                self._post(decision.reply_to, text, same)
        except Exception:
            log_failure(log, "Signal: could not answer %s", decision.sender)
        finally:
            self._post(decision.reply_to, None, same)  # the answer is complete

    def _post(self, chat: str, text: str | None, same: tuple[str, str]) -> None:
        """Queue a reply (None: the end of an answer) for the chat's pump."""
        box = self._boxes.setdefault(chat, _Mailbox())
        box.queue.append((text, same))
        replies = [i for i, (t, _) in enumerate(box.queue) if t is not None]
        if len(replies) > QUEUED_MAX + self.limiter.available(chat):
            del box.queue[replies[0]]
            box.dropped += 1
        if box.pump is None or box.pump.done():
            box.pump = asyncio.create_task(self._pump(chat, box))

    async def _pump(self, chat: str, box: _Mailbox) -> None:
        """Send a chat's queued replies as the limiter allows."""
        while box.queue:
            text, same = box.queue[0]
            if text is None:
                box.queue.popleft()
                repeats = self._answering.pop(same, 0)
                if repeats:
                    log.info("Signal: %r came %d more time(s), answered once", same[1], repeats)
                continue
            wait = self.limiter.ready_in(chat)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), wait)
                if self._closing:
                    return
                continue
            box.queue.popleft()
            notes = []
            if repeats := self._answering.get(same, 0):
                self._answering[same] = 0
                notes.append(f"(the same message came {repeats} more time(s); answered once)")
            if box.dropped:
                notes.append(f"({box.dropped} earlier repl(ies) dropped: too many at once)")
                box.dropped = 0
            message = "\n".join([text, *notes])
            connects = self._connects
            try:
                await self.send(chat, message)
                box.away = False
            except SignalRateLimited:
                box.queue.appendleft((message, same))  # it goes when the hold is over
            except SignalNotConnected as exc:
                # Nothing went (a restart of the service, say, while a `run:x` ran): the answer
                # goes at the next connection, or is tried again after REPLY_RETRY_S.
                if not box.away:
                    log.warning("Signal: could not answer in %s: %s; waiting for it", chat, exc)
                box.away = True
                box.queue.appendleft((message, same))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connects.wait(), REPLY_RETRY_S)
                if self._closing:
                    log.warning("Signal: stopping; answers to %s not sent", chat)
                    return
            except Exception as exc:
                log.warning("Signal: could not answer in %s: %s", chat, exc)
        if self._boxes.get(chat) is box:
            del self._boxes[chat]
