"""Retention by count, by age and by size: a chatty task cannot fill the disk, and the
database file gives the space back."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from scheduler_core.model import Cause, Ended, Outcome, Retention
from scheduler_core.store import Store
from support.daemon import DaemonProcess
from tests.helpers import cli, query, wait_sync

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CHUNK = "x" * 60_000 + "\n"


def file_bytes(db: Path) -> int:
    """The database as it lies on disk, its WAL folded in."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(
        os.path.getsize(f"{db}{extra}") for extra in ("", "-wal") if os.path.exists(f"{db}{extra}")
    )


async def run_once(store: Store, task: str, out: str) -> None:
    run_id, _ = await store.start_run(task, Cause.SCHEDULE, None, T0)
    await store.finish_run(run_id, task, Ended(Outcome.SUCCESS, "exit 0", 0, 0.1, out, out), T0)


async def test_kept_output_stays_within_its_budget_and_the_file_shrinks(tmp_path: Path) -> None:
    db = tmp_path / "moltsched.db"
    budget = 1_000_000
    store = await Store.open(db, Retention(runs_per_task=1000, output_bytes=budget))
    try:
        await store.set_checkpoint("chatty", None)
        for _ in range(40):  # 40 runs of 120 kB: 4.8 MB printed
            await run_once(store, "chatty", CHUNK)
            total = query(db, "SELECT SUM(output_bytes) FROM run")[0][0]
            assert total <= budget + 2 * len(CHUNK)
        assert query(db, "SELECT COUNT(*) FROM run") == [(40,)]  # the runs stay, cleared
        (kept,) = query(db, "SELECT output_bytes FROM usage")[0]
        assert kept == query(db, "SELECT SUM(output_bytes) FROM run")[0][0]
        # The newest runs keep their output; the oldest were cleared.
        newest = query(db, "SELECT stdout FROM run ORDER BY id DESC LIMIT 1")[0][0]
        assert newest == CHUNK
        assert query(db, "SELECT stdout FROM run ORDER BY id LIMIT 1")[0][0] == ""
        assert file_bytes(db) < 2 * budget
        # A smaller budget (a reload) gives the space back at once.
        store.retention = Retention(output_bytes=200_000)
        await store.prune_output()
        assert file_bytes(db) < 600_000
    finally:
        await store.close()
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


async def test_an_old_file_is_taken_over_and_keeps_its_history(tmp_path: Path) -> None:
    """A database from before size retention: output is counted, auto-vacuum switched on."""
    db = tmp_path / "moltsched.db"
    store = await Store.open(db)
    await store.set_checkpoint("t", '{"n": 1}')
    await run_once(store, "t", "hello\n")
    await store.close()
    conn = sqlite3.connect(db, isolation_level=None)  # back to how version 2 left it
    conn.executescript(
        "DROP TRIGGER run_gone; DROP TRIGGER run_ended; DROP TABLE retention;"
        "DROP TABLE later; ALTER TABLE run DROP COLUMN retried; ALTER TABLE outbox DROP COLUMN"
        " channel; ALTER TABLE task DROP COLUMN last_success; ALTER TABLE task DROP COLUMN added;"
        "ALTER TABLE task DROP COLUMN stale_alerted; ALTER TABLE task DROP COLUMN schedule;"
        "DROP TRIGGER run_started; ALTER TABLE run DROP COLUMN message;"
        "ALTER TABLE run DROP COLUMN next_due;"
        "PRAGMA auto_vacuum = NONE; VACUUM; DROP TABLE usage; DROP INDEX run_with_output;"
        "ALTER TABLE run DROP COLUMN output_bytes; PRAGMA user_version = 2;"
    )
    conn.close()
    store = await Store.open(db)
    await store.close()
    assert query(db, "PRAGMA auto_vacuum") == [(2,)]
    assert query(db, "SELECT output_bytes FROM usage") == [(12,)]
    assert query(db, "SELECT checkpoint FROM task WHERE id = 't'") == [('{"n": 1}',)]
    # Migration 5 counted the success it found, and took the task as added now.
    ((last_success, added),) = query(db, "SELECT last_success, added FROM task WHERE id = 't'")
    assert last_success is not None and added is not None


def test_a_chatty_task_on_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "chatty.sh").write_text("head -c 100000 /dev/zero | tr '\\0' x\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "retention: {runs_per_task: 20, log_days: 30, output: 500KB}\n"
        "tasks:\n  - {id: chatty, script: chatty.sh, every: 1s}\n"
    )
    db = tmp_path / "state" / "moltsched.db"
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 25, 60, "25 chatty runs")
        assert query(db, "SELECT COUNT(*) FROM run")[0][0] <= 21
        assert query(db, "SELECT SUM(output_bytes) FROM run")[0][0] <= 500_000 + 100_000
    finally:
        assert daemon.stop() == 0
    assert file_bytes(db) < 2_000_000


def test_retention_settings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "moltsched.yaml"
    config.write_text("retention: {runs_per_task: 0, output: lots, keep: forever}\ntasks: []\n")
    result = cli("--json", "validate", config=config)
    problems = json.loads(result.stdout)["problems"]
    assert result.returncode == 2
    assert any(p.startswith("retention.runs_per_task") for p in problems), problems
    assert any(p.startswith("retention.output") for p in problems), problems
    assert any(p.startswith("retention.keep") for p in problems), problems
