"""One run of a task: a subprocess in its own session, with bounded output and a deadline.

The process starts in a new session (so its group id is its pid) with stdin closed. Stdout
and stderr are read as they come; only the last `TAIL_BYTES` of each is kept, so memory stays
bounded however much a task prints. A run ends when its leader exits, times out or is
interrupted; then everything else it started (its group, and what left the group: see
`procs`) gets SIGTERM, `grace`, then SIGKILL, so nothing survives the run, and our ends of
its pipes are closed even if something we could not find still holds them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource  # here, not when needed: with no descriptor free, no import can load
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from scheduler_core import procs
from scheduler_core.cgroups import RunCgroups
from scheduler_core.child import Child
from scheduler_core.record import Record
from scheduler_core.shebang import SHEBANG_MAX, head_of, no_shebang

log = logging.getLogger(__name__)

_GROUP_POLL_S = 0.02
_PIPES_CLOSE_S = 0.5
_KILL_ROUNDS = 50


class Ending(StrEnum):
    """Why the process is gone."""

    EXITED = "exited"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not-started"


class ProcessResult(Record):
    """What a finished process left behind."""

    ending: Ending
    exit_code: int | None
    duration_s: float
    stdout: str
    stderr: str
    error: str | None = None
    leftovers: str | None = None  # what the run left behind at a normal exit (then stopped)


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
        cgroups: RunCgroups | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.cgroups = cgroups
        self._cgroup_run: int | None = None  # the run id whose cgroup it runs in
        self.cwd = cwd
        self.env: Mapping[str, str] | Mapping[bytes, bytes] = env
        self._tag_of: object = None
        self._tag_value: tuple[bytes, bytes] | None = None
        self.timeout = timeout
        self.grace = grace
        self.pid: int | None = None
        self._interrupt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._now = asyncio.Event()  # stop without waiting out the grace (see interrupt)
        self.reason = ""  # why it was interrupted, for the log
        self.started_at: float | None = None

    def interrupt(self, reason: str = "", *, now: bool = False) -> None:
        """Ask the run to stop: SIGTERM its group, then SIGKILL after `grace` (`now`: at once,
        also when it is already waiting out its grace)."""
        if now:
            self._now.set()
        if not self._interrupt.done():
            self.reason = reason
            self._interrupt.set_result(None)

    @property
    def interrupted(self) -> bool:
        return self._interrupt.done()

    async def start(self) -> Child | ProcessResult:
        """Start the process; a ProcessResult if it could not be (or need not be) started."""
        self.started_at = time.monotonic()
        if self.interrupted:  # stopped before it began: nothing to start or to kill
            return ProcessResult(Ending.INTERRUPTED, None, 0.0, "", "")
        procs.become_subreaper()
        argv = self.argv
        tag = self._tag()
        if self.cgroups is not None and tag is not None:
            try:
                argv = self.cgroups.wrap(int(tag[1]), argv)
                self._cgroup_run = int(tag[1])
            except OSError as exc:
                log.warning("run of %s: no cgroup of its own (%s)", self.name, exc)
        try:
            child = Child(argv, self.cwd, self.env)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument or variable
            why = f"cannot start: {_said(exc, self.cwd)}"
            if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
                why += " (the environment is too big: a variable over 128 KiB, or all over 2 MiB)"
            return ProcessResult(Ending.NOT_STARTED, None, 0.0, "", "", why)
        self.pid = child.pid
        return child

    async def wait(self, child: Child) -> ProcessResult:
        """Wait for the run to end, enforcing the timeout and interrupts.

        The run ends when its leader exits (or is stopped) and everything else it started has
        been stopped too; reading its output never waits past that.
        """
        assert self.started_at is not None
        ending = Ending.EXITED
        left: str | None = None
        try:
            remaining = self.timeout - (time.monotonic() - self.started_at)
            done, _ = await asyncio.wait(
                {child.exited, self._interrupt},
                timeout=max(remaining, 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if child.exited not in done:
                ending = Ending.INTERRUPTED if self._interrupt in done else Ending.TIMEOUT
            found = await self._stop_all(child.pid)
            if ending is Ending.EXITED and found:
                left = found
                log.warning("run of %s left processes behind; stopped them: %s", self.name, left)
            # Every process that could write to the pipes is gone: they close at once, unless
            # one escaped us entirely. Then our ends are closed: the run is over regardless.
            drained = child.drained.done()  # most often: no turn of the loop to wait for
            if not drained:
                drained = bool((await asyncio.wait({child.drained}, timeout=_PIPES_CLOSE_S))[0])
            if not drained:
                log.warning(
                    "run of %s: a process we cannot find holds its output; no longer reading it",
                    self.name,
                )
                child.close()
            await child.exited
        except asyncio.CancelledError:
            procs.send(procs.run_processes(child.pid, self._tag()), signal.SIGKILL)
            child.close()
            raise
        finally:
            procs.collected(child.pid)
            procs.reap_adopted()
        duration = time.monotonic() - self.started_at
        return ProcessResult(
            ending,
            child.returncode,
            duration,
            child.stdout.text(),
            child.stderr.text(),
            leftovers=left,
        )

    @property
    def name(self) -> str:
        return self.argv[-1] if self.argv else "?"

    def _tag(self) -> tuple[bytes, bytes] | None:
        """This run's MOLTSCHED_DB and MOLTSCHED_RUN_ID, as its processes carry them."""
        env: Mapping[Any, Any] = self.env  # str or bytes keys
        if self._tag_of is not env:  # read once per environment, not per look at /proc
            self._tag_of = env
            db = env.get(b"MOLTSCHED_DB") or env.get("MOLTSCHED_DB")
            run_id = env.get(b"MOLTSCHED_RUN_ID") or env.get("MOLTSCHED_RUN_ID")
            self._tag_value = (os.fsencode(db), os.fsencode(run_id)) if db and run_id else None
        return self._tag_value

    async def _stop_all(self, leader: int) -> str:
        """Stop everything the run started; what was found besides the leader ("" if none)."""
        tag = self._tag()
        cgroups, run = self.cgroups, self._cgroup_run
        if run is None and procs.left_nothing(leader, tag):
            return ""  # the common case, without reading /proc

        def find() -> list[procs.Proc]:
            members = cgroups.members(run) if cgroups is not None and run is not None else []
            return procs.run_processes(leader, tag, members)

        seen = await stop_processes(find, self.grace, self._now)
        if cgroups is not None and run is not None:
            cgroups.kill(run)  # whatever hid from /proc meanwhile: none of it can leave
            await _until_removed(cgroups, run)
        if seen:
            log.debug("run of %s: stopped %s", self.name, procs.describe(seen))
        return procs.describe(p for p in seen if p.pid != leader)


