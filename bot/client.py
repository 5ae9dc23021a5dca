"""The CLI's side of the control socket: one JSON request per connection; the reply is a JSON
line of metadata, then the raw text to print (see `bot.control`).

Standard library only, so a CLI command that the daemon answers starts and finishes fast.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
LOCK_NAME = "moltsched.lock"


class DaemonGone(Exception):
    """The daemon accepted the request but went away before answering."""


def request(state_dir: Path, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Send `payload` to the daemon; None if no daemon is listening there."""
    path = state_dir / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None
        except OSError as exc:
            if len(str(path)) > 100:
                raise OSError(f"the socket path is too long for a unix socket: {path}") from exc
            raise
        sock.sendall(json.dumps(payload).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    finally:
        sock.close()
    data = b"".join(chunks)
    head, newline, out = data.partition(b"\n")
    if not newline:
        raise DaemonGone("the daemon closed the connection without answering")
    reply: dict[str, Any] = json.loads(head)
    reply["out"] = out.decode()
    return reply
