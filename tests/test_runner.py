"""One run as a real process: environment, bounded output, timeouts that leave nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scheduler_core import procs
from scheduler_core.child import TAIL_BYTES, Child, Tail
from scheduler_core.runner import Ending, ProcessResult, ProcessRun, stop_leftovers
from tests.helpers import ESCAPES, alive, wait_for, wait_sync


async def run(
    argv: list[str],
    tmp_path: Path,
    *,
    timeout: float = 10,
    grace: float = 1,
    env: dict[str, str] | None = None,
) -> tuple[ProcessRun, ProcessResult]:
    proc_run = ProcessRun(
        argv, cwd=tmp_path, env=env or dict(os.environ), timeout=timeout, grace=grace
    )
    child = await proc_run.start()
    assert isinstance(child, Child)
    return proc_run, await proc_run.wait(child)


async def test_cwd_env_stdin_and_exit_code(tmp_path: Path) -> None:
    script = 'pwd; echo "$FOO"; cat; echo oops >&2; exit 7'
    _, result = await run(["bash", "-c", script], tmp_path, env={"FOO": "bar", "PATH": os.defpath})
    assert result.ending is Ending.EXITED and result.exit_code == 7
    assert result.stdout == f"{tmp_path}\nbar\n"
    assert result.stderr == "oops\n"


async def test_own_session_and_group(tmp_path: Path) -> None:
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    _, result = await run([sys.executable, "-c", code], tmp_path)
    assert result.stdout == "True True\n"


async def test_missing_program_is_a_result_not_an_exception(tmp_path: Path) -> None:
    proc_run = ProcessRun(["/nonexistent/prog"], cwd=tmp_path, env={}, timeout=5, grace=1)
    result = await proc_run.start()
    assert getattr(result, "ending", None) is Ending.NOT_STARTED
    said = getattr(result, "error", "")
    assert said == "cannot start: /nonexistent/prog: No such file or directory"


async def test_why_a_run_cannot_start_is_said_in_words(tmp_path: Path) -> None:
    """Python's own words were `[Errno 2] No such file or directory: PosixPath('/srv/x')`,
    which named neither tasks_dir nor what to write instead."""
    (tmp_path / "mine.sh").write_text("#!/bin/sh\necho mine\n")
    (tmp_path / "mine.sh").chmod(0o755)
    (tmp_path / "plain.sh").write_text("echo no line\n")
    (tmp_path / "bom.py").write_text("\ufeff#!/usr/bin/env python3\n")
    for file in ("plain.sh", "bom.py"):
        (tmp_path / file).chmod(0o755)
    said = {}
    for name, argv, cwd in (
        ("bare", ["mine.sh"], tmp_path),
        ("plain", ["./plain.sh"], tmp_path),
        ("bom", ["./bom.py"], tmp_path),
        ("nowhere", ["no-such-program-here"], tmp_path),
        ("folder", ["true"], tmp_path / "gone"),
    ):
        proc_run = ProcessRun(argv, cwd=cwd, env={"PATH": os.defpath}, timeout=5, grace=1)
        result = await proc_run.start()
        assert isinstance(result, ProcessResult) and result.ending is Ending.NOT_STARTED
        said[name] = result.error
    assert said == {
        "bare": "cannot start: mine.sh is not found on PATH (tasks_dir's is ./mine.sh)",
        "nowhere": "cannot start: no-such-program-here is not found on PATH",
        # The kernel's "Exec format error", with the reason a person can act on.
        "plain": "cannot start: ./plain.sh: Exec format error: it has no #! line, so the system "
        "cannot run it; give it one (#!/bin/sh), or use script:",
        "bom": "cannot start: ./bom.py: Exec format error: it has its #! line after a byte-order "
        'mark ("UTF-8 with BOM"), which hides it from the system; save it as plain UTF-8: '
        "sed -i '1s/^\\xEF\\xBB\\xBF//' ./bom.py",
        "folder": f"cannot start: its folder {tmp_path / 'gone'} (tasks_dir): "
        "No such file or directory",
    }


SHORT_OF_FILES = """
import asyncio, json, os, resource, sys
from pathlib import Path
from scheduler_core.child import Child
from scheduler_core.runner import ProcessRun

