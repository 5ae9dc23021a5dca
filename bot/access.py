"""Who may use the control socket, as the kernel tells it (`SO_PEERCRED`), never as a client
claims it.

By default only the daemon's own user (and root) may: the socket is 0600. With `control.group`
the socket becomes 0660 in that group and the state directory gets group search permission,
so members (the Moltbot agent's user) can connect; the daemon checks every caller again
against the group, so a socket made reachable by mistake still admits nobody else.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from bot.failure import EXIT_STATE, Failure
from scheduler_core.errors import make_state_dir, user_name
from scheduler_core.record import Record

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Peer(Record):
    """The process at the other end of a unix socket."""

    pid: int
    uid: int
    gid: int

    @property
    def name(self) -> str:
        return user_name(self.uid)

    @property
    def actor(self) -> str:
        """How the action log names it: `cli:alice`."""
        return f"cli:{self.name}"


def peer_of(sock: Any) -> Peer | None:
    """The credentials the kernel recorded when the peer connected (`sock` is a socket, or
    the socket asyncio's transport gives)."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    return Peer(*_UCRED.unpack(raw))


class Access:
    """The rule: root, the daemon's own user, and members of `group` (if one is set)."""

    def __init__(self, group: str | None) -> None:
        self.group = group

    def allows(self, peer: Peer | None) -> bool:
        if peer is None:
            return False
        if peer.uid in (0, os.geteuid()):
            return True
        if self.group is None:
            return False
        try:
            gid = grp.getgrnam(self.group).gr_gid
            entry = pwd.getpwuid(peer.uid)
        except KeyError:
            return False
        # Asked now, not cached: removing someone from the group takes effect at once.
        return gid == peer.gid or gid in os.getgrouplist(entry.pw_name, entry.pw_gid)

    def open_up(self, state_dir: Path, sock: Path) -> None:
        """Let the group reach the socket: the socket 0660 in the group, the state directory
        searchable (not readable) by it. Logs what to do when the daemon may not."""
        if self.group is None:
            return
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            log.error("control.group %r does not exist; only this user can use the CLI", self.group)
            return
        try:
            os.chown(sock, -1, gid)
            os.chmod(sock, 0o660)
            info = state_dir.stat()
            if info.st_gid != gid:
                os.chown(state_dir, -1, gid)
            os.chmod(state_dir, stat.S_IMODE(info.st_mode) | stat.S_IXGRP)
        except OSError as exc:
            me = user_name(os.geteuid())
            log.error(
                "cannot open the control socket to group %s (%s); only %s can use the CLI. "
                "Add %s to the group (usermod -aG %s %s, or SupplementaryGroups=%s in the unit)",
                self.group,
                exc.strerror or exc,
                me,
                me,
                self.group,
                me,
                self.group,
            )
            return
        log.info("members of group %s may use the CLI through %s", self.group, sock)


def private_state(state_dir: Path) -> None:
    """Make the state directory, its user's alone (0700): the database holds what tasks
    printed, their checkpoints and who asked for what. One that others may read (made before,
    or by hand) is closed to them; what its group may do stays (see `control.group`). systemd's
    StateDirectoryMode=0700 does the same for a unit."""
    make_state_dir(state_dir)
    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & 0o007:
        os.chmod(state_dir, mode & ~0o007)  # a setgid bit, say, stays
        log.info("closed the state directory %s to other users (it was open to them)", state_dir)


def runs_as_owner(state_dir: Path) -> None:
    """A run in the foreground (no daemon) runs the task as whoever starts it; so only the
    state directory's owner may, the user the daemon runs tasks as. Root's run would leave
    root's files where the owner's next runs fail on them. Failure (exit 3) for anyone else."""
    try:
        owner = state_dir.stat().st_uid
    except FileNotFoundError:
        return  # made by this run, as its own
    if owner == os.geteuid():
        return
    name = user_name(owner)
    raise Failure(
        f"the tasks of {state_dir} run as {name}, and this is {user_name(os.geteuid())}: start "
        f"the daemon, which runs them as {name}, or run this as {name} "
        f"(sudo -u {name} moltsched ...)",
        "permission",
        EXIT_STATE,
    )
