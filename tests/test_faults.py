"""Faults against the real daemon: the database locked by another process for seconds, a
full disk, wild tasks, a log no one reads."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import struct
import subprocess
import termios
import time
from pathlib import Path

from support.daemon import DaemonProcess, proc_status
from tests.helpers import (
    MOLTSCHED,
    cli,
    fill,
    processes_of,
    query,
    small_disk,
    ticking,
    wait_sync,
)


def test_the_database_locked_by_another_process_for_seconds(tmp_path: Path) -> None:
    config, db = ticking(tmp_path)
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 2, 20, "ticks")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # a backup tool, a careless script
        locked_at = time.monotonic()
        # Reads still work (WAL): the agent's status polls are answered during the lock.
        status = subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "--json", "status"],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = status.communicate(timeout=20)
        answered_after = time.monotonic() - locked_at
        assert status.returncode == 0 and json.loads(out)["running"] is True
        assert answered_after < 2.5, f"status waited {answered_after:.1f}s for the lock"
        time.sleep(max(0.0, 3 - (time.monotonic() - locked_at)))
        count_during = query(db, "SELECT run_count FROM task")[0][0]
        other.execute("COMMIT")
        other.close()
        # The daemon's writes waited for the lock and then went on.
        wait_sync(
            lambda: query(db, "SELECT run_count FROM task")[0][0] >= count_during + 2,
            20,
            "ticks after the lock",
        )
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "database is locked" not in log and "Traceback" not in log
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_with_no_daemon_reads_answer_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    """Before: `status`, `logs` and `output` with no daemon opened the database for writing,
    waited out the busy timeout (10 s) behind any writer, then failed with "database is
    locked", though a reader of a WAL file needs no lock. They answer at once now; a read's
    own audit line is written when the writer lets go (the process waits for it, as for any
    write, up to the busy timeout)."""
    config, db = ticking(tmp_path)
    DaemonProcess(config).start().stop()  # its rows, and no daemon now
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a careless script, a tool left in a transaction
    reads = (["status"], ["status", "tick"], ["logs"], ["output", "tick"])
    procs = [
        subprocess.Popen([MOLTSCHED, "--config", str(config), "--json", *a], stdout=subprocess.PIPE)
        for a in reads
    ]
    try:
        started = time.monotonic()
        for args, proc in zip(reads, procs, strict=True):
            assert proc.stdout is not None
            said = b""
            while not _whole_json(said) and (more := os.read(proc.stdout.fileno(), 1 << 16)):
                said += more  # until it has answered (or closed its output)
            assert _whole_json(said), (args, said)
        took = time.monotonic() - started
        assert took < 5, f"the reads answered after {took:.1f}s"  # the busy timeout is 10
    finally:
        other.execute("ROLLBACK")
        other.close()
        for proc in procs:
            proc.wait(30)
            assert proc.stdout is not None
            proc.stdout.close()
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    audited = query(db, "SELECT message FROM log WHERE action = 'query'")
    assert sorted(m for (m,) in audited) == ["logs", "output:tick", "status", "status:tick"]


def _whole_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def test_the_state_directory_fills_up_and_frees_again(tmp_path: Path) -> None:
    with small_disk(tmp_path / "state") as filler:
        config, db = ticking(tmp_path)
        daemon = DaemonProcess(config).start()
        try:
            wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 2, 20, "ticks")
            fill(filler)
            wait_sync(lambda: "disk is full" in daemon.log.read_text(), 20, "the report")
            assert daemon.proc is not None and daemon.proc.poll() is None  # still running
            status = cli("--json", "status", config=config, timeout=30)
            assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
            count_full = query(db, "SELECT run_count FROM task")[0][0]
            filler.unlink()  # space again
            wait_sync(
                lambda: query(db, "SELECT run_count FROM task")[0][0] >= count_full + 2,
                30,
                "ticks after the disk was freed",
            )
        finally:
            assert daemon.stop() == 0
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
        # Reported in a line, like any trouble with the database: never a traceback.
        assert "Traceback" not in daemon.log.read_text()


WILD = {
    # A hundred children that would sleep for five minutes.
    "forker.sh": "for i in $(seq 100); do sleep 300 & done; wait\n",
    # A gigabyte on stdout, then a last line.
    "printer.sh": "head -c 1073741824 /dev/zero | tr '\\0' 'x'; echo; echo the end\n",
    # Closes its stdout and stderr and keeps running.
    "closer.sh": "exec >&- 2>&-; sleep 300\n",
    # Ignores SIGTERM, and so does the child it leaves behind.
    "stubborn.sh": "trap '' TERM; sleep 300 & sleep 300\n",
    "tick.sh": "echo tick\n",
}


def test_wild_tasks_on_the_daemon(tmp_path: Path) -> None:
    """Four tasks gone wild at once, on the real daemon: every one is ended with everything it
    started, the output is kept to its tail, the daemon's memory stays flat, and the other
    task and the CLI carry on meanwhile."""
    (tmp_path / "tasks").mkdir()
    for name, text in WILD.items():
        (tmp_path / "tasks" / name).write_text(text)
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "max_concurrent: 5\n"
        "tasks:\n"
        "  - {id: forker, script: forker.sh, every: 1h, timeout: 4s, grace: 1s}\n"
        "  - {id: printer, script: printer.sh, every: 1h, timeout: 2m}\n"
        "  - {id: closer, script: closer.sh, every: 1h, timeout: 4s, grace: 1s}\n"
        "  - {id: stubborn, script: stubborn.sh, every: 1h, timeout: 4s, grace: 1s}\n"
        "  - {id: tick, script: tick.sh, every: 1s}\n"
    )
    db = tmp_path / "state" / "moltsched.db"
    wild = {"forker", "printer", "closer", "stubborn"}
    daemon = DaemonProcess(config).start()
    assert daemon.proc is not None
    try:
        wait_sync(lambda: len(processes_of(db, {"forker"})) > 100, 20, "the forker's children")
        status = cli("--json", "status", config=config, timeout=30)
        assert status.returncode == 0
        busy = {t["id"] for t in json.loads(status.stdout)["tasks"] if t["status"] == "running"}
        assert busy >= {"forker", "closer", "stubborn"}

        def ended() -> bool:
            rows = query(
                db, "SELECT COUNT(*) FROM run WHERE outcome IS NOT NULL AND task_id != 'tick'"
            )
            return rows == [(4,)]

        wait_sync(ended, 120, "the four wild runs to end")
        outcomes = dict(query(db, "SELECT task_id, outcome FROM run WHERE task_id != 'tick'"))
        assert outcomes == {
            "forker": "timeout",
            "closer": "timeout",
            "stubborn": "timeout",
            "printer": "success",
        }
        # The group is gone, children included, by the time the run is recorded.
        assert processes_of(db, wild) == []
        (out,) = query(db, "SELECT stdout FROM run WHERE task_id = 'printer'")[0]
        assert out.endswith("x\nthe end\n") and len(out.encode()) <= 64 * 1024
        assert (
            proc_status(daemon.proc.pid, "VmHWM") / 1024 < 150
        )  # a gigabyte went through; the tail stayed
        # The tame task kept its schedule meanwhile, and keeps it.
        wait_sync(lambda: query(db, "SELECT run_count FROM task WHERE id = 'tick'")[0][0] >= 4)
    finally:
        assert daemon.stop() == 0
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_a_log_reader_that_stops_reading_stops_no_run(tmp_path: Path) -> None:
    """`moltsched daemon 2>&1 | less` scrolled back, a terminal paused with Ctrl-S, a journal
    that stalls: the daemon's log lines have nowhere to go. Before, the first line that did
    not fit blocked the daemon, and every run with it, until someone read."""
    config, db = ticking(tmp_path)
    env = os.environ | {"MOLTSCHED_LOG_LEVEL": "DEBUG"}  # a line per statement: fills it fast
    with subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "daemon"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as daemon:
        assert daemon.stderr is not None
        reader = daemon.stderr.fileno()
        size = fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe there is

        def unread() -> int:
            return struct.unpack("i", fcntl.ioctl(reader, termios.FIONREAD, b"\0" * 4))[0]

        try:
            # Half full is enough: no one reads, and the next lines will not fit.
            wait_sync(lambda: unread() >= size // 2, 30, "the log's pipe filling")
            wait_sync(lambda: query(db, "SELECT count(*) FROM run")[0][0] >= 1, 30, "a run")
            before = query(db, "SELECT run_count FROM task")[0][0]
            wait_sync(
                lambda: query(db, "SELECT run_count FROM task")[0][0] >= before + 3,
                30,
                "runs while no one reads the log",
            )
            assert unread() >= size // 2  # still no one read it
            daemon.send_signal(signal.SIGTERM)
            log = daemon.stderr.read().decode()  # the reader is back: it gets the rest
            assert daemon.wait(timeout=30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    # The lines waited for the reader (bot.logs.Unblocked; what would not fit in memory is
    # counted, see test_journal): the last is there.
    assert "moltsched daemon stopped" in log