def open_fds():
    return len(os.listdir("/proc/self/fd")) - 1  # less the one listing them

async def main():
    warm = ProcessRun(["true"], cwd=Path("."), env={"PATH": os.defpath}, timeout=5, grace=1)
    await warm.wait(await warm.start())  # what is opened once, for every run, is open now
    said = []
    for spare in range(8):  # out of descriptors at each step of a start: pipes, fork, pidfd
        run = ProcessRun(["true"], cwd=Path("."), env={"PATH": os.defpath}, timeout=5, grace=1)
        before = open_fds()
        resource.setrlimit(resource.RLIMIT_NOFILE, (before + spare, 4096))
        started = await run.start()
        if isinstance(started, Child):
            error = (await run.wait(started)).error
        else:
            error = started.error
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        said.append({"spare": spare, "error": error, "leaked": open_fds() - before})
    print(json.dumps(said))

asyncio.run(main())
"""


def test_a_daemon_out_of_open_files_says_so_and_keeps_none(tmp_path: Path) -> None:
    """It said "cannot start: [Errno 24] Too many open files", which reads as the task's
    fault; and a start that failed between its two pipes kept the first one open for good."""
    done = subprocess.run(
        [sys.executable, "-c", SHORT_OF_FILES], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert [s for s in said if s["leaked"]] == [], said
    refused = [s["error"] for s in said if s["error"]]
    assert refused and said[-1]["error"] is None, said  # with enough spare, it ran
    for error in refused:
        assert error.startswith("cannot start: the scheduler has too many files open "), error
        assert "LimitNOFILE" in error and "max_concurrent" in error, error


async def test_output_is_bounded_to_the_tail(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for i in range(200000): sys.stdout.write(f'line {i:06d}\\n')\n"
        "sys.stderr.write('x' * 300000 + '\\nlast err\\n')\n"
    )
    _, result = await run([sys.executable, "-c", code], tmp_path)
    out = result.stdout
    assert len(out.encode()) <= TAIL_BYTES and out.endswith("line 199999\n")
    assert out.startswith("line ")  # cut at a line boundary
    assert result.stderr.endswith("last err\n")
    assert len(result.stderr.encode()) <= TAIL_BYTES


def test_tail_keeps_exactly_the_last_bytes() -> None:
    tail = Tail(10)
    for chunk in [b"abc", b"defgh", b"ijklmnop", b"q"]:
        tail.write(chunk)
    assert tail.total == 17
    assert bytes(tail._buf) == b"hijklmnopq"
    tail.write(b"0123456789ABCDEF")
    assert bytes(tail._buf) == b"6789ABCDEF"


STUBBORN = """
trap '' TERM
( trap '' TERM; sleep 300 ) &
echo "child $!" > {pidfile}
( trap '' TERM; bash -c 'trap "" TERM; sleep 300' & echo "grandchild $!" >> {pidfile}; wait ) &
sleep 300
"""


async def test_timeout_kills_the_whole_group_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    proc_run, result = await run(
        ["bash", "-c", STUBBORN.format(pidfile=pidfile)], tmp_path, timeout=1.0, grace=0.5
    )
    elapsed = time.monotonic() - started
    assert result.ending is Ending.TIMEOUT
    assert result.exit_code == -signal.SIGKILL
    assert elapsed < 5
    pids = [int(line.split()[1]) for line in pidfile.read_text().split("\n") if line]
    assert len(pids) == 2
    assert proc_run.pid is not None  # gone when the run ends, not some time after
    assert not [p for p in [proc_run.pid, *pids] if alive(p)]


async def test_sigterm_is_tried_first(tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    script = f"trap 'echo term > {marker}; exit 0' TERM; sleep 300 & wait"
    _, result = await run(["bash", "-c", script], tmp_path, timeout=0.5, grace=5)
    assert result.ending is Ending.TIMEOUT
    assert marker.read_text() == "term\n"


async def test_a_stopped_run_is_woken_to_hear_sigterm(tmp_path: Path) -> None:
    """A run frozen with SIGSTOP (by its owner, a debugger, a job-control signal) cannot act
    on SIGTERM until it is continued: it is sent SIGCONT after it, as systemd does, so its
    trap saves its checkpoint instead of waiting out the grace for SIGKILL."""
    marker = tmp_path / "got-term"
    ready = tmp_path / "ready"
    script = f"trap 'echo saved > {marker}; exit 0' TERM; touch {ready}; sleep 300 & wait"
    proc_run = ProcessRun(
        ["bash", "-c", script], cwd=tmp_path, env=dict(os.environ), timeout=60, grace=60
    )
    child = await proc_run.start()
    assert isinstance(child, Child) and proc_run.pid is not None
    waiter = asyncio.ensure_future(proc_run.wait(child))
    await wait_for(ready.exists)
    os.killpg(proc_run.pid, signal.SIGSTOP)
    await wait_for(lambda: Path(f"/proc/{proc_run.pid}/stat").read_text().split()[2] == "T")
    proc_run.interrupt("pause")
    result = await waiter  # without SIGCONT: SIGKILL after the 60 s grace, the trap never run
    assert result.ending is Ending.INTERRUPTED and result.exit_code == 0
    assert marker.read_text() == "saved\n"


async def test_what_a_sigterm_trap_starts_is_left_to_finish_within_the_grace(
    tmp_path: Path,
) -> None:
    """A trap that saves a checkpoint runs programs (`moltsched checkpoint save`, curl):
    each was sent SIGTERM as soon as it appeared, so the save never happened. SIGTERM goes
    once, to what runs when the stop begins; what the trap starts has the grace."""
    marker, ready = tmp_path / "saved", tmp_path / "ready"
    trap = f'sleep 0.3 && {sys.executable} -c "print(1)" > {marker}; exit 0'
    script = f"trap '{trap}' TERM; touch {ready}; sleep 300 & wait"
    proc_run = ProcessRun(
        ["bash", "-c", script], cwd=tmp_path, env=dict(os.environ), timeout=60, grace=30
    )
    child = await proc_run.start()
    assert isinstance(child, Child)
    waiter = asyncio.ensure_future(proc_run.wait(child))
    await wait_for(ready.exists)
    proc_run.interrupt("pause")
    result = await asyncio.wait_for(waiter, 20)
    assert result.ending is Ending.INTERRUPTED and result.exit_code == 0, result
    assert marker.read_text() == "1\n"


async def test_interrupt_stops_the_run(tmp_path: Path) -> None:
    proc_run = ProcessRun(["sleep", "300"], cwd=tmp_path, env=dict(os.environ), timeout=60, grace=1)
    child = await proc_run.start()
    assert isinstance(child, Child)
    waiter = asyncio.ensure_future(proc_run.wait(child))
    proc_run.interrupt()
    result = await asyncio.wait_for(waiter, 5)
    assert result.ending is Ending.INTERRUPTED and result.exit_code == -signal.SIGTERM


async def test_background_children_do_not_outlive_the_run(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    script = f"sleep 300 & echo $! > {pidfile}; echo done"
    started = time.monotonic()
    _, result = await run(["bash", "-c", script], tmp_path, grace=2)
    assert result.ending is Ending.EXITED and result.exit_code == 0
    assert result.stdout == "done\n"
    assert time.monotonic() - started < 3
    assert not alive(int(pidfile.read_text()))  # gone when the run ends


@pytest.mark.parametrize("closes", ["exec >&-", "exec >&- 2>&-"])
async def test_a_task_that_closes_its_output_still_times_out(tmp_path: Path, closes: str) -> None:
    _, result = await run(["bash", "-c", f"{closes}; sleep 300"], tmp_path, timeout=0.5, grace=0.5)
    assert result.ending is Ending.TIMEOUT


AWAIT_PIDS = "while [ ! -s {pids} ]; do sleep 0.01; done"


def tagged_env(run_id: int, tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ, MOLTSCHED_DB=str(tmp_path / "moltsched.db"), MOLTSCHED_RUN_ID=str(run_id)
    )


def read_pids(pids: Path) -> list[int]:
    return [int(p) for p in pids.read_text().split()] if pids.exists() else []


def kill_listed(*files: Path) -> None:
    """Whatever a failed test left running, by the pids it wrote down."""
    for f in files:
        for p in read_pids(f):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


async def wait_for_pids(pids: Path, count: int) -> list[int]:
    await wait_for(lambda: len(read_pids(pids)) >= count)
    return read_pids(pids)


@pytest.fixture
def only_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the daemon: this process starts nothing but runs (see procs.only_runs)."""
    monkeypatch.setattr(procs, "_only_runs", True)


