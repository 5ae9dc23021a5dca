"""`make bench`: moltsched against a raw asyncio floor and APScheduler 3.11, side by side.

All three are measured in the same run, the same way, because these machines are noisy:
each is a process started from nothing (`bench.rivals` has the floor and the APScheduler
program), ready when it says READY=1 on its notify socket, running the same bash scripts with
the same concurrency and committing a SQLite row per run. The tables give each system's
figure and moltsched's ratio to APScheduler's and to the floor's.

`python -m bench NAME...` runs some (names: burst startup memory status lateness idle chat
scaling); `BENCH_QUICK=1` makes every figure cheaper (fewer rounds and repeats).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.systems import (
    CONCURRENCY,
    QUICK,
    REPEATS,
    ROUNDS,
    SYSTEMS,
    burst_rate,
    cpu_seconds,
    every,
    finished_runs,
    percentile,
    process,
    running,
    timed,
    wakeups,
    write_config,
    yearly,
)
from support.daemon import MOLTSCHED, proc_status
from support.signal_service import ACCOUNT, ALICE, SignalService, text_frame

# --- the table --------------------------------------------------------------------------------

FIGURES: list[tuple[str, dict[str, float | None], str, bool]] = []


def figure(
    name: str, values: dict[str, float | None], unit: str, higher_better: bool = False
) -> None:
    """One row: the three systems' values, and moltsched's ratios to APScheduler and floor."""
    FIGURES.append((name, values, unit, higher_better))
    cells = [_fmt(values.get(s)) for s in SYSTEMS]
    ours = values.get("moltsched")
    ratios = [_ratio(ours, values.get(s), higher_better) for s in ("aps", "floor")]
    print(f"| {name} ({unit}) | " + " | ".join(cells + ratios) + " |", flush=True)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _ratio(ours: float | None, other: float | None, higher_better: bool) -> str:
    if ours is None or not other:
        return "-"
    r = ours / other
    good = r >= 1 if higher_better else r <= 1
    return f"{r:.2f}x {'ahead' if good else 'behind'}" if r != 1 else "1.00x even"


def section(title: str) -> None:
    print(f"\n### {title}\n")
    print("| figure | raw floor | APScheduler 3.11 | moltsched | vs APScheduler | vs floor |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)


# --- 1. burst ----------------------------------------------------------------------------------


def bench_burst(sizes: tuple[int, ...] = (200, 1000)) -> None:
    section(f"burst: N tasks due at once, {CONCURRENCY} at a time, spawn to the N-th run recorded")
    for n in sizes:
        rates: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        for _ in range(ROUNDS):  # alternating, best of each: one round swings by 15%
            for system in SYSTEMS:
                rates[system].append(burst_rate(system, n))
        best = {s: max(r) for s, r in rates.items()}
        figure(f"burst N={n:,}, best of {ROUNDS}", dict(best), "runs/s", higher_better=True)


# --- 2. start-up -------------------------------------------------------------------------------


def bench_startup(sizes: tuple[int, ...] = (1000, 10_000)) -> None:
    section("start-up: spawn to ready (READY=1), median; then a restart, the file unchanged")
    for n in sizes:
        first: dict[str, float | None] = {}
        again: dict[str, float | None] = {}
        for system in SYSTEMS:
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(ROUNDS):
                with tempfile.TemporaryDirectory() as td:
                    config = write_config(Path(td), yearly(n, "y"))
                    for kind in times:
                        d = process(system, config).start()
                        kind.append((d.ready - d.spawned) * 1000)
                        d.stop()
            first[system], again[system] = (statistics.median(t) for t in times)
        figure(f"first start, {n:,} tasks", first, "ms")
        figure(f"restart, {n:,} tasks", again, "ms")


# --- 3. memory ---------------------------------------------------------------------------------


def idle_rss(system: str, n: int, settle: float = 2.0) -> float:
    """Peak RSS (MB) of the system with n tasks, after `settle` seconds idle."""
    with (
        tempfile.TemporaryDirectory() as td,
        running(system, write_config(Path(td), yearly(n, "m"))) as d,
    ):
        time.sleep(settle)
        return proc_status(d.pid, "VmHWM") / 1024


class Emulator:
    """The Signal emulator on a thread of its own, for a daemon to connect to."""

    def __enter__(self) -> Emulator:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = SignalService()
        self.call(self.service.start())
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *_: object) -> None:
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def signal_section(self) -> dict[str, object]:
        return {"service": self.service.service, "account": ACCOUNT, "admins": [ALICE]}


def bench_memory() -> None:
    section("memory: peak RSS, idle")
    figure("idle, 1,000 tasks", {s: idle_rss(s, 1000) for s in SYSTEMS}, "MB")
    figure("10,000 tasks", {s: idle_rss(s, 10_000) for s in SYSTEMS}, "MB")
    with Emulator() as emu, tempfile.TemporaryDirectory() as td:
        config = write_config(Path(td), yearly(10, "c"), signal=emu.signal_section())
        with running("moltsched", config) as d:
            emu.call(emu.service.wait_connected())
            time.sleep(2)
            rss = proc_status(d.pid, "VmRSS") / 1024
    figure("Signal connected, 10 tasks (VmRSS)", {"moltsched": rss}, "MB")


# --- 4. status --json --------------------------------------------------------------------------


def status_times(n: int, repeats: int = REPEATS) -> dict[str, float | None]:
    """`status --json` as whole processes: moltsched with its daemon up and with none, a
    status command built on APScheduler, and a bare interpreter as the floor."""

    def all_tasks(out: bytes) -> None:
        assert json.loads(out)["task_count"] == n

    with tempfile.TemporaryDirectory() as td:
        config = write_config(Path(td), yearly(n, "s"))
        argv = [MOLTSCHED, "--config", str(config), "--json", "status"]
        with running("moltsched", config):
            online = timed(argv, repeats, all_tasks)
        # With no daemon, as after it has stopped: the database holds every task's row (a
        # database that never saw the tasks is cheaper to answer from, and not what a user has).
        offline = timed(argv, max(3, repeats // 3), all_tasks)
        with running("aps", config):
            rival = [sys.executable, "-m", "bench.rivals", "aps-status", str(config)]
            aps = timed(rival, repeats, all_tasks)
    floor = timed([sys.executable, "-c", "pass"], repeats)
    return {"floor": floor, "aps": aps, "moltsched": online, "offline": offline}


def bench_status() -> None:
    section("`status --json` with 10,000 tasks, whole process, median")
    t = status_times(10_000)
    figure("daemon up", {k: t[k] for k in SYSTEMS}, "ms")
    figure("no daemon", {"floor": t["floor"], "moltsched": t["offline"]}, "ms")


# --- 5. lateness -------------------------------------------------------------------------------

LATENESS_TASKS = 10
LATENESS_SECONDS = 20


def bench_lateness() -> None:
    """The three run in the same 20 s, their slots a third of a second apart: they see the
    same machine, and never spawn at the same instant."""
    with tempfile.TemporaryDirectory() as td:
        roots = {s: Path(td) / s for s in SYSTEMS}
        tasks = every(LATENESS_TASKS, "t", 1, "stamp.sh")
        configs = {s: write_config(roots[s], tasks, max_concurrent=LATENESS_TASKS) for s in SYSTEMS}
        with running("moltsched", configs["moltsched"]) as ours:
            conn = sqlite3.connect(ours.db, timeout=30)
            anchor = None
            while anchor is None:  # moltsched's slots: its first due time, plus whole seconds
                anchor = conn.execute("SELECT MIN(due) FROM run").fetchone()[0]
                time.sleep(0.05)
            conn.close()
            first = anchor + math.ceil(time.time() - anchor) + 2
            window = (first - 0.001, first + LATENESS_SECONDS - 0.5)
            rivals = {}
            for k, system in enumerate(("floor", "aps"), start=1):
                env = {"BENCH_ANCHOR": str(first + k / 3)}
                rivals[system] = process(system, configs[system], env).start()
            try:
                time.sleep(max(0.0, first + LATENESS_SECONDS + 1 - time.time()))
            finally:
                for d in rivals.values():
                    d.kill()
        late: dict[str, list[float]] = {}
        for system in SYSTEMS:
            shift = 0.0 if system == "moltsched" else (1 if system == "floor" else 2) / 3
            lo, hi = window[0] + shift, window[1] + shift
            late[system] = [
                (float(out.strip()) - due) * 1000
                for due, _, out in finished_runs(system, configs[system])
                if due is not None and lo <= due < hi and out.strip()
            ]
    counts = ", ".join(f"{s} {len(v)}" for s, v in late.items())
    section(f"start lateness: {LATENESS_TASKS} tasks every 1 s for {LATENESS_SECONDS} s ({counts})")
    for name, p in (("p50", 50), ("p99", 99), ("max", 100)):
        figure(f"lateness {name}", {s: percentile(v, p) for s, v in late.items()}, "ms")


# --- 6. idle -----------------------------------------------------------------------------------

IDLE_SECONDS = 30


def bench_idle() -> None:
    """The three idle side by side, 1,000 tasks each, none due."""
    with tempfile.TemporaryDirectory() as td:
        procs = {}
        try:
            for system in SYSTEMS:
                config = write_config(Path(td) / system, yearly(1000, "i"))
                procs[system] = process(system, config).start()
            time.sleep(2)
            before = {s: (cpu_seconds(d.pid), wakeups(d.pid)) for s, d in procs.items()}
            time.sleep(5 if QUICK else IDLE_SECONDS)
            after = {s: (cpu_seconds(d.pid), wakeups(d.pid)) for s, d in procs.items()}
        finally:
            for d in procs.values():
                d.kill()
    section(f"idle: 1,000 tasks, none due, over {5 if QUICK else IDLE_SECONDS} s")
    figure("CPU", {s: (after[s][0] - before[s][0]) * 1000 for s in SYSTEMS}, "ms")
    figure("context switches", {s: after[s][1] - before[s][1] for s in SYSTEMS}, "count")


# --- 7. chat -----------------------------------------------------------------------------------


def bench_chat(messages: int = 20 if QUICK else 100) -> None:
    """`status` from the admin's phone: the frame pushed to the reply sent, through the
    emulator, one message at a time."""
    with Emulator() as emu, tempfile.TemporaryDirectory() as td:
        # The command path, not Signal's sending limit (which holds an 11th answer a while).
        fast = emu.signal_section() | {"send_per_minute": 600, "send_burst": 200}
        config = write_config(Path(td), yearly(10, "c"), signal=fast)
        with running("moltsched", config):
            emu.call(emu.service.wait_connected())
            took = []
            for _ in range(messages):
                before = len(emu.service.sent)
                pushed = time.monotonic()
                emu.call(emu.service.push(text_frame("status")))
                emu.call(emu.service.wait_sent(before + 1))
                took.append((emu.service.sent_at[before] - pushed) * 1000)
    section(f"chat: `status` through the Signal emulator ({messages} messages, 10 tasks)")
    for name, p in (("p50", 50), ("p99", 99)):
        figure(f"round trip {name}", {"moltsched": percentile(took, p)}, "ms")


# --- 8. scaling --------------------------------------------------------------------------------


def bench_scaling() -> None:
    section("how cost grows: burst (all tasks due at once) and status, by number of tasks")
    for n in (100, 1000, 10_000):
        rates = {s: burst_rate(s, n) for s in SYSTEMS}
        figure(f"burst, {n:,} tasks", dict(rates), "runs/s", higher_better=True)
    for n in (100, 1000, 10_000):
        t = status_times(n, max(3, REPEATS // 3))
        figure(f"status --json, {n:,} tasks, daemon up", {k: t[k] for k in SYSTEMS}, "ms")
        figure(f"status --json, {n:,} tasks, no daemon", {"moltsched": t["offline"]}, "ms")


BENCHES = {
    "burst": bench_burst,
    "startup": bench_startup,
    "memory": bench_memory,
    "status": bench_status,
    "lateness": bench_lateness,
    "idle": bench_idle,
    "chat": bench_chat,
    "scaling": bench_scaling,
}


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    # Loaded configurations are cached per user (config.cache): not in ~/.cache for these.
    with tempfile.TemporaryDirectory(prefix="moltsched-bench-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        print(f"moltsched benchmarks on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        for name in names:
            BENCHES[name]()


if __name__ == "__main__":
    main()
