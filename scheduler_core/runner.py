"""One run of a task: a subprocess in its own process group, with bounded output and a deadline.

The process starts in a new session (so its group id is its pid) with stdin closed. Stdout
and stderr are read as they come; only the last `TAIL_BYTES` of each is kept, so memory stays
bounded however much a task prints. Stopping a run (timeout, interrupt, or the leader exiting
while children it started live on) sends SIGTERM to the whole group, waits `grace`, then
SIGKILLs the group, so no grandchild survives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAIL_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024
_GROUP_POLL_S = 0.02
_PIPES_CLOSE_S = 0.05


class Ending(StrEnum):
    """Why the process is gone."""

    EXITED = "exited"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not-started"


@dataclass(frozen=True)
class ProcessResult:
    """What a finished process left behind."""

    ending: Ending
    exit_code: int | None
    duration_s: float
    stdout: str
    stderr: str
    error: str | None = None


class Tail:
    """The last `limit` bytes written to it."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._limit = limit
        self._buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if len(data) >= self._limit:
            self._buf[:] = data[-self._limit :]
            return
        self._buf += data
        excess = len(self._buf) - self._limit
        if excess > 0:
            del self._buf[:excess]

    def text(self) -> str:
        data = bytes(self._buf)
        if self.total > len(data):
            # Cut mid-line: drop the partial first line so the tail starts cleanly.
            nl = data.find(b"\n")
            if 0 <= nl < 512:
                data = data[nl + 1 :]
        return data.decode("utf-8", errors="replace")