@pytest.mark.parametrize("how", sorted(ESCAPES))
async def test_what_a_run_leaves_behind_at_a_normal_exit_is_stopped_and_named(
    tmp_path: Path, how: str, only_runs: None
) -> None:
    pids = tmp_path / "pids"
    script = f"{ESCAPES[how].format(pids=pids)}\n{AWAIT_PIDS.format(pids=pids)}\necho started"
    started = time.monotonic()
    try:
        _, result = await run(
            ["bash", "-c", script], tmp_path, grace=0.5, env=tagged_env(1, tmp_path)
        )
        assert time.monotonic() - started < 5
        assert result.ending is Ending.EXITED and result.exit_code == 0
        assert result.stdout == "started\n"
        helpers = [int(p) for p in pids.read_text().split()]
        assert result.leftovers and f"pid {helpers[0]}" in result.leftovers
        assert not [p for p in helpers if alive(p)]
    finally:
        kill_listed(pids)


@pytest.mark.parametrize("how", ["setsid", "ignores-term", "double-fork"])
async def test_a_timeout_ends_the_run_and_its_escaped_helpers_in_time(
    tmp_path: Path, how: str
) -> None:
    pids = tmp_path / "pids"
    script = f"{ESCAPES[how].format(pids=pids)}\nexec sleep 300"
    started = time.monotonic()
    try:
        _, result = await run(
            ["bash", "-c", script], tmp_path, timeout=1, grace=0.5, env=tagged_env(2, tmp_path)
        )
        # timeout + grace + a margin, whatever the helpers hold open or ignore
        assert time.monotonic() - started < 1 + 0.5 + 2
        assert result.ending is Ending.TIMEOUT
        assert not [p for p in await wait_for_pids(pids, 1) if alive(p)]
    finally:
        kill_listed(pids)


