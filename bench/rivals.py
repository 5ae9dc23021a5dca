"""The two systems moltsched is measured against, as programs run the way the daemon is run.

`python -m bench.rivals floor CONFIG` is the floor: a raw asyncio loop, a heap of due times,
a semaphore, bash spawned per run and one committed SQLite row per run; nothing else.
`python -m bench.rivals aps CONFIG` is APScheduler 3.11's `AsyncIOScheduler` with one job per
task (`max_instances=1`), the same semaphore, spawn and row. Both read moltsched's own
configuration (the JSON the benchmarks write), say `READY=1` on `$NOTIFY_SOCKET` when their
jobs are scheduled, and stop on SIGTERM. Their rows go to `rival.db` beside the
configuration: `run(task_id, due, started, ended, stdout)`, and for `aps status` a `job` row
per task with its next run time, which `python -m bench.rivals aps-status CONFIG` prints as
JSON (the whole-process figure a status command built on APScheduler would cost).

A task's first run is due at `$BENCH_ANCHOR` (an epoch time) if it is set, else at once, then
every `every` seconds; `cron` tasks are taken as due in a year (the benchmarks use cron only
for tasks that must stay idle).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiosqlite

YEAR_S = 365 * 86400.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS run (id INTEGER PRIMARY KEY, task_id TEXT, due REAL, "
    "started REAL, ended REAL, stdout TEXT)",
    "CREATE TABLE IF NOT EXISTS job (id TEXT PRIMARY KEY, next_run REAL)",
)


def seconds(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    return float(text[:-1]) * _UNITS[text[-1]]


def notify_ready() -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", path)


class Recorder:
    """Spawns a task's script and commits its row, at most `concurrency` at once."""

    def __init__(self, config: Path, conn: aiosqlite.Connection, concurrency: int) -> None:
        self.tasks_dir = config.parent / "tasks"
        self.conn = conn
        self.sem = asyncio.Semaphore(concurrency)
        self.lock = asyncio.Lock()

    async def run(self, task: dict[str, Any], due: float) -> None:
        async with self.sem:
            started = time.time()
            proc = await asyncio.create_subprocess_exec(
                "bash",
                str(self.tasks_dir / task["script"]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            out, _ = await proc.communicate()
            async with self.lock:
                await self.conn.execute(
                    "INSERT INTO run (task_id, due, started, ended, stdout) VALUES (?, ?, ?, ?, ?)",
                    (task["id"], due, started, time.time(), out.decode()),
                )
                await self.conn.commit()


async def open_db(config: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(config.parent / "rival.db")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    for statement in _SCHEMA:
        await conn.execute(statement)
    await conn.commit()
    return conn


def first_due(task: dict[str, Any], now: float) -> float:
    if "cron" in task:
        return now + YEAR_S
    return float(os.environ.get("BENCH_ANCHOR", now))


async def floor(config: Path, data: dict[str, Any]) -> None:
    conn = await open_db(config)
    rec = Recorder(config, conn, data["max_concurrent"])
    now = time.time()
    heap = [(first_due(t, now), i) for i, t in enumerate(data["tasks"])]
    heapq.heapify(heap)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    notify_ready()
    runs: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        due, i = heap[0]
        delay = due - time.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            continue
        task = data["tasks"][i]
        heapq.heapreplace(heap, (due + seconds(task.get("every", YEAR_S)), i))
        run = asyncio.create_task(rec.run(task, due))
        runs.add(run)
        run.add_done_callback(runs.discard)
    await conn.close()


async def aps(config: Path, data: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    conn = await open_db(config)
    rec = Recorder(config, conn, data["max_concurrent"])
    scheduler = AsyncIOScheduler(
        timezone=UTC, job_defaults={"max_instances": 1, "misfire_grace_time": None}
    )
    now = time.time()

    async def job(task: dict[str, Any]) -> None:
        # The slot this run is for: APScheduler does not pass it, so it is the last one due.
        first, interval = firsts[task["id"]], seconds(task.get("every", YEAR_S))
        await rec.run(task, first + max(0.0, (time.time() - first) // interval) * interval)

    firsts: dict[str, float] = {}
    for task in data["tasks"]:
        due = first_due(task, now)
        if "cron" in task:
            trigger: Any = CronTrigger.from_crontab(task["cron"], timezone=UTC)
        else:
            trigger = IntervalTrigger(seconds=seconds(task["every"]), timezone=UTC)
        scheduler.add_job(
            job,
            trigger,
            args=[task],
            id=task["id"],
            next_run_time=datetime.fromtimestamp(due, UTC),
        )
        firsts[task["id"]] = due
    scheduler.start()
    rows = [(j.id, j.next_run_time.timestamp()) for j in scheduler.get_jobs()]
    await conn.executemany("INSERT OR REPLACE INTO job VALUES (?, ?)", rows)
    await conn.commit()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    notify_ready()
    await stop.wait()
    scheduler.shutdown(wait=False)
    await conn.close()


def aps_status(config: Path) -> None:
    """What `status --json` costs built on APScheduler: its import, the rows, the JSON."""
    import sqlite3
    from datetime import UTC, datetime

    import apscheduler  # noqa: F401  (a status command of an APScheduler app loads it)

    conn = sqlite3.connect(config.parent / "rival.db")
    jobs = [
        {"id": i, "next_run": datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")}
        for i, t in conn.execute("SELECT id, next_run FROM job")
    ]
    json.dump({"task_count": len(jobs), "tasks": jobs}, sys.stdout)


def main() -> None:
    what, config = sys.argv[1], Path(sys.argv[2])
    if what == "aps-status":
        aps_status(config)
    else:
        data = json.loads(config.read_text())
        asyncio.run(floor(config, data) if what == "floor" else aps(config, data))


if __name__ == "__main__":
    main()
