"""Interrupt a counting, checkpointing task every way a run can be cut short, on the real
daemon, and check that every item is processed and none twice beyond its last checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from support.daemon import DaemonProcess
from tests.helpers import alive, cli, query, running_program, wait_sync

N = 40

# Processes items 0..N-1, recording each, checkpointing after each.
WORKER = f"""#!/usr/bin/env -S ${{MOLTSCHED_PYTHON}}
import os, time
from scheduler_core.checkpoint import load_checkpoint, save_checkpoint

start = (load_checkpoint() or {{}}).get("next", 0)
with open("../items.log", "a") as log:
    log.write(f"run {{os.environ['MOLTSCHED_RUN_ID']}} from {{start}}\\n")
    for i in range(start, {N}):
        log.write(f"{{i}}\\n")
        log.flush()
        save_checkpoint({{"next": i + 1}})
        time.sleep(0.05)
"""

CONFIG = """
max_concurrent: 1
tasks:
  - {id: worker, script: worker.py, every: 1h, priority: 9, grace: 2s}
  - {id: quick, script: quick.sh, cron: "0 0 1 1 *"}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "worker.py").write_text(WORKER)
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    path = tmp_path / "moltsched.yaml"
    path.write_text(CONFIG)
    return path


def items(config: Path) -> list[int]:
    log = config.parent / "items.log"
    lines = log.read_text().split("\n") if log.exists() else []
    return [int(x) for x in lines if x.isdigit()]