async def _until_removed(cgroups: RunCgroups, run: int) -> None:
    """Remove the run's cgroup; killed processes leave it a moment after the kill."""
    for _ in range(_KILL_ROUNDS):
        if not cgroups.members(run):
            break
        await asyncio.sleep(_GROUP_POLL_S)
    cgroups.remove(run)


async def stop_processes(
    find: Callable[[], list[procs.Proc]], grace: float, now: asyncio.Event | None = None
) -> list[procs.Proc]:
    """SIGTERM what `find()` returns (and SIGCONT, see `procs.terminate`), wait up to `grace`
    for it to go (or until `now` is set), then SIGKILL what is left. Returns all it found.

    SIGTERM goes once, to each process there is when the stop begins (to the whole group of
    one that leads a group, so a fork racing the signal in it gets it too). What starts after
    that is left to its work until the grace ends: most often it is the work of a SIGTERM
    trap (`moltsched checkpoint save`, an upload), which a SIGTERM of its own, even a moment
    later, would cut short. It is SIGKILLed with the rest if it outlives the grace."""
    found = find()
    if not found:
        return []
    seen = {p.pid: p for p in found}
    procs.terminate(found)
    deadline = time.monotonic() + grace
    # Polled: most of these are not our children, and there is no handle to wait on a tree.
    # Only while something is being stopped.
    while found and time.monotonic() < deadline and not (now and now.is_set()):
        await asyncio.sleep(_GROUP_POLL_S)
        procs.reap_adopted()
        found = find()
        seen.update((p.pid, p) for p in found)
    for _ in range(_KILL_ROUNDS):
        if not found:
            break
        procs.send(found, signal.SIGKILL)
        await asyncio.sleep(_GROUP_POLL_S)
        procs.reap_adopted()
        found = find()
        seen.update((p.pid, p) for p in found)
    if found:
        log.error("could not stop %s", procs.describe(found))
    return list(seen.values())


async def stop_strays(grace: float) -> int:
    """At shutdown: stop every process of ours that no run owns any more (what escaped being
    told apart while other runs were going). How many there were."""
    return len(await stop_processes(procs.adopted, grace))


async def stop_leftovers(
    db: str, run_ids: Collection[int], grace: float, now: asyncio.Event | None = None
) -> int:
    """Stop every live process started by one of `run_ids` of the database `db` (what a
    daemon that was killed on its own left running): SIGTERM, up to `grace` (or until `now` is
    set), then SIGKILL.
    They are found by their run's `MOLTSCHED_DB` and `MOLTSCHED_RUN_ID`, so a process that
    merely reuses a pid after a reboot is never touched. Returns how many there were."""
    tags = [(os.fsencode(db), str(r).encode()) for r in run_ids]

    def find() -> list[procs.Proc]:
        me = os.getpid()
        return [
            p
            for p in procs.snapshot().values()
            if p.pid != me and p.state != "Z" and any(procs.tagged(p.pid, *t) for t in tags)
        ]

    return len(await stop_processes(find, grace, now))


def _said(exc: OSError | ValueError, cwd: Path) -> str:
    """Why a program could not start, in words: Python says `[Errno 2] No such file or
    directory: PosixPath('/srv/tasks')`, for a missing folder to start in, say."""
    if isinstance(exc, OSError) and exc.errno in _SHORT_OF:
        return _SHORT_OF[exc.errno].format(limit=_open_files_limit())
    if not isinstance(exc, OSError) or exc.filename is None:
        return str(exc)
    what = os.fspath(exc.filename)
    if what == os.fspath(cwd):
        return f"its folder {what} (tasks_dir): {exc.strerror}"
    if exc.errno == errno.ENOEXEC:
        head = head_of(cwd / what, SHEBANG_MAX) or b""
        return f"{what}: {exc.strerror}: it {no_shebang(head, what)}"
    if not isinstance(exc, FileNotFoundError) or os.sep in what:
        return f"{what}: {exc.strerror}"
    ours = (cwd / what).exists()  # a bare name is looked up on PATH alone
    return f"{what} is not found on PATH" + (f" (tasks_dir's is ./{what})" if ours else "")


# What the scheduler's own process, not the task, was short of: said so, with what to raise.
_SHORT_OF = {
    errno.EMFILE: "the scheduler has too many files open (its limit: {limit}); raise "
    "LimitNOFILE= in its unit (ulimit -n), or lower max_concurrent",
    errno.ENFILE: "the system has too many files open (fs.file-max)",
    errno.EAGAIN: "the system refused a new process: too many for this user (LimitNPROC=, "
    "ulimit -u), or too little memory",
    errno.ENOMEM: "not enough memory to start a process",
}


def _open_files_limit() -> str:
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
