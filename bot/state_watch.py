"""The state directory kept whole under a running daemon.

When its database, lock file or control socket is removed, or the directory itself (a cleaner
of old files, or `rm -rf` by a hand that took the daemon for stopped), the daemon puts each
back at once: commands still find it, neither a second daemon nor a foreground run can start
beside it, and nothing committed is lost. Without this, the database came back only at the
next write (an hourly task's: within the hour), the socket only at a reload, and with the
directory gone, neither could: every write failed until someone made the directory again,
and a command run meanwhile found no daemon and made a database of its own.

What is replaced by a rename rather than removed is not noticed here: the database is put
back before its next write (`Store._write`), the socket at a SIGHUP, which the commands that
find it gone suggest, and `moltsched reload` sends. The lock on the directory itself still
tells that a daemon runs (see bot.lock).

Linux inotify, through ctypes: nothing wakes the daemon until something happens there.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import struct
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.client import LOCK_NAME, SOCKET_NAME
from bot.timed import TimedLoop
from scheduler_core.errors import StoreError, make_state_dir

if TYPE_CHECKING:
    from bot.control import ControlServer
    from bot.lock import StateLock
    from scheduler_core.clock import Clock
    from scheduler_core.store import Store

log = logging.getLogger(__name__)

# inotify(7)
_IN_MOVED_FROM, _IN_DELETE, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x40, 0x200, 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR = 0x4000, 0x8000, 0x1000000
_WATCHED = _IN_MOVED_FROM | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR
# The directory itself gone (or its watch), or events lost: look at everything.
_LOOK = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED | _IN_Q_OVERFLOW
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then the name, NUL-padded


class StateWatch(TimedLoop):
    """Watches the state directory; what is removed from it is put back (see the module)."""

    def __init__(self, clock: Clock, lock: StateLock, server: ControlServer, store: Store) -> None:
        super().__init__(clock)
        self.lock = lock
        self.server = server
        self.store = store
        self.state_dir = lock.path.parent
        self._ours = {LOCK_NAME.encode(), SOCKET_NAME.encode(), store.path.name.encode()}
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = -1
        self._unwatched = False  # the kernel refused the watch (said once)

    async def run(self) -> None:
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            reason = os.strerror(ctypes.get_errno())
            log.warning(
                "cannot watch %s (%s): what is removed from it comes back when used",
                self.state_dir,
                reason,
            )
            return
        self._fd = fd
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._events)
        try:
            await super().run()
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def _events(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        at = 0
        while at + _EVENT.size <= len(data):
            _, mask, _, length = _EVENT.unpack_from(data, at)
            name = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
            at += _EVENT.size + length
            if mask & _LOOK or name in self._ours:
                self.wake()

    async def step(self) -> datetime | None:
        """Put back what is missing (nothing, most times: at start, or after a removal of
        something else that was ours), and watch the directory now at the path."""
        try:
            if not self.state_dir.is_dir():
                log.error("the state directory %s was removed; making it again", self.state_dir)
            make_state_dir(self.state_dir)
            watching = self._watch()
            retaken = self.lock.retake()
            if retaken is not None:
                said = "took it again" if retaken else "another process holds it now"
                log.error("the lock file %s was removed; %s", self.lock.path, said)
            await self.server.restore()
            await self.store.keep()
        except (OSError, StoreError) as exc:
            log.error("cannot put back what was removed from %s: %s", self.state_dir, exc)
            return self.clock.now() + timedelta(seconds=self.RETRY_S)
        return None if watching else self.clock.now() + timedelta(seconds=self.RETRY_S)

    def _watch(self) -> bool:
        """Watch the directory now at the path; False when the kernel will not, said once (no
        watch left for this user: something else on the machine, an IDE server or Syncthing,
        took them all). Then what is removed comes back only when used, as without inotify."""
        if self._libc.inotify_add_watch(self._fd, bytes(self.state_dir), _WATCHED) >= 0:
            if self._unwatched:
                log.info("watching %s again", self.state_dir)
            self._unwatched = False
            return True
        if not self._unwatched:
            code = ctypes.get_errno()
            raise_it = "; raise fs.inotify.max_user_watches" if code == errno.ENOSPC else ""
            log.warning(
                "cannot watch %s (%s%s): what is removed from it comes back when used; "
                "trying again every %.0f s",
                self.state_dir,
                os.strerror(code),
                raise_it,
                self.RETRY_S,
            )
        self._unwatched = True
        return False
