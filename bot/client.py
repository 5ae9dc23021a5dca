"""The CLI's side of the control socket: one JSON request per connection; the reply is a JSON
line of metadata, then the text to print, which is written out as it arrives (see
`bot.control`), so `chat run:x` shows its acknowledgement before the result.

The standard library only (and `bot.failure`, which is the same), so a CLI command that the
daemon answers starts and finishes fast; `ask_where_it_ran` alone looks at the cache of
loaded configurations, on a path taken only after the file named a new state directory.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bot.failure import EXIT_CANCELLED, EXIT_STATE, Failure

if TYPE_CHECKING:
    from commands.command import Request

SOCKET_NAME = "control.sock"
LOCK_NAME = "moltsched.lock"
# The mark after the last byte of a whole answer, for a caller that asks for it (`sealed`):
# an answer cut short (the daemon killed, a reader dropped) is then told from a short one.
END = b"\0"


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
        sock.sendall(json.dumps(payload | {"sealed": True}).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        head = bytearray()
        while b"\n" not in head:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise DaemonGone("the daemon closed the connection without answering")
            head += chunk
        line, _, data = bytes(head).partition(b"\n")
        meta: dict[str, Any] = json.loads(line)
        sealed = meta.pop("sealed", False) is True  # a daemon from before the mark sends none
        kept, held = bytearray(), b""
        while True:
            if sealed and data:  # the last byte may be the end mark: printed if more follows
                data, held = held + data[:-1], data[-1:]
            if data:
                if out is None:
                    kept += data
                else:
                    try:
                        out.write(data)
                        out.flush()
                    except BrokenPipeError:
                        raise ReaderGone from None
            data = sock.recv(1 << 20)
            if not data:
                break
        if sealed and held != END:
            raise DaemonGone("the daemon went away before it finished answering")
    finally:
        sock.close()
    if out is None:
        meta["out"] = kept.decode()
    return meta


def ask(state_dir: Path, asked: Request) -> int | None:
    """Have the daemon answer `asked`, printing as the answer arrives; None if no daemon
    is up. Failure if it cannot be reached, refuses, or goes away."""
    try:
        reply = request(state_dir, asked.to_wire(), sys.stdout.buffer)
    except DaemonGone as exc:
        # What was asked may have been a run, and it was cut short: as an interrupted run.
        raise Failure(str(exc), "daemon-gone", 1) from None
    except KeyboardInterrupt:  # Ctrl-C: what the daemon does goes on without us
        task = getattr(asked.command, "task", None)
        going = f"; {task} goes on in the daemon (`moltsched status {task}` follows it)"
        raise Failure(f"interrupted{going if task else ''}", "cancelled", EXIT_CANCELLED) from None
    except PermissionError:
        sock = state_dir / SOCKET_NAME
        raise Failure(
            f"no permission to use {sock}; run this as the daemon's user, or as a member of "
            "the group the configuration's control.group names",
            "permission",
            EXIT_STATE,
        ) from None
    except OSError as exc:
        raise Failure(f"cannot reach the daemon: {exc}", "unavailable", EXIT_STATE) from None
    if reply is None:
        return None
    if "kind" in reply:  # refused before any answer (bot.control)
        raise Failure(str(reply.get("error", "")), str(reply["kind"]), int(reply.get("exit", 2)))
    sys.stderr.write(reply.get("err", ""))
    return int(reply.get("exit", 1))


def ask_where_it_ran(config_path: Path, named: Path | None, asked: Request) -> int | None:
    """`ask` the state directory `config_path` named at its last good load (config.cache),
    if it names another, `named`, now: a daemon started from the file runs there until it is
    restarted. None if it named the same, or if no daemon answers there."""
    from config import cache
    from config.loader import AppConfig

    kept = cache.last(config_path)
    before = kept.settings.state_dir if isinstance(kept, AppConfig) else None
    if named is None or before is None or before == named:
        return None
    answered = ask(before, asked)
    if answered == 0:
        print(
            f"moltsched: answered by the daemon on {before}; {config_path} names {named} now, "
            "which takes a restart of the daemon",
            file=sys.stderr,
        )
    return answered