def workers() -> list[int]:
    """The pids of the worker task's processes."""
    found = subprocess.run(["pgrep", "-f", "worker.py"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def db(config: Path) -> Path:
    return config.parent / "state" / "moltsched.db"


def last_run(config: Path) -> tuple[str, str | None]:
    return query(
        db(config),
        "SELECT cause, outcome FROM run WHERE task_id = 'worker' ORDER BY id DESC LIMIT 1",
    )[0]


def worker_going(config: Path) -> None:
    """The worker (new, hourly) starts with the daemon, as a background run."""
    wait_sync(lambda: len(items(config)) >= 10, 20, "the worker to get going")


def assert_all_items_once(config: Path, cuts: int) -> None:
    done = items(config)
    assert set(done) == set(range(N))
    assert len(done) - N <= cuts  # at most the item being saved at each cut is redone
    assert query(db(config), "PRAGMA integrity_check") == [("ok",)]


def test_shutdown_and_restart(config: Path) -> None:
    daemon = DaemonProcess(config).start()
    worker_going(config)
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 5  # grace 2s and a little
    assert last_run(config) == ("schedule", "interrupted")
    again = DaemonProcess(config).start()  # interrupted runs resume first
    try:
        wait_sync(lambda: last_run(config) == ("resume", "success"), 20, "the resumed run")
    finally:
        assert again.stop() == 0
    assert_all_items_once(config, cuts=1)


def test_kill_9_of_the_daemon_and_its_tasks(config: Path) -> None:
    daemon = DaemonProcess(config).start()
    worker_going(config)
    assert daemon.proc is not None
    pgids = {os.getpgid(pid) for pid in workers()}
    daemon.proc.kill()  # the daemon, then its runs, as a power cut or OOM kill would
    daemon.proc.wait()
    for pgid in pgids:
        os.killpg(pgid, signal.SIGKILL)
    before = json.loads(cli("--json", "checkpoint", "show", "worker", config=config).stdout)
    assert before["next"] >= 10  # what was committed is there
    again = DaemonProcess(config).start()
    try:
        wait_sync(lambda: last_run(config) == ("resume", "success"), 20, "the resumed run")
        runs = query(db(config), "SELECT outcome FROM run WHERE task_id = 'worker' ORDER BY id")
        assert runs == [("interrupted",), ("success",)]
        actions = [
            a
            for (a,) in query(
                db(config), "SELECT action FROM log WHERE task_id = 'worker' ORDER BY id"
            )
        ]
        assert actions.count("interrupted") == 1 and actions[-1] == "completed"
    finally:
        assert again.stop() == 0
    assert_all_items_once(config, cuts=1)


def test_preempted_by_an_on_demand_run(config: Path) -> None:
    daemon = DaemonProcess(config).start()
    try:
        worker_going(config)
        quick = cli("--json", "run", "quick", config=config)  # max_concurrent: 1
        assert json.loads(quick.stdout)["outcome"] == "success"
        assert json.loads(quick.stdout)["admission"] == "queued"
        wait_sync(lambda: last_run(config) == ("resume", "success"), 20, "the resumed run")
        message = query(
            db(config),
            "SELECT message FROM log WHERE task_id = 'worker' AND action = 'interrupted'",
        )[0][0]
        assert message.startswith("for an on-demand run of quick, after ")
    finally:
        assert daemon.stop() == 0
    assert_all_items_once(config, cuts=1)


def test_missed_slots_after_downtime(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n"
        "  - {id: once, script: t.sh, every: 1s, catch_up: once}\n"
        "  - {id: skip, script: t.sh, every: 1s, catch_up: skip}\n"
    )
    daemon = DaemonProcess(config).start()
    wait_sync(lambda: query(db(config), "SELECT COUNT(*) FROM run")[0][0] >= 4, 10, "runs")
    assert daemon.stop() == 0
    time.sleep(3.5)  # down for three and a half slots
    again = DaemonProcess(config).start()
    try:
        wait_sync(
            lambda: len(query(db(config), "SELECT 1 FROM log WHERE action = 'missed'")) >= 2,
            10,
            "missed entries",
        )
        missed = dict(
            query(
                db(config), "SELECT task_id, message FROM log WHERE action = 'missed' ORDER BY id"
            )
        )
        assert "slots missed since" in missed["once"]
        assert missed["once"].endswith("running one catch-up run")
        assert missed["skip"].endswith("skipped (catch_up: skip)")
        wait_sync(
            lambda: (
                query(db(config), "SELECT COUNT(*) FROM run WHERE cause = 'catch-up'") == [(1,)]
            ),
            10,
            "the catch-up run",
        )
        assert query(
            db(config), "SELECT COUNT(*) FROM run WHERE task_id = 'skip' AND cause = 'catch-up'"
        ) == [(0,)]
    finally:
        assert again.stop() == 0


@pytest.mark.parametrize("end", ["stop", "kill -9"])
def test_a_run_waiting_for_a_slot_when_the_daemon_ends_is_not_lost(
    tmp_path: Path, end: str
) -> None:
    """A slot whose run still waits for a free one when the daemon stops or crashes: the next
    start makes that run (late), where it went on to the next slot as if it had been made."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "long.sh").write_text(
        "[ -e ../long.done ] && exit 0\ntouch ../long.done\nsleep 300\n"
    )
    (tmp_path / "tasks" / "t.sh").write_text("echo ran\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "max_concurrent: 1\n"
        "tasks:\n"
        "  - {id: long, script: long.sh, every: 1h, priority: 1}\n"
        "  - {id: waits, script: t.sh, every: 1h}\n"
    )
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: running_program(db(config), "long", "sleep"), 20, "the long run")
        status = json.loads(cli("--json", "status", config=config).stdout)
        waits = {t["id"]: t for t in status["tasks"]}["waits"]
        assert waits["status"] == "queued", waits
        # Shown as next: the slot after the waiting one (the store keeps the waiting one).
        ahead = datetime.fromisoformat(waits["next_run"]).timestamp() - time.time()
        assert 3000 < ahead <= 3600, waits
    finally:
        if end == "stop":
            assert daemon.stop() == 0
        else:
            daemon.kill()
    restarted = time.time()
    again = DaemonProcess(config).start()
    try:
        wait_sync(
            lambda: (
                query(db(config), "SELECT outcome FROM run WHERE task_id = 'waits'")
                == [("success",)]
            ),
            30,
            "the waiting slot's run",
        )
        ((cause, due, out),) = query(
            db(config), "SELECT cause, due, stdout FROM run WHERE task_id = 'waits'"
        )
        assert (cause, out) == ("schedule", "ran\n") and due < restarted  # the slot it waited in
    finally:
        assert again.stop() == 0


def test_kill_9_five_times_in_a_row(config: Path) -> None:
    """Power cuts, again and again, while the task checkpoints after every item."""
    cuts = 0
    for _ in range(5):
        daemon = DaemonProcess(config).start()
        seen = len(items(config))
        wait_sync(lambda seen=seen: len(items(config)) >= seen + 3, 20, "progress")
        assert daemon.proc is not None
        groups = {os.getpgid(pid) for pid in workers()}
        daemon.proc.kill()
        daemon.proc.wait()
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        cuts += 1
        if set(items(config)) >= set(range(N)):
            break
    final = DaemonProcess(config).start()
    try:
        wait_sync(
            lambda: (
                last_run(config) == ("resume", "success")
                or last_run(config) == ("schedule", "success")
            ),
            30,
            "the worker to finish",
        )
    finally:
        assert final.stop() == 0
    assert cuts >= 3
    assert_all_items_once(config, cuts=cuts)
    outcomes = query(db(config), "SELECT outcome FROM run WHERE task_id = 'worker' ORDER BY id")
    assert outcomes[:-1] == [("interrupted",)] * (len(outcomes) - 1)
    assert len(outcomes) >= 4  # cut at least three times, then finished


def test_kill_9_of_the_daemon_alone(config: Path) -> None:
    """An OOM kill or a `kill -9` of the daemon only: its run goes on as an orphan. The next
    daemon must stop that orphan before it resumes the task, or the task runs twice at once."""
    daemon = DaemonProcess(config).start()
    worker_going(config)
    assert daemon.proc is not None
    orphans = workers()
    assert orphans
    daemon.proc.kill()
    daemon.proc.wait()
    again = DaemonProcess(config).start()
    try:
        wait_sync(lambda: last_run(config) == ("resume", "success"), 30, "the resumed run")
        assert not [p for p in orphans if alive(p)]
        log = again.log.read_text()
        assert "stopped 1 process(es) left running by the daemon that died" in log
    finally:
        assert again.stop() == 0
    assert_all_items_once(config, cuts=1)
    runs = query(db(config), "SELECT outcome FROM run WHERE task_id = 'worker' ORDER BY id")
    assert runs == [("interrupted",), ("success",)]


SAVES = 2000
# Saves a checkpoint of 60 kB (near the limit) over and over, saying before and after each save.
SAVER = f"""#!/usr/bin/env -S ${{MOLTSCHED_PYTHON}}
import os
from scheduler_core.checkpoint import load_checkpoint, save_checkpoint

run = os.environ["MOLTSCHED_RUN_ID"]
n = (load_checkpoint() or {{"n": 0}})["n"]
pad = "x" * 60_000
with open("../saves.log", "a", buffering=1) as log:
    log.write(f"run {{run}} {{n}} {{os.getpid()}}\\n")
    while n < {SAVES}:
        n += 1
        log.write(f"saving {{run}} {{n}}\\n")
        save_checkpoint({{"n": n, "pad": pad}})
        log.write(f"saved {{run}} {{n}}\\n")
"""


def save_events(root: Path) -> list[tuple[str, int, int, int]]:
    """(what, run id, n, pid or 0) for every complete line of saves.log."""
    text = (root / "saves.log").read_text() if (root / "saves.log").exists() else ""
    events = []
    for line in text.split("\n")[:-1]:  # the last piece is empty or still being written
        what, run, n, *pid = line.split()
        events.append((what, int(run), int(n), int(pid[0]) if pid else 0))
    return events


def cut_in_the_middle_of_a_save(root: Path, seen: int) -> tuple[int, bool]:
    """Wait for the new run to be saving, and freeze it there (SIGSTOP): the state a kill -9
    at that instant leaves. Returns the run's process group and whether it froze mid-save."""
    deadline = time.monotonic() + 30
    while True:  # busy: a save takes well under a millisecond on a fast disk
        events = save_events(root)
        if len(events) > seen + 2 and events[-1][0] == "saving":
            break
        assert time.monotonic() < deadline, "the saver did not get going"
    pgid = next(pid for what, _, _, pid in reversed(events) if what == "run")
    os.killpg(pgid, signal.SIGSTOP)
    return pgid, save_events(root)[-1][0] == "saving"


def test_kill_9_during_checkpoint_saves_again_and_again(tmp_path: Path) -> None:
    """The daemon and its task killed while a save is being written, ten times: every save
    that returned is kept, a cut save is there whole or not at all, each run resumes from
    exactly what was committed, and two runs never overlap."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "saver.py").write_text(SAVER)
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: saver, script: saver.py, every: 1h}\n")
    database = tmp_path / "state" / "moltsched.db"
    during_a_save = 0
    for cut in range(10):
        daemon = DaemonProcess(config).start()
        assert daemon.proc is not None
        pgid, mid_save = cut_in_the_middle_of_a_save(tmp_path, len(save_events(tmp_path)))
        daemon.proc.kill()
        daemon.proc.wait()
        if cut % 2 == 0:  # a power cut: the task goes too
            os.killpg(pgid, signal.SIGKILL)
            while alive(pgid):
                time.sleep(0.01)
            _, _, n, _ = save_events(tmp_path)[-1]
            if mid_save:
                during_a_save += 1
                (text,) = query(database, "SELECT checkpoint FROM task")[0]
                committed = json.loads(text)
                assert committed["n"] in (n - 1, n) and len(committed["pad"]) == 60_000
        else:  # only the daemon died (an OOM kill): its run goes on, until the next daemon
            os.killpg(pgid, signal.SIGCONT)  # stops it before resuming
        assert query(database, "PRAGMA integrity_check") == [("ok",)]
    final = DaemonProcess(config).start()
    try:
        wait_sync(lambda: last_saver_outcome(database) == "success", 60, "the saver to finish")
    finally:
        assert final.stop() == 0
    assert during_a_save >= 3  # most power cuts froze a save half-way
    saved = 0  # the newest save that returned
    in_flight = 0  # a save begun and not returned when its run was cut
    current = -1
    for what, run, n, _ in save_events(tmp_path):
        if what == "run":
            assert run > current  # a new run; the old one never writes again (no overlap)
            assert n in (saved, in_flight)  # resumes from exactly what was committed
            current, saved, in_flight = run, n, 0
            continue
        assert run == current, f"run {run} still saving after run {current} started"
        if what == "saving":
            assert n == saved + 1
            in_flight = n
        else:
            saved, in_flight = n, 0
    assert saved == SAVES
    assert query(database, "SELECT COUNT(*) FROM run WHERE outcome = 'interrupted'") == [(10,)]


def last_saver_outcome(database: Path) -> str | None:
    rows = query(database, "SELECT outcome FROM run ORDER BY id DESC LIMIT 1")
    return rows[0][0] if rows else None


# Saves its checkpoint only when told to stop, from its SIGTERM trap, with the CLI: the way a
# shell task keeps its place without a save per item.
TRAPPER = """i=$(printf '%s' "$MOLTSCHED_CHECKPOINT" | sed -n 's/.*"next": *\\([0-9]*\\).*/\\1/p')
echo "from ${i:-0}" >> ../trapper.log
save() {
  moltsched checkpoint save "$MOLTSCHED_TASK_ID" "{\\"next\\": $i}" && echo saved >> ../trapper.log
  exit 0
}
trap save TERM
i=${i:-0}
while :; do i=$((i + 1)); [ "$i" = 3 ] && echo going >> ../trapper.log; sleep 0.05; done
"""


def test_a_checkpoint_saved_from_a_sigterm_trap_survives_a_pause(tmp_path: Path) -> None:
    """The trap's `moltsched checkpoint save` was sent SIGTERM the moment it started (every
    process that appeared during the grace was), so the checkpoint was never saved and the
    next run began again from nothing."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "trapper.sh").write_text(TRAPPER)
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: trapper, script: trapper.sh, every: 1h, grace: 20s}\n")
    log = tmp_path / "trapper.log"
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: log.exists() and "going" in log.read_text(), 20, "the task to count")
        paused = cli("--json", "pause", "trapper", config=config)
        assert paused.returncode == 0, paused.stderr
        assert log.read_text().splitlines() == ["from 0", "going", "saved"]
        saved = json.loads(cli("--json", "checkpoint", "show", "trapper", config=config).stdout)
        assert saved["next"] > 0
        assert cli("resume", "trapper", config=config).returncode == 0
        wait_sync(lambda: f"from {saved['next']}" in log.read_text(), 20, "the run to resume")
    finally:
        assert daemon.stop() == 0
