"""The CLI's side of the control socket: one JSON request per connection; the reply is a JSON
line of metadata, then the text to print, which is written out as it arrives (see
`bot.control`), so `chat run:x` shows its acknowledgement before the result.

The standard library only (and `bot.failure`, which is the same), so a CLI command that the
daemon answers starts and finishes fast; `ask_where_it_ran` alone looks at the cache of
loaded configurations, on a path taken only after the file named a new state directory.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
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
# The mark after an answer the database failed part way through: it has said so itself, in
# its form (see `commands.streams`); the command exits 3.
FAILED_END = b"\1"
CUT_SHORT = (
    "moltsched: the database failed before the answer was complete; `moltsched doctor` says how\n"
)


# While an answer is awaited: how often to look whether the daemon is stopped, and after how
# long a silence to ask it on a second connection whether it still answers at all (a `run`
# may take hours, and says nothing meanwhile), giving it HUNG_S to.
LOOK_S = 1.0
PING_AFTER_S = 15.0
HUNG_S = 30.0
_PING = {"command": {"verb": "ping"}, "json": False}


class DaemonGone(Exception):
    """The daemon accepted the request but went away before answering."""


class NotAnswering(Exception):
    """A daemon holds the control socket but does not answer: stopped (Ctrl-Z in its
    terminal, SIGSTOP), or its loop stuck. systemd's watchdog restarts a stuck one; without
    systemd nothing would, and every command would wait for ever."""


class ReaderGone(Exception):
    """Whoever reads this process's output went away (a pipe into `head` that had enough)."""


def request(
    state_dir: Path,
    payload: dict[str, Any],
    out: BinaryIO | None = None,
    *,
    patience: float | None = None,
) -> dict[str, Any] | None:
    """Send `payload` to the daemon and copy its answer to `out`; None if no daemon listens.

    Returns the metadata (`exit`, `err`, ...). Without `out` the text is returned as `out`.
    NotAnswering if the daemon is stopped, or (`patience`) has said nothing for that long;
    without `patience`, a silence is waited out as long as the daemon answers a ping.
    """
    path = state_dir / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # A stopped daemon's backlog fills up, and a connect to it would then wait too.
        sock.settimeout(HUNG_S if patience is None else patience)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None
        except TimeoutError:
            raise NotAnswering(
                f"the daemon takes no more connections on {path}: it is stopped or stuck"
            ) from None
        except OSError as exc:
            if len(str(path)) > 100:
                raise OSError(f"the socket path is too long for a unix socket: {path}") from exc
            raise
        daemon = _Daemon(sock, state_dir, patience)
        daemon.look()  # a request to a stopped daemon would be carried out when it goes on
        sock.sendall(json.dumps(payload | {"sealed": True}).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        head = bytearray()
        while b"\n" not in head:
            chunk = daemon.recv(1 << 16)
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
            data = daemon.recv(1 << 20)
            if not data:
                break
        if sealed and held == FAILED_END:
            meta |= {"exit": EXIT_STATE, "err": CUT_SHORT}
        elif sealed and held != END:
            raise DaemonGone("the daemon went away before it finished answering")
    finally:
        sock.close()
    if out is None:
        meta["out"] = kept.decode()
    return meta


class _Daemon:
    """The daemon at the other end of a connection, watched while its answer is awaited."""

    def __init__(self, sock: socket.socket, state_dir: Path, patience: float | None) -> None:
        self.sock = sock
        self.state_dir = state_dir
        self.patience = patience
        self.pid = _peer_pid(sock)
        sock.settimeout(LOOK_S if patience is None else patience)

    def recv(self, size: int) -> bytes:
        silent = time.monotonic()
        while True:
            try:
                return self.sock.recv(size)
            except TimeoutError:
                if self.patience is not None:
                    raise NotAnswering(
                        f"{self._named()} has not answered in {self.patience:g} s"
                    ) from None
            self.look()
            if time.monotonic() - silent >= PING_AFTER_S:
                try:  # refused (None): it is stopping, and this answer comes as it does
                    request(self.state_dir, _PING, patience=HUNG_S)
                except NotAnswering:
                    raise NotAnswering(
                        f"{self._named()} has not answered for {PING_AFTER_S + HUNG_S:g} s: "
                        "it is stuck (systemd's watchdog restarts it; without systemd, "
                        "restart it). What was asked may still be done when it goes on"
                    ) from None
                silent = time.monotonic()

    def look(self) -> None:
        """NotAnswering if the daemon is stopped."""
        if self.pid is not None and _state(self.pid) in ("T", "t"):
            raise NotAnswering(
                f"{self._named()} is stopped (Ctrl-Z in its terminal, or SIGSTOP): "
                f"`kill -CONT {self.pid}` (or `fg` in its terminal) lets it go on"
            )

    def _named(self) -> str:
        return "the daemon" if self.pid is None else f"the daemon (pid {self.pid})"


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process listening at the other end (Linux; None elsewhere)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    return pid or None


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, D, T, t, Z...); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def ask(state_dir: Path, asked: Request) -> int | None:
    """Have the daemon answer `asked`, printing as the answer arrives; None if no daemon
    is up. Failure if it cannot be reached, refuses, or goes away."""
    try:
        reply = request(state_dir, asked.to_wire(), sys.stdout.buffer)
    except DaemonGone as exc:
        # What was asked may have been a run, and it was cut short: as an interrupted run.
        raise Failure(str(exc), "daemon-gone", 1) from None
    except NotAnswering as exc:
        raise Failure(str(exc), "unavailable", EXIT_STATE) from None
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


def ask_unreadable(config_path: Path, asked: Request) -> int | None:
    """`ask` the daemon that runs `config_path`, a file we may not read (the agent need not:
    its tasks' `env:` may hold secrets), found where such a file keeps its state by default
    (`state_dir_for`, or beside it), when it says it runs this very file. None if none does."""
    from config.locate import state_dir_for

    wanted = str(config_path.resolve())
    closed = None
    for place in dict.fromkeys(
        [state_dir_for(config_path), config_path.resolve().parent / "state"]
    ):
        try:
            found = request(place, _PING, patience=HUNG_S)
        except PermissionError:  # the place refused us, not a folder above it (its file's)
            if closed is None and os.access(place.parent, os.X_OK):
                closed = place
            continue
        except (NotAnswering, DaemonGone, OSError):
            continue
        if found is not None and found.get("config") == wanted:
            return ask(place, asked)
    if closed is not None:  # not "no daemon": one may be there, for others than us
        raise Failure(
            f"{config_path} is not yours to read, and {closed}, where such a file keeps its "
            "state, is closed to you: its daemon answers the members of its control.group",
            "permission",
            EXIT_STATE,
        )
    return None


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
