"""Shared test helpers: a clock tests move by hand, task specs, and waiting for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from scheduler_core.model import CatchUp, TaskSpec
from scheduler_core.triggers import Every, Trigger

REPO = Path(__file__).resolve().parent.parent
MOLTSCHED = str(Path(sys.executable).parent / "moltsched")


class ManualClock:
    """Wall time that moves only when a test says so. Any number of sleepers, as with the
    real clock (the scheduler and the alert outbox share one)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
        self._sleepers: dict[asyncio.Event, datetime | None] = {}

    def now(self) -> datetime:
        return self.t

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        if when is not None and when <= self.t:
            return
        self._sleepers[wake] = when
        try:
            await wake.wait()
        finally:
            self._sleepers.pop(wake, None)

    def asleep(self) -> bool:
        """Someone waits on this clock and has not been woken: a scheduler loop that has
        done all it was woken for (nothing can start until the clock moves or it is asked)."""
        return any(not wake.is_set() for wake in self._sleepers)

    def jump(self, seconds: float) -> None:
        """Someone sets the clock: like the real timerfd, wake whoever sleeps."""
        self.t += timedelta(seconds=seconds)
        for wake in self._sleepers:
            wake.set()

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        for wake, when in self._sleepers.items():
            if when is not None and when <= self.t:
                wake.set()


def spec(
    task_id: str,
    script: str,
    tasks_dir: Path,
    *,
    trigger: Trigger | None = None,
    **kw: Any,
) -> TaskSpec:
    """A task that runs `script` (bash source text) written into tasks_dir."""
    path = tasks_dir / f"{task_id}.sh"
    path.write_text(script)
    kw.setdefault("catch_up", CatchUp.ONCE)
    return TaskSpec(
        id=task_id,
        name=task_id,
        argv=("bash", str(path)),
        trigger=trigger or Every(3600),
        **kw,
    )


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 10.0
) -> None:
    """Wait until `predicate()` is true, checking often; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                value = predicate()
                if asyncio.iscoroutine(value):
                    value = await value
            except sqlite3.OperationalError:
                value = False  # a daemon still creating its database: not yet
            if value:
                return
            await asyncio.sleep(0.02)


def wait_sync(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """The same, for tests that drive processes synchronously."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except sqlite3.OperationalError:
            pass  # a daemon still creating its database: not yet
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def cli(*args: str, config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `moltsched --config CONFIG ARGS...` and capture its output."""
    return subprocess.run(
        [MOLTSCHED, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"MOLTSCHED_LOG_LEVEL": "INFO"},
    )


async def acli(*args: str, config: Path | str) -> subprocess.CompletedProcess[str]:
    """`cli`, for async tests (which must not block the loop their emulator runs on)."""
    proc = await asyncio.create_subprocess_exec(
        MOLTSCHED,
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def ticking(root: Path) -> tuple[Path, Path]:
    """A configuration in `root` with one task that runs every second; (config, database)."""
    (root / "tasks").mkdir()
    (root / "tasks" / "tick.sh").write_text("echo tick\n")
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1s}\n")
    return config, root / "state" / "moltsched.db"


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database as another process would."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for init to reap it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def running_program(db: Path, task: str, program: str) -> bool:
    """Whether a run of `task` has `program` running (by its name): for a script, proof
    that what comes before it in the script was done."""
    for pid in processes_of(db, {task}):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == program:
                return True
    return False


def processes_of(db: Path, tasks: set[str]) -> list[int]:
    """Every process on the machine that a run of one of `tasks` (of this database) started:
    they all carry the run's environment."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(
                item.split(b"=", 1)
                for item in (proc / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if env.get(b"MOLTSCHED_DB") == str(db).encode() and (
            env.get(b"MOLTSCHED_TASK_ID", b"").decode() in tasks
        ):
            found.append(int(proc.name))
    return found


# The ways a script leaves something running and exits (each writes its pid to {pids}).
ESCAPES = {
    # The everyday ways a script leaves something running and exits.
    "setsid": "setsid bash -c 'echo $$ >> {pids}; exec sleep 300' &",
    "subshell-setsid": "( setsid bash -c 'echo $$ >> {pids}; exec sleep 300' & )",
    "nohup": "nohup bash -c 'echo $$ >> {pids}; exec sleep 300' >/dev/null 2>&1 &",
    "double-fork": (
        "python3 -c 'import os,sys\n"
        "if os.fork(): sys.exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): sys.exit(0)\n"
        "fd = os.open(os.devnull, os.O_RDWR)\n"
        "[os.dup2(fd, n) for n in (0, 1, 2)]\n"
        'open("{pids}", "a").write(str(os.getpid()) + "\\n")\n'
        'os.execvp("sleep", ["sleep", "300"])\''
    ),
    "ignores-term": (
        "setsid bash -c 'trap \"\" TERM; echo $$ >> {pids}; while :; do sleep 1; done' &"
    ),
    "clears-env": "env -i setsid /bin/sleep 300 & echo $! >> {pids}",
}


@contextlib.contextmanager
def small_disk(state: Path) -> Iterator[Path]:
    """A 4 MB filesystem at `state` (skips the test where it cannot be mounted); yields the
    file that fills it (`fill`)."""
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield state / "filler"
    finally:
        subprocess.run(["umount", str(state)], check=False)


def fill(filler: Path) -> None:
    """Fill the disk `filler` is on to the last byte (see `small_disk`)."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


async def spawn_daemon(config: Path, log: BinaryIO) -> asyncio.subprocess.Process:
    """The real `moltsched daemon` on `config`, from an async test; its log (INFO) to `log`."""
    return await asyncio.create_subprocess_exec(
        MOLTSCHED,
        "--config",
        str(config),
        "daemon",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
        env=os.environ | {"MOLTSCHED_LOG_LEVEL": "INFO"},
    )
