"""Finding everything a run started, wherever it went: process groups are not enough.

A task that runs `setsid helper &`, `nohup tool &` or a double-forking daemon puts processes
outside its group. Two things still find them:

- The scheduler's process is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): an orphan whose
  parent dies is re-parented to us, not to PID 1, so every escaped process of a run is either
  a descendant of the run's leader or, once its parent is gone, a child of ours.
- Each run's processes carry its `MOLTSCHED_DB` and `MOLTSCHED_RUN_ID` in their environment,
  which tells the runs apart among our adopted children.

Being a subreaper means reaping: adopted orphans that die become our zombies. `reap_adopted`
(called as each run ends) waits for those, and never for a run's leader, whose exit status
its `Child` (or, for the alert fallback command, asyncio) collects: leaders are registered
from just before they are spawned until that status is in.

What still escapes its run: a process that clears its environment *and* leaves the run's
process tree while other runs are going (it is stopped at shutdown; a delegated cgroup closes
this gap, see `cgroups`), and anything started by other means than fork (a `systemd-run`
unit, an `at` job, a command over ssh). Linux only: elsewhere the process group is all there
is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable

from scheduler_core.record import Record

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_CHILDREN_READS = 4  # of /proc/self/task/self/children, to have two that agree
_EXEC_WAIT_S = 0.2  # how long a process may take between two images (see `_environ`)
_subreaper: bool | None = None
_only_runs = False  # this process starts no children but runs (see `only_runs`)
_leaders: set[int] = set()  # runs' leader pids whose exit status is not collected yet
_spawning = 0  # leaders between fork and registration: nothing is reaped meanwhile


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (once; Linux only)."""
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
        if not _subreaper:
            log.info("cannot become a child subreaper; a run's setsid helpers may escape")
    return _subreaper


def only_runs() -> None:
    """Say that this process starts no children but task runs (the daemon, a foreground
    `moltsched run`): then an orphan it adopts with no run's tag, while a single run goes,
    is that run's. Elsewhere (a test process, an embedding program) such an orphan could be
    anyone's, and is left alone."""
    global _only_runs
    _only_runs = True


class Spawning:
    """Held around spawning a run's leader: `registered(pid)` once it is known."""

    def __enter__(self) -> Spawning:
        global _spawning
        _spawning += 1
        return self

    def registered(self, pid: int) -> None:
        _leaders.add(pid)

    def __exit__(self, *_: object) -> None:
        global _spawning
        _spawning -= 1


def collected(pid: int) -> None:
    """The leader's exit status is collected: it is no longer ours to leave alone."""
    _leaders.discard(pid)


def left_nothing(leader: int, tag: tuple[bytes, bytes] | None) -> bool:
    """Sure, at the cost of a few system calls, that the run led by `leader` (gone) left no
    process: what `run_processes` would find is empty. As the subreaper, whatever a run
    started is in its group or under a child of ours (orphans come to our main thread); a
    child that no run leads is the run's on the same terms as there (by its tag, or because
    no other run goes). False whenever unsure (no subreaper, no `children` file, a zombie)."""
    if not _subreaper:
        return False
    try:
        os.killpg(leader, 0)
        return False  # someone, perhaps the unreaped leader, is still in the group
    except ProcessLookupError:
        pass
    except OSError:
        return False
    children = _children()
    if children is None:
        return False
    sole = _only_runs and other_leaders(leader) == 0 and not _spawning
    for pid in children:
        if pid not in _leaders and (sole or (tag is not None and tagged(pid, *tag))):
            return False
    return True


def _children() -> list[int] | None:
    """Our children's pids, from one file (None where the kernel does not list them, or its
    lists keep changing). proc(5): a child reaped while the file is read (a run's leader, by
    asyncio meanwhile) can make it leave out another, so a list is taken when two reads in a
    row agree."""
    me = os.getpid()
    before = None
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            for _ in range(_CHILDREN_READS):
                listed = f.read()
                if listed == before:
                    return [int(pid) for pid in listed.split()]
                before = listed
                f.seek(0)
    except OSError:
        pass
    return None


def other_leaders(pid: int) -> int:
    """How many runs other than the one led by `pid` are going."""
    return len(_leaders - {pid})


class Proc(Record):
    """One line of /proc: enough to build trees and to say what it is."""

    pid: int
    ppid: int
    pgrp: int
    state: str
    name: str


def snapshot(since: int = 0) -> dict[int, Proc]:
    """Every process now, by pid (empty where there is no /proc); with `since`, only those
    started after that pid was handed out (and every one, if pids have wrapped since)."""
    procs: dict[int, Proc] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return procs
    if since and _last_pid() < since:
        since = 0  # pids wrapped around: newer processes can have smaller pids
    for entry in entries:
        if not entry.isdigit() or int(entry) < since:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        head, _, rest = raw.rpartition(b")")
        fields = rest.split()
        if len(fields) < 3:
            continue
        name = head.partition(b"(")[2].decode(errors="replace")
        pid = int(entry)
        procs[pid] = Proc(pid, int(fields[1]), int(fields[2]), fields[0].decode(), name)
    return procs


def _last_pid() -> int:
    """The pid the kernel handed out last (0 if unknown)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def tagged(pid: int, db: bytes, run_id: bytes) -> bool:
    """Whether the process carries this run's tag in its environment."""
    raw = b"\0" + _environ(pid)
    return b"\0MOLTSCHED_RUN_ID=" + run_id + b"\0" in raw and b"\0MOLTSCHED_DB=" + db + b"\0" in raw