class ProcessRun:
    """A task process that can be awaited and interrupted."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | Mapping[bytes, bytes],
        timeout: float,
        grace: float,
    ) -> None:
        self.argv = tuple(argv)
        self.cwd = cwd
        self.env: Mapping[str, str] | Mapping[bytes, bytes] = env
        self.timeout = timeout
        self.grace = grace
        self.pid: int | None = None
        self._interrupt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reason = ""  # why it was interrupted, for the log
        self.started_at: float | None = None

    def interrupt(self, reason: str = "") -> None:
        """Ask the run to stop: SIGTERM its group, then SIGKILL after `grace`."""
        if not self._interrupt.done():
            self.reason = reason
            self._interrupt.set_result(None)

    @property
    def interrupted(self) -> bool:
        return self._interrupt.done()

    async def start(self) -> asyncio.subprocess.Process | ProcessResult:
        """Start the process; a ProcessResult if it could not be (or need not be) started."""
        self.started_at = time.monotonic()
        if self.interrupted:  # stopped before it began: nothing to start or to kill
            return ProcessResult(Ending.INTERRUPTED, None, 0.0, "", "")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            why = f"cannot start: {exc}"
            if exc.errno == errno.E2BIG:
                why += " (the environment is too big: a variable over 128 KiB, or all over 2 MiB)"
            return ProcessResult(Ending.NOT_STARTED, None, 0.0, "", "", why)
        self.pid = proc.pid
        return proc

    async def wait(self, proc: asyncio.subprocess.Process) -> ProcessResult:
        """Wait for the process to end, enforcing the timeout and interrupts."""
        assert self.started_at is not None and proc.stdout and proc.stderr
        out, err = Tail(), Tail()
        readers = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err))
        # asyncio's wait() ends once the leader has exited *and* the pipes are closed; a child
        # left behind can hold the pipes, so the leader's own exit is watched too (pidfd).
        finished: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        exited = _leader_exit(proc)
        interrupted = self._interrupt
        ending = Ending.EXITED
        watched: set[asyncio.Future[Any]] = {finished, exited, interrupted}
        try:
            remaining = self.timeout - (time.monotonic() - self.started_at)
            done, _ = await asyncio.wait(
                watched,
                timeout=max(remaining, 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if finished in done or exited in done:
                if not finished.done():
                    # Normally the pipes close with the leader, a moment later.
                    await asyncio.wait({finished}, timeout=_PIPES_CLOSE_S)
                if not finished.done() or _group_alive(proc.pid):
                    # Something the task started lives on in its group (holding our pipes, or
                    # with its output closed): stop it the same way, so nothing outlives the run.
                    log.info("run of %s left processes behind; stopping them", self.argv[-1])
                    await self._stop_group(proc.pid, None)
            else:
                ending = Ending.INTERRUPTED if interrupted in done else Ending.TIMEOUT
                await self._stop_group(proc.pid, exited)
            await asyncio.wait({finished}, timeout=max(self.grace, 1.0))
            if not finished.done():
                # A process that left the group (its own setsid) still holds a pipe. Close our
                # ends: `_transport` is asyncio's, public in all but name since Python 3.4.
                log.warning(
                    "run of %s: a process outside its group holds its output; no longer reading it",
                    self.argv[-1],
                )
                proc._transport.close()  # type: ignore[attr-defined]
                await finished
            await readers
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            readers.cancel()
            finished.cancel()
            raise
        finally:
            if not exited.done():
                exited.cancel()
        duration = time.monotonic() - self.started_at
        return ProcessResult(ending, proc.returncode, duration, out.text(), err.text())

    async def _stop_group(self, pgid: int, exited: asyncio.Future[None] | None) -> None:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if (exited is None or exited.done()) and not _group_alive(pgid):
                return
            await asyncio.sleep(_GROUP_POLL_S)
        _signal_group(pgid, signal.SIGKILL)


def leftover_processes(db: str, run_ids: Collection[int]) -> list[tuple[int, int]]:
    """(pid, process group) of every live process started by one of `run_ids` of the database
    `db`: each carries its run's `MOLTSCHED_DB` and `MOLTSCHED_RUN_ID`, which is how they are
    told apart from processes that merely reuse a pid after a reboot. Linux only (/proc);
    elsewhere nothing is found."""
    wanted_db = os.fsencode(db)
    wanted_runs = {str(r).encode() for r in run_ids}
    own = {os.getpid(), os.getpgrp()}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
            env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            if (
                env.get(b"MOLTSCHED_DB") == wanted_db
                and env.get(b"MOLTSCHED_RUN_ID") in wanted_runs
            ):
                pgid = os.getpgid(int(entry))
                if pgid not in own:
                    found.append((int(entry), pgid))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


async def stop_leftovers(db: str, run_ids: Collection[int], grace: float) -> int:
    """Stop what `leftover_processes` finds, group by group: SIGTERM, up to `grace` for them to
    go, then SIGKILL. Returns how many processes were found."""
    found = leftover_processes(db, run_ids)
    groups = {pgid for _, pgid in found}
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    # Polled: these are not our children, and a group has no handle to wait on. Start-up only.
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):  # noqa: ASYNC110
        await asyncio.sleep(_GROUP_POLL_S * 5)
    for pgid in groups:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    return len(found)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the group.

    `killpg(pgid, 0)` alone would count zombies: an orphaned grandchild that already died waits
    for PID 1 to reap it, and some PID 1s (containers, VMs) take their time. So a positive
    answer is checked against /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp.
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _leader_exit(proc: asyncio.subprocess.Process) -> asyncio.Future[None]:
    """Resolves when the leader process exits.

    Not `proc.wait()`: asyncio only finishes that once the pipes are closed too, and a
    background child the task left behind can hold them open. A pidfd says when the leader
    itself is gone, without polling.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        fut.set_result(None)  # already exited and reaped
        return fut
    except (OSError, AttributeError):
        return asyncio.ensure_future(_poll_exit(proc))

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    def cleanup(_: asyncio.Future[None]) -> None:
        loop.remove_reader(fd)
        os.close(fd)

    loop.add_reader(fd, ready)
    fut.add_done_callback(cleanup)
    return fut


async def _poll_exit(proc: asyncio.subprocess.Process) -> None:
    # Only where there is no pidfd (non-Linux, old kernels): nothing else to wait on.
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(_GROUP_POLL_S)


async def _pump(stream: asyncio.StreamReader, tail: Tail) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        tail.write(chunk)
