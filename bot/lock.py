"""The state directory's lock: the daemon, or a foreground `moltsched run`, holds it alone.

That is what makes "a task never runs twice at once" hold across processes: whoever runs tasks
holds `STATE_DIR/moltsched.lock` exclusively (flock, released by the kernel if the holder dies),
and the state directory itself too. A lock file can be removed while it is held (a cleaner of
old files under /tmp, someone who took it for a stale one), the control socket with it; the
directory's lock still tells then. The daemon puts back what was removed, the directory
itself too, and takes the lock again (`StateLock.retake`, see bot.state_watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from bot.client import LOCK_NAME, SOCKET_NAME, NotAnswering
from scheduler_core import procs
from scheduler_core.errors import OddFile, make_state_dir, what_it_is

log = logging.getLogger(__name__)

# What a daemon writes beside its pid in the lock file (`StateLock.mark`); a foreground run
# writes `run`. RUNNING is `daemon`, as daemons before these phases wrote it.
STARTING, RUNNING, STOPPING = "starting", "daemon", "stopping"
_PHASES = (STARTING, RUNNING, STOPPING)
_MAKES_ITS_OWN = "remove it; moltsched makes its own"


def is_stopping(pid: int) -> str:
    return (
        f"the daemon (pid {pid}) is stopping: its runs get their grace first; ask again once "
        "it has exited, or started again"
    )


class OtherDaemon(Exception):
    """Another daemon runs on this state directory."""


async def lock_for_daemon(
    state_dir: Path, stop: asyncio.Event, answers: Callable[[], object]
) -> StateLock | None:
    """The state lock, for a daemon: at once, or once a foreground `moltsched run` has ended;
    None if told to stop meanwhile. OtherDaemon if a daemon runs here: one that holds the
    lock, or one whose lock file was removed (`answers`: something true if a daemon answers
    on the control socket). Without that look, a removed lock file would let two daemons
    run every task."""
    lock = StateLock(state_dir, STARTING)
    try:
        return await _lock_for_daemon(lock, stop, answers)
    except NotAnswering as exc:  # a daemon is there, stopped or stuck
        lock.release()
        raise OtherDaemon(f"a daemon is already running on {state_dir}, but {exc}") from None


async def _lock_for_daemon(
    lock: StateLock, stop: asyncio.Event, answers: Callable[[], object]
) -> StateLock | None:
    state_dir = lock.path.parent
    if lock.try_acquire():
        if await asyncio.to_thread(answers):
            lock.release()
            raise OtherDaemon(
                f"a daemon is already running on {state_dir} (though its lock file "
                f"{lock.path.name} had been removed; restart it to put the file back)"
            )
        return lock
    if await asyncio.to_thread(answers):
        gone = "" if lock.file_held() else f" (though its lock file {lock.path.name} was removed)"
        raise OtherDaemon(f"a daemon is already running on {state_dir}{gone}")
    found = lock.daemon()
    if found is not None:
        other, phase = found
        if phase == STOPPING:
            raise OtherDaemon(is_stopping(other))
        if phase == STARTING:
            raise OtherDaemon(f"a daemon (pid {other}) is starting on {state_dir}")
        raise OtherDaemon(
            f"a daemon (pid {other}) is already running on {state_dir}, without its control "
            "socket: `moltsched reload` makes it again"
        )
    log.info("waiting for a foreground `moltsched run` to finish before starting")
    acquired = asyncio.ensure_future(lock.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({acquired, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not acquired.done():
        acquired.cancel()
        return None
    return lock


class StateLock:
    """An exclusive flock on the state directory's lock file."""

    def __init__(self, state_dir: Path, role: str = "run") -> None:
        self.path = state_dir / LOCK_NAME
        self.role = role  # written beside the pid: `daemon`, or `run` (the CLI in the foreground)
        self._fd: int | None = None
        self._dir_fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if someone else holds it."""
        make_state_dir(self.path.parent)
        fd = self._file_locked()
        if fd is None:
            return False
        dir_fd = _take_dir(self.path.parent, blocking=False)
        if dir_fd is None:  # held by one whose lock file was removed
            os.close(fd)
            return False
        self._took(fd, dir_fd)
        return True

    def retake(self) -> bool | None:
        """Take it again on what is at its place now, when its file or the state directory
        was removed under the daemon that holds it (see bot.state_watch): None if both are
        still the ones held, False if another took them meanwhile."""
        assert self._fd is not None and self._dir_fd is not None
        new_dir = _moved(self._dir_fd, self.path.parent)
        if not (new_dir or _moved(self._fd, self.path)):
            return None
        fd = self._file_locked()
        if fd is None:
            return False
        dir_fd = _take_dir(self.path.parent, blocking=False) if new_dir else self._dir_fd
        if dir_fd is None:
            os.close(fd)
            return False
        for old in {self._fd, self._dir_fd} - {dir_fd}:
            os.close(old)  # what it locked is gone from the path
        self._took(fd, dir_fd)
        return True

    def _file_locked(self) -> int | None:
        """The lock file, opened (made if need be) and flocked; None if another holds it."""
        fd = self._open(os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _open(self, flags: int) -> int:
        """The lock file, opened without waiting: a FIFO in its place, opened to be read,
        would wait for a writer. OddFile if it is none."""
        try:
            fd = os.open(self.path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except IsADirectoryError:
            raise OddFile(self.path, "a directory", _MAKES_ITS_OWN) from None
        found = what_it_is(os.fstat(fd).st_mode)
        if found is not None:
            os.close(fd)
            raise OddFile(self.path, found, _MAKES_ITS_OWN)
        return fd

    def _took(self, fd: int, dir_fd: int) -> None:
        """The lock is ours: say who holds it, for `holder`."""
        self._fd, self._dir_fd = fd, dir_fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.role}\n".encode())

    async def acquire(self) -> None:
        """Wait for the lock (in a thread, so the event loop stays free).

        Cancelling gives up the wait: the thread is a daemon thread, so a process that stops
        waiting can still exit, and the lock it might take later is released with it."""
        if self.try_acquire():
            return
        fd = self._open(os.O_RDWR | os.O_CREAT)
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()

        dir_fd: list[int] = []

        def wait() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            got = _take_dir(self.path.parent, blocking=True)
            dir_fd.append(-1 if got is None else got)
            loop.call_soon_threadsafe(_settle, taken)

        threading.Thread(target=wait, name="lock", daemon=True).start()
        try:
            await taken
        except BaseException:
            taken.cancel()  # the thread keeps the fds: they are closed with the process
            raise
        self._took(fd, dir_fd[0])

    def holder(self) -> tuple[int, str] | None:
        """The pid and role its holder wrote; None if unknown. Out of date if none holds it."""
        try:
            fd = self._open(os.O_RDONLY)
        except OSError:
            return None
        try:
            pid, role = os.read(fd, 64).split()[:2]
            return int(pid), role.decode()
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def daemon(self) -> tuple[int, str] | None:
        """The daemon that holds it now, if one does: its pid, and STARTING, RUNNING or
        STOPPING (see `mark`). Only a held lock's file is believed: a stopped daemon's still
        names a pid, which another process may have now. A daemon whose lock file was
        removed is found by its lock on the directory."""
        holder = self.holder()
        if holder is not None and holder[1] in _PHASES and self.file_held():
            return holder
        if self.file_held():
            return None  # a foreground run holds it
        pid = _dir_holder(self.path.parent)
        if pid is None or b"daemon" not in _cmdline(pid):
            return None
        return pid, RUNNING

    def mark(self, phase: str) -> None:
        """Say in the lock file what this daemon does, for whoever finds no control socket
        to ask: STARTING from taking the lock until the socket is open, RUNNING, then
        STOPPING from the stop until the exit."""
        self.role = phase
        if self._fd is not None and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, f"{os.getpid()} {phase}\n".encode(), 0)

    def file_held(self) -> bool:
        """Whether someone holds it now (found by trying to take it, and letting go)."""
        try:
            fd = self._open(os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # which lets go of it, if it was taken
        return False

    def unheld(self) -> bool:
        """Whether no one holds it, no daemon and no foreground run (one whose lock file was
        removed included): then no run is under way, whatever the database says."""
        return not self.file_held() and not _dir_held(self.path.parent)

    def never_free(self) -> tuple[str, str] | None:
        """Why waiting for it now would wait for ever, and that failure's `kind`: a daemon
        holds it whose control socket is gone, or a foreground run that is an ancestor of
        this process (its task asked for a run). None if it will come free."""
        found = self.daemon()
        if found is not None and found[1] == STOPPING:
            return is_stopping(found[0]), "unavailable"
        if found is not None:  # starting ones are waited for first (`bot.offline.once_started`)
            daemon = found[0]
            return (
                f"the daemon (pid {daemon}) runs, but its control socket "
                f"{self.path.parent / SOCKET_NAME} is gone: `moltsched reload` (or `systemctl "
                f"reload moltsched`, `kill -HUP {daemon}`) makes it again",
                "unavailable",
            )
        if self._held_above():
            return (
                "a run started by `moltsched run` with no daemon cannot start other runs (it "
                "holds the state until it ends): start the daemon (moltsched daemon)",
                "locked",
            )
        return None

    def _held_above(self) -> bool:
        """Whether it is held by an ancestor of this process: a foreground `moltsched run`
        whose task asks for a run (waiting for the lock would wait for that task's end)."""
        found = self.holder()
        if found is None:
            return False
        holder = found[0]
        tree = procs.snapshot()
        pid = os.getpid()
        for _ in range(len(tree)):
            pid = tree[pid].ppid if pid in tree else 0
            if pid <= 1:
                return False
            if pid == holder:
                return True
        return False

    def release(self) -> None:
        for fd in (self._fd, self._dir_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._fd = self._dir_fd = None


def _dir_holder(state_dir: Path) -> int | None:
    """The pid of the process with a flock on the directory, from /proc/locks.

    Only a directory someone holds is looked up: a process's first read of /proc/locks
    costs the kernel a pause of about 13 ms (measured on the development machine), which
    every command with no daemon would otherwise pay. Whether it is held is found first by
    trying it, as `file_held` does with the lock file."""
    if not _dir_held(state_dir):
        return None
    try:
        st = os.stat(state_dir)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            return int(fields[4])
    return None


def _dir_held(state_dir: Path) -> bool:
    """Whether someone may hold the directory's flock: True unless taking it shared, for a
    moment, shows that no one does. One who may not read the directory (the group of
    `control.group` may only pass through it) cannot tell, and looks it up."""
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # closing the fd lets go of it
    except OSError:
        return True
    finally:
        os.close(fd)


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _take_dir(state_dir: Path, *, blocking: bool) -> int | None:
    """An exclusive flock on the directory itself: its fd, or None if another holds it."""
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _moved(fd: int, path: Path) -> bool:
    """Whether `path` is no longer the file open as `fd`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
