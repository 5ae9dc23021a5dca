"""A database deleted while the daemon runs loses nothing: the daemon notices, puts it back
from the file it still has open, says so, and carries on; history and checkpoints survive
the next start too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.daemon import DaemonProcess
from tests.helpers import cli, query, ticking, wait_sync


@pytest.mark.parametrize("what", ["the file", "the file, its WAL and its index"])
def test_a_database_deleted_under_the_daemon_is_put_back(tmp_path: Path, what: str) -> None:
    config, db = ticking(tmp_path)
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 3, 20, "ticks")
        assert cli("checkpoint", "save", "tick", '{"page": 7}', config=config).returncode == 0
        runs = query(db, "SELECT COUNT(*) FROM run")[0][0]
        removed = [db] if what == "the file" else [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        for path in removed:
            path.unlink(missing_ok=True)
        wait_sync(lambda: "is back" in daemon.log.read_text(), 20, "the database put back")
        wait_sync(lambda: query(db, "SELECT COUNT(*) FROM run")[0][0] >= runs + 2, 20, "runs")
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert status["tasks"][0]["checkpoint"] == {"page": 7}
    finally:
        assert daemon.stop() == 0
    after = query(db, "SELECT COUNT(*) FROM run")[0][0]
    assert after >= runs + 2
    daemon.start()
    try:
        shown = json.loads(cli("--json", "status", config=config).stdout)["tasks"][0]
        assert shown["checkpoint"] == {"page": 7} and shown["run_count"] >= after
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "was deleted or replaced while in use" in log and "Traceback" not in log
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_a_foreground_run_that_deletes_the_database_says_it_was_put_back(
    tmp_path: Path,
) -> None:
    """With no daemon, the engine's errors reach the user of the command, prefixed as the
    command's own problems are; the run is answered as usual and its record kept."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "rm.sh").write_text('rm -f "$MOLTSCHED_DB"\n')
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: rm, script: rm.sh, every: 1h}\n")
    done = cli("run", "rm", config=config)
    assert done.returncode == 0 and done.stdout.startswith("rm: success")
    db = tmp_path / "state" / "moltsched.db"
    assert done.stderr.splitlines() == [
        f"moltsched: the database {db} was deleted or replaced while in use; putting it back",
        f"moltsched: the database {db} is back, with everything committed before",
    ]
    assert query(db, "SELECT outcome FROM run") == [("success",)]
