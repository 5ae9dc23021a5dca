"""The state directory's lock: the daemon, or a foreground `moltsched run`, holds it alone.

That is what makes "a task never runs twice at once" hold across processes: whoever runs tasks
holds `STATE_DIR/moltsched.lock` exclusively (flock, released by the kernel if the holder dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path

from bot.client import LOCK_NAME


class StateLock:
    """An exclusive flock on the state directory's lock file."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if someone else holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return True

    async def acquire(self) -> None:
        """Wait for the lock (in a thread, so the event loop stays free)."""
        if self.try_acquire():
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
