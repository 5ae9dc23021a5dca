"""The daemon's control socket: `STATE_DIR/control.sock`, mode 0600, one request per connection.

A request is one JSON line (`{"command": {...}, "json": bool, "actor": "cli:alice"}`). The reply
is one JSON line of metadata (`{"err": text-for-stderr, "exit": code, ...}`) followed by the
text to print on stdout, raw, up to the end of the connection (so a 3 MB status is not escaped
into a JSON string and parsed again). The daemon holds the state lock before it binds, so a
socket file found at start-up is stale (its daemon crashed) and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A handler answers a request with the metadata line and the text to print, piece by piece.
Handler = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], AsyncIterator[str]]]]
MAX_REQUEST = 1 << 20


class ControlServer:
    """Serves control requests on a unix socket."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            log.info("replacing a stale control socket at %s", self.path)
            self.path.unlink()
        # Bind with a umask so the socket is never reachable by others, not even briefly.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop accepting; remove the socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await reader.readline()
            try:
                request = json.loads(raw) if len(raw) <= MAX_REQUEST else None
            except ValueError:
                request = None
            if not isinstance(request, dict):
                writer.write(json.dumps({"err": "bad request\n", "exit": 2}).encode() + b"\n")
            else:
                meta, body = await self._handler(request)
                writer.write(json.dumps(meta).encode() + b"\n")
                try:
                    async for chunk in body:
                        writer.write(chunk.encode())
                        await writer.drain()
                finally:
                    # Closed at once if the reader went away, so what it holds is let go now.
                    if isinstance(body, AsyncGenerator):
                        await body.aclose()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("control request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