async def test_runs_side_by_side_stop_only_their_own_helpers(tmp_path: Path) -> None:
    """Two runs at once, each leaving a setsid helper: each run's end stops its own only."""
    a_pids, b_pids = tmp_path / "a", tmp_path / "b"
    helper = ESCAPES["setsid"] + "\n" + AWAIT_PIDS
    long_run = asyncio.ensure_future(
        run(
            ["bash", "-c", helper.format(pids=b_pids) + "\nexec sleep 300"],
            tmp_path,
            timeout=3,
            grace=0.5,
            env=tagged_env(4, tmp_path),
        )
    )
    try:
        (b_helper,) = await wait_for_pids(b_pids, 1)
        _, result = await run(
            ["bash", "-c", helper.format(pids=a_pids)], tmp_path, env=tagged_env(3, tmp_path)
        )
        (a_helper,) = await wait_for_pids(a_pids, 1)
        assert not alive(a_helper) and alive(b_helper)
        assert f"pid {a_helper}" in result.leftovers
        await long_run
        assert not alive(b_helper)
    finally:
        long_run.cancel()
        kill_listed(a_pids, b_pids)


def test_only_a_process_between_two_images_is_asked_again_for_its_environment() -> None:
    """A process shows no environment while in execve, and is asked again until it does (on
    a loaded machine, for long: a helper taken for no run's then outlived its run). One that
    cleared its environment, or a zombie, shows none for good: no run's, at once."""
    cleared = subprocess.Popen(["env", "-i", "sleep", "30"])
    done = subprocess.Popen(["true"])
    try:
        wait_sync(lambda: _state(done.pid) == "Z", 10, "true to end, unreaped")
        wait_sync(lambda: _image(cleared.pid) == b"sleep\x0030\x00", 10, "env to exec sleep")
        for pid in (cleared.pid, done.pid):
            assert not procs._in_exec(pid)
            assert not procs.tagged(pid, b"db", b"1")
        assert procs.tagged(os.getpid(), b"x", b"y") is False  # a live image: read at once
    finally:
        cleared.kill()
        cleared.wait()
        done.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _image(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_a_hundred_children_all_go_at_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"for i in $(seq 100); do sleep 300 & echo $! >> {pids}; done; wait"
    _, result = await run(["bash", "-c", script], tmp_path, timeout=1.0, grace=1)
    assert result.ending is Ending.TIMEOUT
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 100
    assert [p for p in children if alive(p)] == []  # gone when the run ends


async def test_a_gigabyte_of_output_keeps_memory_bounded(tmp_path: Path) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    script = "head -c 1073741824 /dev/zero | tr '\\0' 'x'; echo; echo the end"
    _, result = await run(["bash", "-c", script], tmp_path, timeout=120)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.exit_code == 0
    assert result.stdout.endswith("x\nthe end\n")
    assert len(result.stdout.encode()) <= TAIL_BYTES
    assert grew_mb < 50, f"memory grew by {grew_mb:.0f} MB"


async def test_leftovers_of_crashed_runs_are_found_by_their_environment_and_stopped(
    tmp_path: Path,
) -> None:
    """What a daemon killed on its own left running: only the processes of the named runs of
    this database go, children, escaped ones and SIGTERM-ignorers included."""
    pids = tmp_path / "pids"

    leaders: list[subprocess.Popen[bytes]] = []

    def start(db: str, run_id: int, script: str) -> int:
        env = dict(os.environ, MOLTSCHED_DB=db, MOLTSCHED_RUN_ID=str(run_id))
        leaders.append(subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True))
        return leaders[-1].pid

    mine = str(tmp_path / "moltsched.db")
    stubborn = start(mine, 7, f"trap '' TERM; sleep 300 & echo $! >> {pids}; sleep 300")
    escaped = start(mine, 8, f"setsid sleep 300 & echo $! >> {pids}; sleep 300")
    other_run = start(mine, 9, "sleep 300")
    other_db = start(str(tmp_path / "other.db"), 7, "sleep 300")
    try:
        await wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        stopped = await stop_leftovers(mine, [7, 8], grace=0.5)
        assert stopped == 4  # two leaders, the stubborn one's child, the escaped sleep
        children = [int(p) for p in pids.read_text().split()]
        assert not [p for p in [stubborn, escaped, *children] if alive(p)]
        assert alive(other_run) and alive(other_db)
    finally:
        for leader in leaders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()


