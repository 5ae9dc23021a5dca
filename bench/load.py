"""Load: 10,000 tasks configured, all due at once (a burst of 10,000 runs), and meanwhile a
hundred `moltsched --json status` calls in parallel and a burst of chat commands pushed by the
Signal emulator as fast as it can.

`scenario()` is the load itself; tests/test_load.py runs it and checks that everything was
answered, every run done, nothing "database is locked", memory bounded. `make load` runs it
with floors measured in the same run: the same status calls and chat commands against the
same daemon once it is idle, and a raw asyncio burst of the same script (bench/rivals.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.systems import burst_rate, percentile, write_config
from support.daemon import MOLTSCHED, proc_status
from support.signal_service import ACCOUNT, ALICE, SignalService, text_frame

T = TypeVar("T")

TASKS = int(os.environ.get("LOAD_TASKS", "10000"))
CALLERS = 100
CHATS = 300
CONCURRENCY = 4
FLOOR_TASKS = 1000  # the raw floor's burst (bench.rivals)


def row(name: str, value: str, floor: str, ratio: str, note: str) -> None:
    print(f"  {name:<38} {value:>10} {floor:>10} {ratio:>8}   {note}")


def header(title: str) -> None:
    print(f"\n{title}")
    row("measure", "moltsched", "floor", "ratio", "")


@dataclass
class Round:
    """One round of status calls and chat commands."""

    status_s: list[float] = field(default_factory=list)  # wall time of each call
    status_answers: list[dict[str, object]] = field(default_factory=list)
    status_failures: list[str] = field(default_factory=list)
    chats: int = 0
    pushed_s: float = 0.0  # how long pushing them all took
    answered_s: float = 0.0  # from the first push to the last answer
    answers: list[str] = field(default_factory=list)


@dataclass
class Load:
    """What one scenario measured."""

    tasks: int
    busy: Round
    idle: Round | None
    runs_ok: int
    burst_s: float  # first run started to last run ended
    rss_start_mb: float  # connected, the burst just begun
    rss_peak_mb: float
    rss_end_mb: float
    fds_start: int
    fds_end: int
    log: str
    exit_code: int
    integrity: str


async def status_call(config: Path, into: Round) -> None:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        MOLTSCHED,
        "--config",
        str(config),
        "--json",
        "status",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    into.status_s.append(time.perf_counter() - began)
    if proc.returncode != 0:
        into.status_failures.append(err.decode())
        return
    into.status_answers.append(json.loads(out))


async def chat_burst(service: SignalService, chats: int, into: Round) -> None:
    """Admin commands, pushed without waiting for answers; each asks for one answer."""
    texts = ["status", "logs", "help", "status:t{}", "logs:t{}"]
    before = len(service.sent)
    began = time.perf_counter()
    for n in range(chats):
        # Each text differs (by trailing spaces, which the grammar ignores): identical
        # messages arriving together get one answer, and this measures a burst of answers.
        text = texts[n % len(texts)].format(n) + " " * (n // len(texts))
        await service.push(text_frame(text))
    into.chats = chats
    into.pushed_s = time.perf_counter() - began
    sent = await service.wait_sent(before + chats, timeout=600)
    into.answered_s = time.perf_counter() - began
    into.answers = [m["message"] for m in sent[before:]]


async def round_of(config: Path, service: SignalService, callers: int, chats: int) -> Round:
    result = Round()
    await asyncio.gather(
        chat_burst(service, chats, result),
        *(status_call(config, result) for _ in range(callers)),
    )
    return result


async def scenario(
    root: Path,
    tasks: int = TASKS,
    callers: int = CALLERS,
    chats: int = CHATS,
    *,
    idle_round: bool = False,
) -> Load:
    """The daemon on `tasks` tasks that all fall due at start, loaded while it works through
    them; with `idle_round`, the same load again once it is idle (the floor)."""
    async with SignalService() as service:
        config = write_config(
            root,
            [{"id": f"t{i}", "script": "noop.sh", "every": "1h"} for i in range(tasks)],
            max_concurrent=CONCURRENCY,
            # The command path under load, not Signal's sending limit (which would hold
            # 300 answers to one chat for most of an hour).
            signal={
                "service": service.service,
                "account": ACCOUNT,
                "admins": [ALICE],
                "send_per_minute": 600,
                "send_burst": 1000,
            },
        )
        db = root / "state" / "moltsched.db"
        log = root / "daemon.log"
        with open(log, "wb") as err:  # noqa: ASYNC230 - before the loop has work
            daemon = await asyncio.create_subprocess_exec(
                MOLTSCHED, "--config", str(config), "daemon", stderr=err
            )
        await alive(daemon, log, service.wait_connected(120))
        fds_start = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        rss_start = proc_status(daemon.pid, "VmRSS") / 1024
        busy = await alive(daemon, log, round_of(config, service, callers, chats))
        conn = sqlite3.connect(db, timeout=30)
        done = "SELECT COUNT(*) FROM run WHERE outcome IS NOT NULL"

        async def all_done() -> None:
            while conn.execute(done).fetchone()[0] < tasks:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.2)

        await alive(daemon, log, asyncio.wait_for(all_done(), 900))
        idle = (
            await alive(daemon, log, round_of(config, service, callers, chats))
            if idle_round
            else None
        )
        rss_peak = proc_status(daemon.pid, "VmHWM") / 1024
        rss_end = proc_status(daemon.pid, "VmRSS") / 1024
        # Sending hundreds of answers fills signalbot's HTTP pool (up to 100 keep-alive
        # connections, closed after 15 s idle): wait for that, then count.
        with contextlib.suppress(TimeoutError):  # what is still open then is counted
            async with asyncio.timeout(60):
                while (fds_end := len(os.listdir(f"/proc/{daemon.pid}/fd"))) > fds_start + 12:  # noqa: ASYNC110
                    await asyncio.sleep(1)
        daemon.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.wait(), 60)
        runs_ok = conn.execute("SELECT COUNT(*) FROM run WHERE outcome = 'success'").fetchone()[0]
        first, last = conn.execute("SELECT MIN(started), MAX(ended) FROM run").fetchone()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.close()
    return Load(
        tasks=tasks,
        busy=busy,
        idle=idle,
        runs_ok=runs_ok,
        burst_s=last - first,
        rss_start_mb=rss_start,
        rss_peak_mb=rss_peak,
        rss_end_mb=rss_end,
        fds_start=fds_start,
        fds_end=fds_end,
        log=log.read_text(),
        exit_code=code,
        integrity=integrity,
    )


async def alive(daemon: asyncio.subprocess.Process, log: Path, waiting: Awaitable[T]) -> T:
    """What `waiting` gives, unless the daemon exits first: then RuntimeError with the end
    of its log, at once (the waits here are long, and a dead daemon answers nothing)."""
    work = asyncio.ensure_future(waiting)
    ended = asyncio.ensure_future(daemon.wait())
    try:
        await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
    if not work.done():
        work.cancel()
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])  # noqa: ASYNC240 - it is over
        raise RuntimeError(f"the daemon exited ({daemon.returncode}) under load:\n{tail}")
    return work.result()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="moltsched-load-") as td:
        load = asyncio.run(scenario(Path(td) / "daemon", idle_round=True))
    floor_rate = burst_rate("floor", FLOOR_TASKS)
    busy, idle = load.busy, load.idle
    assert idle is not None
    print(f"moltsched load on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    header(
        f"load: {load.tasks:,} tasks all due at start, max_concurrent {CONCURRENCY}; during the "
        f"burst {len(busy.status_s)} parallel `status --json` and {busy.chats} chat commands "
        "(floor: the same against the idle daemon)"
    )
    for name, p in (("p50", 50), ("p99", 99)):
        a, b = percentile(busy.status_s, p) * 1000, percentile(idle.status_s, p) * 1000
        row(f"status --json {name} (ms)", f"{a:.0f}", f"{b:.0f}", f"{a / b:.2f}x", "")
    a, b = busy.chats / busy.answered_s, idle.chats / idle.answered_s
    row("chat answers per second", f"{a:.0f}", f"{b:.0f}", f"{a / b:.2f}x", "")
    row("chat commands pushed per second", f"{busy.chats / busy.pushed_s:.0f}", "", "", "")
    rate = load.tasks / load.burst_s
    row(
        "burst runs per second (floor: raw)",
        f"{rate:.0f}",
        f"{floor_rate:.0f}",
        f"{rate / floor_rate:.2f}x",
        f"raw: {FLOOR_TASKS} runs, no load",
    )
    a, b = load.rss_peak_mb, load.rss_start_mb
    row("daemon peak RSS (MB; floor: at start)", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x", "")
    a, b = load.rss_end_mb, load.rss_start_mb
    row("daemon RSS at the end (MB)", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x", "")
    c, d = load.fds_end, load.fds_start
    row("daemon open fds at the end", f"{c}", f"{d}", f"{c / d:.2f}x", "")
    failures = len(busy.status_failures) + len(idle.status_failures)
    answered = len(busy.answers) + len(idle.answers)
    locked = "database is locked" in load.log
    print(
        f"  runs ok {load.runs_ok:,} of {load.tasks:,}; status failures {failures}; "
        f"chat answered {answered} of {busy.chats + idle.chats}; "
        f"'database is locked' {'SEEN' if locked else 'never'}; "
        f"integrity {load.integrity}; exit {load.exit_code}"
    )
    ok = load.runs_ok == load.tasks and not failures and not locked and load.exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
