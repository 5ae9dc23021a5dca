"""The CLI's side of the control socket: one JSON request per connection; the reply is a JSON
line of metadata, then the text to print, which is written out as it arrives (see
`bot.control`), so `chat run:x` shows its acknowledgement before the result.

Standard library only, so a CLI command that the daemon answers starts and finishes fast.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, BinaryIO

SOCKET_NAME = "control.sock"
LOCK_NAME = "moltsched.lock"


class DaemonGone(Exception):
    """The daemon accepted the request but went away before answering."""


class ReaderGone(Exception):
    """Whoever reads this process's output went away (a pipe into `head` that had enough)."""


def request(
    state_dir: Path, payload: dict[str, Any], out: BinaryIO | None = None
) -> dict[str, Any] | None:
    """Send `payload` to the daemon and copy its answer to `out`; None if no daemon listens.

    Returns the metadata (`exit`, `err`, ...). Without `out` the text is returned as `out`.
    """
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
        head = bytearray()
        while b"\n" not in head:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise DaemonGone("the daemon closed the connection without answering")
            head += chunk
        line, _, rest = bytes(head).partition(b"\n")
        meta: dict[str, Any] = json.loads(line)
        kept = bytearray()
        while True:
            if rest:
                if out is None:
                    kept += rest
                else:
                    try:
                        out.write(rest)
                        out.flush()
                    except BrokenPipeError:
                        raise ReaderGone from None
            rest = sock.recv(1 << 20)
            if not rest:
                break
    finally:
        sock.close()
    if out is None:
        meta["out"] = kept.decode()
    return meta