async def test_a_clean_end_is_told_without_proc_and_anything_left_is_not(tmp_path: Path) -> None:
    """`procs.left_nothing`, the cheap check after each run: sure only when the run's group
    is empty and no child of ours that no run leads is the run's (by its tag here, as this
    process starts more than runs); else the full look at /proc."""
    env = os.environ | {"MOLTSCHED_DB": str(tmp_path / "x.db"), "MOLTSCHED_RUN_ID": "7"}
    proc_run, _ = await run(["true"], tmp_path, env=env)
    tag = (os.fsencode(env["MOLTSCHED_DB"]), b"7")
    assert proc_run.pid is not None and procs.left_nothing(proc_run.pid, tag)
    sleep = ["sleep", "30"]
    group = await asyncio.create_subprocess_exec(*sleep, start_new_session=True)
    with procs.Spawning() as spawning:
        spawning.registered(group.pid)  # a leader: only its live group speaks against it
    other = await asyncio.create_subprocess_exec(*sleep, env=env | {"MOLTSCHED_RUN_ID": "8"})
    kids: list[asyncio.subprocess.Process] = [group, other]
    try:
        assert not procs.left_nothing(group.pid, None)
        # Another run's process, or anyone's: not this run's.
        await wait_for(lambda: procs.tagged(other.pid, os.fsencode(env["MOLTSCHED_DB"]), b"8"))
        assert procs.left_nothing(proc_run.pid, tag)
        mine = await asyncio.create_subprocess_exec(*sleep, env=env)  # carries the run's tag
        kids.append(mine)
        await wait_for(lambda: procs.tagged(mine.pid, *tag))
        assert not procs.left_nothing(proc_run.pid, tag)
    finally:
        for p in kids:
            p.kill()
            await p.wait()
        procs.collected(group.pid)
    assert procs.left_nothing(proc_run.pid, tag)


