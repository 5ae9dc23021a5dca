"""signalbot, made as the daemon uses it: its configuration for ours (`bot_config`), a session
that says why signal-cli-rest-api refused a request (`said`), the receive websocket with a
heartbeat of our own (`receive`), a send that says who it missed (`send_text`), and closing
what signalbot leaves open (`close_storage`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import websockets
from aiohttp import ClientResponse, ClientResponseError, ClientSession
from signalbot import SendMessage, SignalBot

from config.loader import SignalConfig
from scheduler_core.safe import safe_text

SAID_MAX = 64 * 1024  # an error answer's body is read up to this (its first line is kept)
# The receive websocket is pinged this often, and given up when a ping is not answered within
# as long: a service that froze (`docker pause`, a stuck JVM), or a connection that died without
# a word (the service's host gone, a NAT that forgot it), sends nothing and says nothing, and
# only a ping tells it from a quiet one. The daemon then reconnects, and says NOT connected
# meanwhile. (websockets' own default, written here so that it is ours to keep.)
HEARTBEAT_S = 20.0


def signal_bot(config: SignalConfig) -> SignalBot:
    """A SignalBot for `config`, its session made now (in the event loop) with `said`."""
    bot = SignalBot(bot_config(config))
    # signalbot makes its session at the first request, if it has none (a private: 2.2.x).
    bot._signal._sessions._session = ClientSession(raise_for_status=said)
    return bot


def close_storage(bot: SignalBot) -> None:
    """signalbot opens an SQLite connection for its storage and has nothing that closes it:
    left to the collector, Python 3.13 warns of it."""
    sqlite = getattr(bot.storage, "_sqlite", None)
    if sqlite is not None:
        sqlite.close()


def bot_config(config: SignalConfig) -> dict[str, Any]:
    """signalbot's configuration for ours."""
    return {
        "phone_number": config.account,
        "signal_service": config.address,
        # What was written: `https://` must never fall back to HTTP (as signalbot's AUTO does
        # when TLS fails, which anyone between could make happen).
        "connection_mode": {True: "https_only", False: "http_only", None: "auto"}[config.tls],
        "download_attachments": False,
        "retry_interval": 1,
        # Nothing is kept in signalbot's storage; saying so drops its warning about it.
        "storage": {"type": "in-memory"},
    }


async def said(response: ClientResponse) -> None:
    """signalbot's session checks each answer here: one that is not a success raises with
    what signal-cli-rest-api said (`{"error": ...}`, or its text), which signalbot's own
    check never reads ("400, Bad Request" tells the owner nothing)."""
    if response.ok:
        return
    text = ""
    with contextlib.suppress(Exception):  # no body, a cut one, one that is not text
        if (response.content_length or SAID_MAX + 1) <= SAID_MAX:
            text = (await response.read()).decode()
            with contextlib.suppress(ValueError, AttributeError):
                text = str(json.loads(text).get("error") or "")
    line = safe_text(text.strip().partition("\n")[0])[:300]
    raise ClientResponseError(
        response.request_info,
        response.history,
        status=response.status,
        message=line or response.reason or "",
        headers=response.headers,
    )


async def receive(bot: SignalBot) -> AsyncIterator[str]:
    """The frames of the receive websocket, as signalbot's `messages.receive` gives them, with
    our heartbeat (its URI and credentials are signalbot's privates: 2.2.x)."""
    messages = bot._signal.messages
    async with websockets.connect(
        messages._uris.receive_ws_uri(),
        additional_headers=messages._add_auth(),
        ping_interval=HEARTBEAT_S,
        ping_timeout=HEARTBEAT_S,
    ) as websocket:
        async for raw in websocket:
            yield str(raw)


async def send_text(
    bot: SignalBot, account: str, recipient: str, text: str
) -> list[tuple[str, str]]:
    """Send `text` as signalbot's `messages.send` does; who did not get it, and why (signal-
    cli's reason, like IDENTITY_FAILURE). signal-cli takes a send to a group and names the
    members it could not reach (a 201 with `errors`: signal-api/PROTOCOL.md), which
    signalbot only logs."""
    to = bot._recipients.resolve(recipient)
    request = await SendMessage(text=text).to_generated(account, [to])
    answers = await bot._signal.messages.send(request)
    return [
        (str(e.number or e.uuid or e.username), str(e.reason))
        for answer in answers
        if answer.errors is not None and answer.errors.recipients
        for e in answer.errors.recipients
    ]
