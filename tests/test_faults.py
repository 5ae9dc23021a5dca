"""Faults against the real daemon: the database locked by another process for seconds."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import MOLTSCHED, query, wait_sync
from tests.test_e2e import Daemon


def test_the_database_locked_by_another_process_for_seconds(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1s}\n")
    db = tmp_path / "state" / "moltsched.db"
    daemon = Daemon(config).start()
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


def test_the_state_directory_fills_up_and_frees_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (tmp_path / "tasks").mkdir()
        (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
        config = tmp_path / "moltsched.yaml"
        config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1s}\n")
        db = state / "moltsched.db"
        daemon = Daemon(config).start()
        try:
            wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 2, 20, "ticks")
            filler = state / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:  # the disk is full
                    f.write(b"\0" * 65536)
                    f.flush()
            wait_sync(lambda: "disk is full" in daemon.log.read_text(), 20, "the report")
            assert daemon.proc is not None and daemon.proc.poll() is None  # still running
            status = subprocess.run(
                [MOLTSCHED, "--config", str(config), "--json", "status"],
                capture_output=True,
                text=True,
                timeout=30,
            )
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
    finally:
        subprocess.run(["umount", str(state)], check=False)