async def test_runs_leave_the_process_as_they_found_it(tmp_path: Path) -> None:
    """Each run's pipes, pidfd and exit status are the run's own: after runs that printed,
    failed, left a helper, timed out and were interrupted, no descriptor is left open, no
    child is left unreaped and no thread was started."""
    await run(["true"], tmp_path)  # the first opens the one /dev/null every run's stdin shares
    fds = set(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    leaders = []
    for argv, timeout in [
        (["bash", "-c", "seq 1 5000; echo err >&2"], 10.0),
        (["bash", "-c", "exit 3"], 10.0),
        (["bash", "-c", "sleep 300 & echo started"], 10.0),
        (["sleep", "300"], 0.3),
    ]:
        proc_run, result = await run(argv, tmp_path, timeout=timeout, grace=1)
        assert result.ending in (Ending.EXITED, Ending.TIMEOUT)
        leaders.append(proc_run.pid)
    interrupted = ProcessRun(
        ["sleep", "300"], cwd=tmp_path, env=dict(os.environ), timeout=60, grace=1
    )
    child = await interrupted.start()
    assert isinstance(child, Child)
    interrupted.interrupt()
    assert (await interrupted.wait(child)).ending is Ending.INTERRUPTED
    leaders.append(child.pid)
    assert set(os.listdir("/proc/self/fd")) == fds
    assert threading.active_count() == threads
    assert len(leaders) == 5 and all(map(_gone, leaders))  # no zombie of ours either


def _gone(pid: int | None) -> bool:
    """Whether the process has left /proc: exited, and its exit status collected."""
    return pid is not None and not os.path.exists(f"/proc/{pid}")


HOLDER = """
import socket, sys, time
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen()
print("ready", flush=True)
conn, _ = server.accept()
_, fds, _, _ = socket.recv_fds(conn, 16, 1)
print("holding", flush=True)
time.sleep(300)
"""
SENDER = """
import socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect(sys.argv[1])
print("sent", flush=True)
socket.send_fds(conn, [b"x"], [1])
"""


async def test_an_output_held_where_the_run_cannot_reach_does_not_hold_the_run(
    tmp_path: Path,
) -> None:
    """A process outside the run's tree, untagged, gets the run's stdout over a socket and
    keeps it open: nothing ties it to the run, so it is not stopped, but the run still ends
    once its own processes are gone (our ends of its pipes closed after a moment)."""
    sock = tmp_path / "hold.sock"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(sock), stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    try:
        assert await holder.stdout.readline() == b"ready\n"
        await run(["true"], tmp_path)  # the shared /dev/null is open before the count
        fds = set(os.listdir("/proc/self/fd"))
        started = time.monotonic()
        _, result = await run([sys.executable, "-c", SENDER, str(sock)], tmp_path, timeout=30)
        assert await holder.stdout.readline() == b"holding\n"  # it has the run's stdout, open
        assert result.ending is Ending.EXITED and result.exit_code == 0
        assert result.stdout == "sent\n" and result.leftovers is None
        assert time.monotonic() - started < 10  # not the timeout: the pipes were let go
        assert set(os.listdir("/proc/self/fd")) == fds  # and our ends of them are closed
    finally:
        holder.kill()
        await holder.wait()
