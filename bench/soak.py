"""`make soak`: the daemon under steady load for a while (SOAK_SECONDS, default 600).

A few hundred tasks due every 1-5 s (some failing, some checkpointing), Signal connected to
the emulator with an admin asking `status` every few seconds. Reports RSS, open file
descriptors and runs at the start and the end of the measured window, and checks that no task
missed or doubled a run: each ran as many times as its interval fits into the window, +-1.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from support.signal_service import ACCOUNT, ALICE, SignalService, text_frame

MOLTSCHED = str(Path(sys.executable).parent / "moltsched")
# 200 tasks every 1-5 s is ~90 runs/s. At ~130/s this 2-core VM's disk was the limit (100%
# I/O wait: two commits a run, fsync'd checkpoint saves): then 1 s tasks miss slots, and say so.
TASKS = int(os.environ.get("SOAK_TASKS", "200"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
WARMUP = 15.0

CHECKPOINTER = """#!/usr/bin/env -S ${MOLTSCHED_PYTHON}
from scheduler_core.checkpoint import load_checkpoint, save_checkpoint
n = (load_checkpoint() or {"n": 0})["n"] + 1
save_checkpoint({"n": n})
"""


def interval(i: int) -> int:
    return 1 + i % 5


def config_text(service: str, state: Path, tasks_dir: Path) -> str:
    lines = [f"state_dir: {state}", f"tasks_dir: {tasks_dir}", "max_concurrent: 8", "tasks:"]
    for i in range(TASKS):
        # Failing and checkpointing tasks every 5 s: a Python start-up per checkpoint run is the
        # dearest thing here, and the soak is about steady state, not overload (~90 runs/s).
        if i % 10 == 4:
            body = "script: fail.sh"
        elif i % 10 == 9:
            body = "script: checkpoint.py"
        else:
            body = "script: ok.sh"
        lines.append(f"  - {{id: s{i}, {body}, every: {interval(i)}s, catch_up: skip}}")
    lines += [
        "signal:",
        f"  service: {service}",
        f'  account: "{ACCOUNT}"',
        f'  admins: ["{ALICE}"]',
        # An admin asking every 5 s is twice the default sending limit (6 a minute).
        "  send_per_minute: 60",
        "alerts: {after_failures: 1, repeat_every: 1d}",
    ]
    return "\n".join(lines) + "\n"


def sample(pid: int, db: Path) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS"))
    conn = sqlite3.connect(db, timeout=30)
    runs = conn.execute("SELECT COUNT(*) FROM run").fetchone()[0]
    conn.close()
    return {
        "rss_mb": rss / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "runs": runs,
        "time": time.time(),
    }


async def main() -> int:
    service = SignalService()
    await service.start()
    with tempfile.TemporaryDirectory(prefix="moltsched-soak-") as td:
        root = Path(td)
        tasks = root / "tasks"
        tasks.mkdir()
        (tasks / "ok.sh").write_text("echo ok\n")
        (tasks / "fail.sh").write_text("echo 'failing on purpose' >&2; exit 1\n")
        (tasks / "checkpoint.py").write_text(CHECKPOINTER)
        config = root / "moltsched.yaml"
        config.write_text(config_text(service.service, root / "state", tasks))
        db = root / "state" / "moltsched.db"
        with open(root / "daemon.log", "wb") as log:  # noqa: ASYNC230 - before the loop works
            daemon = await asyncio.create_subprocess_exec(
                MOLTSCHED,
                "--config",
                str(config),
                "daemon",
                stderr=log,
                env=os.environ | {"MOLTSCHED_LOG_LEVEL": os.environ.get("SOAK_LOG", "WARNING")},
            )
        await service.wait_connected(60)
        print(f"soak: {TASKS} tasks every 1-5 s for {SECONDS:.0f} s (after {WARMUP:.0f} s warm-up)")
        await asyncio.sleep(WARMUP)
        start = sample(daemon.pid, db)
        asked = answered_before = len(service.sent)
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            await service.push(text_frame("status"))
            asked += 1
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        end = sample(daemon.pid, db)
        daemon.send_signal(signal.SIGTERM)
        code = await daemon.wait()
        await service.stop()

        window = end["time"] - start["time"]
        conn = sqlite3.connect(db)
        bad = []
        scheduled = 0.0  # the floor: what the schedule asks for in the window
        for i in range(TASKS):
            n = conn.execute(
                "SELECT COUNT(*) FROM run WHERE task_id = ? AND started >= ? AND started < ?",
                (f"s{i}", start["time"], end["time"]),
            ).fetchone()[0]
            expected = window / interval(i)
            scheduled += expected
            if abs(n - expected) > 1.5:
                bad.append((f"s{i}", n, round(expected, 1)))
        missed = conn.execute("SELECT COUNT(*) FROM log WHERE action = 'missed'").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        (first,) = conn.execute("SELECT MIN(time) FROM log").fetchone()
        for at, task, message in conn.execute(
            "SELECT time, task_id, message FROM log WHERE action = 'missed' LIMIT 10"
        ):
            print(f"  missed at +{at - first:.1f}s: {task}: {message}")
        conn.close()
        replies = sum(1 for m in service.sent if m["message"].startswith(f"{TASKS} task(s)"))
        # Failure alerts that come together are folded into digests: count the tasks named.
        failing = {f"s{i}" for i in range(TASKS) if i % 10 == 4}
        text = "\n".join(m["message"] for m in service.sent if "failed" in m["message"])
        alerts = len({t for t in failing if re.search(rf"\b{t}\b", text)})

    print(f"  {'':<24}{'start':>10}{'end':>10}{'ratio':>10}")
    for key in ("rss_mb", "fds"):
        ratio = end[key] / start[key]
        print(f"  {key:<24}{start[key]:>10.1f}{end[key]:>10.1f}{ratio:>9.2f}x")
    print(f"  {'runs (total)':<24}{start['runs']:>10.0f}{end['runs']:>10.0f}")
    done = end["runs"] - start["runs"]
    print(
        f"  runs in the window        {done:.0f} of {scheduled:.0f} scheduled "
        f"({done / scheduled:.3f}x), {done / window:.1f}/s"
    )
    print(f"  status answered           {replies} of {asked - answered_before} asked")
    print(f"  failing tasks alerted     {alerts} (one per failing task: {TASKS // 10})")
    print(f"  missed-slot log entries   {missed}")
    print(f"  tasks off their count     {len(bad)} {bad[:5]}")
    print(f"  integrity_check           {integrity}; daemon exit code {code}")
    ok = (
        not bad
        and integrity == "ok"
        and code == 0
        and alerts == TASKS // 10
        and end["rss_mb"] - start["rss_mb"] < 10
        and end["fds"] - start["fds"] <= 3 * 8  # pipes and pidfds of up to 8 runs in flight
    )
    print("  verdict                  ", "ok" if ok else "PROBLEM")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
