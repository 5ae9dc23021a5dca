"""The three systems (the raw floor, APScheduler 3.11, moltsched), each started the same way
from nothing and ready when it says READY=1 on its notify socket, and what every benchmark
measures them with."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.daemon import DaemonProcess

REPO = Path(__file__).resolve().parents[1]
QUICK = bool(os.environ.get("BENCH_QUICK"))
ROUNDS = 1 if QUICK else 3
REPEATS = 5 if QUICK else 15
CONCURRENCY = 4
SYSTEMS = ("floor", "aps", "moltsched")
STAMP = 'echo "$EPOCHREALTIME"\n'

# --- running them ----------------------------------------------------------------


def write_config(root: Path, tasks: list[dict[str, object]], **more: object) -> Path:
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / "stamp.sh").write_text(STAMP)
    (root / "tasks" / "noop.sh").write_text("exit 0\n")
    path = root / "moltsched.json"
    settings = {"state_dir": "state", "tasks_dir": "tasks", "max_concurrent": CONCURRENCY}
    path.write_text(json.dumps(settings | {"timezone": "UTC", "tasks": tasks} | more))
    return path


def every(n: int, prefix: str, interval: object = "1d", script: str = "noop.sh") -> list[Any]:
    return [{"id": f"{prefix}{i}", "script": script, "every": interval} for i in range(n)]


def yearly(n: int, prefix: str) -> list[dict[str, object]]:
    # Due once a year: present, scheduled, and not running during the measurement.
    return [{"id": f"{prefix}{i}", "script": "noop.sh", "cron": "0 0 1 1 *"} for i in range(n)]


def process(system: str, config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
    argv = None
    if system != "moltsched":
        argv = [sys.executable, "-m", "bench.rivals", system, str(config)]
    env = {"MOLTSCHED_LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO)} | (env or {})
    return DaemonProcess(config, env=env, argv=argv)


@contextmanager
def running(system: str, config: Path, env: dict[str, str] | None = None) -> Iterator[Any]:
    d = process(system, config, env)
    d.start()
    try:
        yield d
    finally:
        d.kill()


def db_of(system: str, config: Path) -> Path:
    return config.parent / ("state/moltsched.db" if system == "moltsched" else "rival.db")


def finished_runs(system: str, config: Path) -> list[tuple[float | None, float, str]]:
    """(due, ended, stdout) of every finished run."""
    with contextlib.closing(sqlite3.connect(db_of(system, config), timeout=30)) as conn:
        return conn.execute(
            "SELECT due, ended, stdout FROM run WHERE ended IS NOT NULL ORDER BY ended"
        ).fetchall()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wakeups(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def timed(
    argv: list[str], repeats: int = REPEATS, check: Callable[[bytes], None] | None = None
) -> float:
    """Median wall time of running `argv` to its end (ms)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, check=True).stdout
        times.append(time.perf_counter() - t)
        if check:
            check(out)
    return float(statistics.median(times) * 1000)


def burst_rate(system: str, n: int) -> float:
    """Runs per second from spawning the system to its n-th run recorded (n tasks due at
    once, CONCURRENCY at a time)."""
    with tempfile.TemporaryDirectory() as td:
        config = write_config(Path(td), every(n, "b"))
        spawned = time.time()
        with running(system, config):
            deadline = time.monotonic() + 600
            while len(done := finished_runs(system, config)) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system}: the burst of {n} did not finish")
                time.sleep(0.05)
        return n / (done[n - 1][1] - spawned)
