"""The daemon's control socket: `STATE_DIR/control.sock`, mode 0600, one request per connection.

A request is one JSON line, a `commands.command.Request` (`{"command": {...}, "json": bool}`).
Who sent it is what the kernel says (`SO_PEERCRED`, see `bot.access`): the server sets the
request's `actor` from it, and refuses callers `Access` does not allow. The reply is one JSON
line of metadata (`{"err": text-for-stderr, "exit": code, ...}`) followed by the text to print
on stdout, raw, up to the end of the connection (so a 3 MB status is not escaped into a JSON
string and parsed again); a request with `"sealed": true` gets `bot.client.END` after it
(`FAILED_END` if the database failed after the answer began: see `commands.streams`). The
daemon holds the state lock before it binds, so a socket file found at start-up is stale (its
daemon crashed) and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bot.access import Access, Peer, peer_of
from bot.client import END, FAILED_END
from bot.failure import EXIT_STATE
from commands.command import Request
from commands.reply import LateFailure
from scheduler_core.errors import OddFile, StoreError

log = logging.getLogger(__name__)

# A handler answers a request with the metadata line and the text to print, piece by piece.
Handler = Callable[[Request], Awaitable[tuple[dict[str, Any], AsyncIterator[str]]]]
MAX_REQUEST = 1 << 20
# No caller can hold the daemon: a request must arrive within REQUEST_S of connecting, and a
# reader that takes nothing for WRITE_S is dropped (it would hold a listing slot and the
# answer's memory). Past MAX_CONNECTIONS open at once, see `Connections`.
REQUEST_S = 5.0
WRITE_S = 5.0
MAX_CONNECTIONS = 128


class Connections:
    """The connections of one server (the control socket, the metrics port). At most `most`
    are open at once: past it, the oldest that has not sent its request yet is closed for each
    new one, so idle connections can use up neither the file descriptors that runs need nor
    the turn of a caller that asks at once. Each is served to its end, even at shutdown."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._open: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}  # and who serves it
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # oldest first

    async def serve(
        self, writer: asyncio.StreamWriter, answer: Callable[[], Awaitable[None]], what: str
    ) -> None:
        """Serve a connection with `answer`, then close it. A caller that goes away or is too
        slow (to ask, see `waiting`; to read, WRITE_S) ends its turn quietly."""
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task
        if len(self._open) > self.most and self._waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        try:
            await answer()
            async with asyncio.timeout(WRITE_S):
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the caller went away, or was too slow: its turn is over
        except Exception:
            log.exception("%s request failed", what)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(WRITE_S):
                    await writer.wait_closed()
            self._open.pop(writer, None)

    @contextlib.contextmanager
    def waiting(self, writer: asyncio.StreamWriter) -> Iterator[None]:
        """While the connection's request has not arrived: it may be closed for a newer one."""
        self._waiting[writer] = None
        try:
            yield
        finally:
            self._waiting.pop(writer, None)

    async def close(self, grace: float) -> None:
        """Let every connection go: those still waiting to send their request at once, the
        others after `grace` to finish their answers; returns once each is served to the end.
        (A connection's task that is cancelled instead, as the event loop does to what is
        left when it closes, makes asyncio 3.11 log a traceback for it.)"""
        for writer in list(self._waiting):
            writer.transport.abort()
        for _ in range(2):
            if self._open:
                await asyncio.wait(set(self._open.values()), timeout=grace)
            for writer in list(self._open):
                writer.transport.abort()