def run_of(pid: int, db: bytes) -> int | None:
    """The run of the database `db` whose tag the process carries, or None (not a run's, or
    not ours to read)."""
    tags = dict(item.partition(b"=")[::2] for item in _environ(pid).split(b"\0"))
    if tags.get(b"MOLTSCHED_DB") != db:
        return None
    run_id = tags.get(b"MOLTSCHED_RUN_ID", b"")
    return int(run_id) if run_id.isdigit() else None


def _environ(pid: int) -> bytes:
    """The process's environment as /proc shows it (NUL-separated); empty if unreadable, or
    if it has none (a zombie, or one that cleared it).

    A process in the middle of execve shows no environment and no command line until its new
    image is in place: well under a millisecond, but on a loaded machine it can be descheduled
    in between for much longer, and a helper taken for no run's then would outlive its run.
    Such a one is asked again, up to `_EXEC_WAIT_S`."""
    deadline = 0.0
    while True:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            return b""
        if raw or not _in_exec(pid):
            return raw
        now = time.monotonic()
        if not deadline:
            deadline = now + _EXEC_WAIT_S
        elif now > deadline:
            return b""
        time.sleep(0.0005)


def _in_exec(pid: int) -> bool:
    """Whether a process that shows no environment is between two images (in execve): it
    shows no command line either, and is not a zombie."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read(1):
                return False  # an image with arguments and no environment: cleared
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state not in ([b"Z"], [b"X"])


def run_processes(
    leader: int,
    tag: tuple[bytes, bytes] | None,
    members: Iterable[int] = (),
    procs: dict[int, Proc] | None = None,
) -> list[Proc]:
    """The live processes of the run led by `leader`: the leader, its group, the members of
    its cgroup (if it has one), and the trees under them and under every adopted child of
    ours that belongs to the run (by its tag, its group, or because no other run is going)."""
    # What a run started came after its leader: older processes need not be read.
    procs = snapshot(since=leader) if procs is None else procs
    me = os.getpid()
    roots: set[int] = {m for m in members if m != me}
    lead = procs.get(leader)
    if lead is not None and lead.ppid == me and lead.state != "Z":
        roots.add(leader)
    # A leader being spawned is our child before it is registered: not "sole" meanwhile.
    sole = _only_runs and other_leaders(leader) == 0 and not _spawning
    for p in procs.values():
        in_group = p.pgrp == leader and p.pid != me
        if in_group or (
            p.ppid == me
            and p.state != "Z"
            and p.pid not in _leaders
            and p.pid != leader
            and (sole or (tag is not None and tagged(p.pid, *tag)))
        ):
            roots.add(p.pid)
    return [p for p in _trees(roots, procs) if p.state != "Z"]


def adopted(procs: dict[int, Proc] | None = None) -> list[Proc]:
    """Live processes under our adopted children (not under runs' leaders)."""
    procs = snapshot() if procs is None else procs
    me = os.getpid()
    roots = {p.pid for p in procs.values() if p.ppid == me and p.pid not in _leaders}
    return [p for p in _trees(roots, procs) if p.state != "Z"]


def _trees(roots: Iterable[int], procs: dict[int, Proc]) -> list[Proc]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return [procs[p] for p in seen]


def terminate(procs: Iterable[Proc]) -> None:
    """SIGTERM each process (and its group), then SIGCONT, as systemd does: a process frozen
    by SIGSTOP acts on SIGTERM (its trap saves a checkpoint) only once it runs again."""
    procs = list(procs)
    send(procs, signal.SIGTERM)
    send(procs, signal.SIGCONT)


def send(procs: Iterable[Proc], sig: signal.Signals) -> None:
    """Signal each process, and its group where it leads one: groups first, each at once.
    A shell in `cmd & wait` whose child died first would see its `wait` end and go on (or
    exit 0) before its own SIGTERM came, and its trap, which saves a checkpoint, never ran."""
    for p in sorted(procs, key=lambda p: p.pgrp != p.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if p.pgrp == p.pid:
                os.killpg(p.pid, sig)
            else:
                os.kill(p.pid, sig)


def reap_adopted() -> int:
    """Collect the exit status of adopted orphans that died; how many were reaped.

    Never a run's leader (its exit status is its spawner's), and nothing at all while a leader is
    being spawned and not yet registered."""
    if _spawning or not _subreaper:
        return 0
    try:  # is any child a zombie at all? (one syscall; WNOWAIT leaves it be)
        if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return 0
    except ChildProcessError:
        return 0
    children = _children()
    if children is None:
        me = os.getpid()
        children = [p.pid for p in snapshot().values() if p.ppid == me and p.state == "Z"]
    reaped = 0
    for pid in children:
        if pid not in _leaders:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped += 1
    return reaped


def describe(procs: Iterable[Proc], limit: int = 5) -> str:
    """`sleep (pid 12), bash (pid 11)`, at most `limit` of them."""
    ordered = sorted(procs, key=lambda p: p.pid)
    names = [f"{p.name} (pid {p.pid})" for p in ordered[:limit]]
    if len(ordered) > limit:
        names.append(f"{len(ordered) - limit} more")
    return ", ".join(names)
