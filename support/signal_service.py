"""A signal-cli-rest-api emulator (json-rpc mode) on 127.0.0.1, for tests and `make demo`.

It speaks what signalbot 2.2.1 uses (see shared/signal-api/PROTOCOL.md): health, about,
groups, `/v2/send`, typing, receipts, reactions, remote delete, attachments, and the receive
websocket. It records every request and every message the bot sends, pushes any frame to
the connected bot, can answer sends with errors, and can go down and come back on the same
port. Request bodies are parsed as JSON whatever their content type (signalbot sends
`text/plain`); JSON answers carry `application/json` (signalbot needs it); the websocket is
read until it closes (otherwise closing stalls).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

ACCOUNT = "+4915123456789"
ACCOUNT_UUID = "0b6e7d4a-5d0c-4f7e-9a51-3c2f8e6b1d27"
ALICE = "+4917612345678"
ALICE_UUID = "3f9c2a7e-1b4d-4c8a-8e2f-6d5b9a0c7e14"
BOB_UUID = "c7d81e52-9a3f-4b6e-a0d4-2f8b7c1e9a63"
GROUP_INTERNAL = "Wf9rb83WjcHkMvBfww+0wYQILHLZDEcOAShE6aK3RwM="
GROUP_ID = "group." + base64.b64encode(GROUP_INTERNAL.encode()).decode()


def group_entry(name: str = "Weekend Crew", internal_id: str = GROUP_INTERNAL) -> dict[str, Any]:
    """A `GET /v1/groups/{n}` entry with every key signalbot requires."""
    return {
        "name": name,
        "description": "",
        "id": "group." + base64.b64encode(internal_id.encode()).decode(),
        "internal_id": internal_id,
        "members": [ACCOUNT, ALICE, BOB_UUID],
        "blocked": False,
        "member": True,
        "pending_invites": [],
        "pending_requests": [],
        "invite_link": "",
        "admins": [ALICE],
        "permissions": {
            "add_members": "every-member",
            "edit_group": "every-member",
            "send_messages": "every-member",
        },
    }


_stamps = itertools.count(int(time.time() * 1000))


def _content(message: str, group: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {
        "timestamp": 0,
        "message": message,
        "expiresInSeconds": 0,
        "isExpirationUpdate": False,
        "viewOnce": False,
    }
    if group:
        content["groupInfo"] = {
            "groupId": group,
            "groupName": "g",
            "revision": 7,
            "type": "DELIVER",
        }
    return content


def _frame(body: dict[str, Any], number: str | None, uuid: str, ts: int | None) -> dict[str, Any]:
    ts = ts or next(_stamps)
    return {
        "envelope": {
            "source": number or uuid,
            "sourceNumber": number,
            "sourceUuid": uuid,
            "sourceName": "Someone",
            "sourceDevice": 1,
            "timestamp": ts,
            "serverReceivedTimestamp": ts + 187,
            "serverDeliveredTimestamp": ts + 243,
            **body,
        },
        "account": ACCOUNT,
    }


def text_frame(
    message: str,
    *,
    group: str | None = None,
    number: str | None = ALICE,
    uuid: str = ALICE_UUID,
    ts: int | None = None,
) -> dict[str, Any]:
    """A text message to the bot (privately, or in `group`, by internal id)."""
    return _frame({"dataMessage": _content(message, group)}, number, uuid, ts)


def sync_frame(message: str, destination: str | None, group: str | None = None) -> dict[str, Any]:
    """A sync transcript: the owner sent `message` to `destination` (or to a group)."""
    sent = {
        "destination": destination,
        "destinationNumber": destination,
        **_content(message, group),
    }
    return _frame({"syncMessage": {"sentMessage": sent}}, ACCOUNT, ACCOUNT_UUID, None)


# The body of a 429 (PROTOCOL.md section 2): signal-cli was told the account sends too much.
RATE_LIMITED = {
    "error": "Failed to send message due to rate limiting. Use the attached challenge tokens "
    "to lift the rate limit restrictions via the '/v1/accounts/{number}/rate-limit-challenge' "
    "endpoint.",
    "challenge_tokens": ["4f3c2a1b-0e9d-4c8b-a7f6-5e4d3c2b1a09"],
}


class SignalService:
    """The emulator. `await start()`, then point the bot at `service` (host:port)."""

    def __init__(self, account: str = ACCOUNT, groups: list[dict[str, Any]] | None = None):
        self.account = account
        self.groups = groups if groups is not None else [group_entry()]
        self.sent: list[dict[str, Any]] = []  # bodies of accepted /v2/send requests
        self.sent_at: list[float] = []  # when each was accepted (time.monotonic)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.send_status: int | None = None  # answer sends with this status, if set
        self.send_error = "emulated failure"  # and with this error (429 has its own)
        # Recipients a send is taken without reaching, as signal-cli reports a group send that
        # some members missed: a 201 with `errors` ({"number", "uuid", "reason"} each).
        self.undelivered: list[dict[str, str]] = []
        # Paths whose requests are taken and never answered, as a stuck service does
        # ("/v2/send", "/v1/health"); they are let go when the service stops.
        self.hanging: set[str] = set()
        # False: websocket pings go unanswered, as from a frozen service or over a connection
        # that died without a word.
        self.answers_pings = True
        self._stopping = asyncio.Event()
        self.on_send: Callable[[dict[str, Any]], None] | None = None  # called for each send
        self.refused_sends = 0
        self.mode = "json-rpc"  # what /v1/about says
        self.version = "0.101"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._connected = asyncio.Event()
        self._sent_changed = asyncio.Event()
        self._clock = itertools.count(int(time.time() * 1000))

    @property
    def service(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._stopping.clear()
        app = web.Application(middlewares=[self._hang])
        r = app.router
        r.add_get("/v1/health", self._health)
        r.add_get("/v1/about", self._about)
        r.add_get("/v1/accounts", self._accounts)
        r.add_get("/v1/groups/{number}", self._groups)
        r.add_get("/v1/groups/{number}/{gid}", self._group)
        r.add_post("/v2/send", self._send)
        r.add_put("/v1/typing-indicator/{number}", self._no_content)
        r.add_delete("/v1/typing-indicator/{number}", self._no_content)
        r.add_post("/v1/receipts/{number}", self._no_content)
        r.add_post("/v1/reactions/{number}", self._no_content)
        r.add_delete("/v1/reactions/{number}", self._no_content)
        r.add_delete("/v1/remote-delete/{number}", self._remote_delete)
        r.add_get("/v1/attachments/{id}", self._attachment)
        r.add_get("/v1/receive/{number}", self._receive)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Go down: close the websockets and stop listening (the port is kept)."""
        self._stopping.set()
        for ws in list(self._sockets):
            await ws.close()
        self._connected.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what tests do -----------------------------------------------------------------------

    async def wait_connected(self, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def push(self, frame: str | dict[str, Any]) -> None:
        """Deliver one websocket frame to the connected bot. Like the real service, a frame
        for a connection that is closing just now is dropped."""
        text = frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False)
        await self.wait_connected()
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionResetError):
                await ws.send_str(text)

    async def close_receive(self) -> None:
        """Close the receive websocket cleanly, as a restarting service does."""
        for ws in list(self._sockets):
            await ws.close()

    async def wait_sent(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """Wait until at least `count` messages were sent; returns them all."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._sent_changed.clear()
                await self._sent_changed.wait()
        return self.sent

    # --- the API -----------------------------------------------------------------------------

    @web.middleware
    async def _hang(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.hanging:
            self._seen(request)
            await self._stopping.wait()
            return self._json({"error": "stopping"}, 503)
        return await handler(request)

    def _seen(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path))

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status)

    async def _body(self, request: web.Request) -> Any:
        text = await request.text()
        return json.loads(text) if text else None

    async def _health(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=204)

    async def _about(self, request: web.Request) -> web.Response:
        self._seen(request)
        return self._json(
            {
                "versions": ["v1", "v2"],
                "build": 2,
                "mode": self.mode,
                "version": self.version,
                "capabilities": {"v2/send": ["quotes", "mentions"]},
            }
        )

    async def _accounts(self, request: web.Request) -> web.Response:
        """The registered numbers, as `GET /v1/accounts` lists them."""
        self._seen(request)
        return self._json([self.account])

    async def _groups(self, request: web.Request) -> web.Response:
        self._seen(request)
        return self._json(self.groups)

    async def _group(self, request: web.Request) -> web.Response:
        self._seen(request)
        for group in self.groups:
            if group["id"] == request.match_info["gid"]:
                return self._json(group)
        return self._json({"error": "No group with that id found"}, 404)

    async def _send(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await self._body(request)
        if self.send_status is not None:
            self.refused_sends += 1
            if self.send_status == 429:  # signal-cli's rate limit, as the REST layer words it
                return self._json(RATE_LIMITED | {"account": self.account}, 429)
            return self._json({"error": self.send_error}, self.send_status)
        if not isinstance(body, dict) or not body.get("recipients"):
            return self._json({"error": "please provide at least one recipient"}, 400)
        self.sent.append(body)
        self.sent_at.append(time.monotonic())
        self._sent_changed.set()
        if self.on_send is not None:
            self.on_send(body)
        sent: dict[str, Any] = {"timestamp": str(next(self._clock))}
        if self.undelivered:
            sent["errors"] = {"recipients": list(self.undelivered)}
        return self._json([sent], 201)

    async def _no_content(self, request: web.Request) -> web.Response:
        self._seen(request)
        await request.read()
        return web.Response(status=204)

    async def _remote_delete(self, request: web.Request) -> web.Response:
        self._seen(request)
        await request.read()
        return self._json({"timestamp": str(next(self._clock))}, 201)

    async def _attachment(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=b"\x89PNG fake attachment", content_type="image/jpeg")

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        if request.match_info["number"] != self.account:
            return self._json({"error": "unknown number"}, 400)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self._sockets.add(ws)
        self._connected.set()
        try:
            async for msg in ws:  # keep reading, or closing stalls
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
                if msg.type is WSMsgType.PING and self.answers_pings:
                    await ws.pong(msg.data)
        finally:
            self._sockets.discard(ws)
            if not self._sockets:
                self._connected.clear()
        return ws

    async def __aenter__(self) -> SignalService:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            await self.stop()


async def answers(
    service: SignalService, frame: dict[str, Any] | str, n: int = 1
) -> list[dict[str, Any]]:
    before = len(service.sent)
    await service.push(frame)
    return (await service.wait_sent(before + n))[before:]