class ControlServer:
    """Serves control requests on a unix socket."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        access: Access | None = None,
        on_denied: Callable[[Peer | None], None] | None = None,
    ) -> None:
        self.path = path
        self._handler = handler
        self.access = access or Access(None)
        self._on_denied = on_denied
        self.accept_errors = AcceptErrors()
        self._server: asyncio.AbstractServer | None = None
        self._inode = 0  # of the socket file it made, to tell when that is gone
        self._connections = Connections(MAX_CONNECTIONS)

    async def start(self) -> None:
        if self.path.is_dir() and not self.path.is_symlink():
            raise OddFile(self.path, "a directory", "remove it; the daemon makes its own")
        if self.path.exists() or self.path.is_symlink():
            log.info("replacing a stale control socket at %s", self.path)
            self.path.unlink()
        # Bind with a umask so the socket is never reachable by others, not even briefly.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino
        self.access.open_up(self.path.parent, self.path)
        self.accept_errors.install(asyncio.get_running_loop())

    async def restore(self) -> None:
        """Make the socket again if its file was removed or replaced (a cleaner of old files,
        a hand): callers could not reach the daemon, though it ran on."""
        if self._server is None:
            return
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                return
        log.warning("the control socket %s was gone; making it again", self.path)
        self._server.close()
        await self.start()

    def allow(self, access: Access) -> None:
        """Who may connect from now on (a reload): the socket opened to the new group, or
        the daemon's user's alone again."""
        self.access = access
        if access.group is not None:
            access.open_up(self.path.parent, self.path)  # says itself what went wrong
            return
        try:
            os.chmod(self.path, 0o600)
        except OSError as exc:  # who may connect is still checked at each call (`access`)
            log.error("cannot make %s the daemon user's alone: %s", self.path, exc.strerror or exc)

    async def close(self) -> None:
        """Stop accepting; remove the socket file. Answers under way go on (see `finish`)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def finish(self) -> None:
        """After `close`: the answers under way get WRITE_S to end, then every caller is let go."""
        await self._connections.close(WRITE_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connections.serve(writer, lambda: self._answer(reader, writer), "control")

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with self._connections.waiting(writer):
                async with asyncio.timeout(REQUEST_S):
                    raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            # The rest is read and dropped (for as long as a request may take), so the caller
            # is not cut off mid-send and gets to read why.
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(REQUEST_S):
                    while (dropped := await reader.read(1 << 16)) and b"\n" not in dropped:
                        pass
            writer.write(_error(f"the request is over {MAX_REQUEST} bytes", "bad-request"))
            return
        except asyncio.IncompleteReadError as exc:
            raw = exc.partial  # no newline: the request ends with the connection
        peer = peer_of(writer.get_extra_info("socket"))
        if not self.access.allows(peer):
            if self._on_denied is not None:
                self._on_denied(peer)
            who = peer.name if peer is not None else "this user"
            writer.write(
                _error(f"{who} may not use this scheduler (see control.group)", "permission", 3)
            )
            return
        assert peer is not None
        try:
            data = json.loads(raw)
            request = Request.from_wire(data)._replace(actor=peer.actor, pid=peer.pid)
        except (ValueError, RecursionError) as exc:
            writer.write(_error(f"bad request: {exc}", "bad-request"))
            return
        meta, body = await self._handler(request)
        sealed = data.get("sealed") is True  # the caller knows the marks (bot.client)
        try:
            # The first piece before the metadata: a database that fails before a word of a
            # streamed answer is said gets an answer of its own, not one cut short.
            try:
                first = await anext(aiter(body), "")
            except StoreError as exc:
                writer.write(_error(str(exc), exc.kind, EXIT_STATE))
                return
            writer.write(json.dumps((meta | {"sealed": True}) if sealed else meta).encode())
            writer.write(b"\n" + first.encode())
            try:
                async for chunk in body:
                    writer.write(chunk.encode())
                    async with asyncio.timeout(WRITE_S):
                        await writer.drain()
            except LateFailure:  # the answer has ended itself and said why
                writer.write(b"\n" + (FAILED_END if sealed else b""))
                return
            if sealed:
                writer.write(END)
        finally:
            # Closed at once if the reader went away, so what it holds is let go now.
            if isinstance(body, AsyncGenerator):
                await body.aclose()


def _error(message: str, kind: str, code: int = 2) -> bytes:
    return (
        json.dumps({"err": message + "\n", "exit": code, "kind": kind, "error": message}).encode()
        + b"\n"
    )


class AcceptErrors:
    """The loop's exception handler, quiet about running out of file descriptors.

    asyncio reports a failed `accept()` (EMFILE, ENFILE) with a traceback, and retries every
    second: thousands of tracebacks while the machine is short of descriptors. This logs one
    line, then at most one a minute while it goes on, with how often it happened meanwhile;
    anything else goes to asyncio's default handler."""

    MESSAGE = "socket.accept() out of system resource"
    EVERY_S = 60.0

    def __init__(self) -> None:
        self._reported = -self.EVERY_S
        self._since = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self._handle)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self._retry_on_closed(loop, context):
            return
        if context.get("message") != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        self._since += 1
        now = time.monotonic()
        if now - self._reported < self.EVERY_S:
            return
        more = f" ({self._since - 1} more time(s) in the last minute)" if self._since > 1 else ""
        sock = context.get("socket")  # the control socket's path, or the metrics port's address
        where = f" on {sock.getsockname()}" if sock is not None else ""
        log.error(
            "cannot accept connections%s: %s; retrying every second%s",
            where,
            context.get("exception"),
            more,
        )
        self._reported, self._since = now, 0

    @staticmethod
    def _retry_on_closed(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> bool:
        """asyncio's retry to accept, a second after running out, on a socket closed since:
        it fails (no descriptor) with nothing left to retry for. One per connection that
        could not be taken in, each a traceback, while a stopping daemon waits for its runs."""
        handle = context.get("handle")
        retry = getattr(loop, "_start_serving", None)  # asyncio's own; where it is not, None
        return (
            retry is not None
            and getattr(handle, "_callback", None) == retry
            and isinstance(context.get("exception"), ValueError)
        )
