"""A database deleted while the daemon runs loses nothing: the daemon notices, puts it back
from the file it still has open, says so, and carries on; history and checkpoints survive
the next start too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, cli, query, ticking, wait_sync


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


@pytest.mark.parametrize("how", ["rm -rf", "mv"])
def test_the_state_directory_removed_under_the_daemon_is_put_back_whole(
    tmp_path: Path, how: str
) -> None:
    """The whole state directory removed (or moved away) while the daemon runs, with nothing
    due for a year. The database came back only at the next write, and with its directory
    gone it could not (every write failed until someone made the directory again); the socket
    came back only at a reload, the lock never, so a command found no daemon and made a
    database of its own, and a second daemon could start. Now the daemon puts back the
    directory, its lock, its socket and its database as soon as they go."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("echo ran\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text('tasks:\n  - {id: t, script: t.sh, cron: "0 0 1 1 *"}\n')
    state = tmp_path / "state"
    daemon = DaemonProcess(config).start()
    try:
        assert cli("run", "t", config=config).returncode == 0
        assert cli("checkpoint", "save", "t", '{"page": 7}', config=config).returncode == 0
        if how == "mv":
            state.rename(tmp_path / "moved")
        else:
            shutil.rmtree(state, ignore_errors=True)  # the daemon may put some back meanwhile

        def whole() -> bool:
            found = {p.name for p in state.iterdir()} if state.is_dir() else set()
            return {"control.sock", "moltsched.lock"} <= found and "is back" in (
                daemon.log.read_text()
            )

        wait_sync(whole, 20, "the state directory put back")
        shown = json.loads(cli("--json", "status", config=config).stdout)
        assert shown["running"] is True
        assert shown["tasks"][0]["checkpoint"] == {"page": 7}
        assert shown["tasks"][0]["run_count"] == 1
        second = subprocess.run(
            [MOLTSCHED, "--config", str(config), "daemon"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert second.returncode != 0 and "already running" in second.stderr, second.stderr
        assert cli("run", "t", config=config).returncode == 0
    finally:
        assert daemon.stop() == 0
    assert query(state / "moltsched.db", "SELECT COUNT(*) FROM run") == [(2,)]
    assert "Traceback" not in daemon.log.read_text()


WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


@pytest.mark.skipif(os.geteuid() != 0, reason="sets a kernel limit (root only)")
def test_a_state_directory_that_cannot_be_watched_is_said_once_for_what_it_is(
    tmp_path: Path,
) -> None:
    """No inotify watch left for the daemon's user (fs.inotify.max_user_watches, which an IDE
    server or Syncthing on the same machine uses up): the daemon logged "cannot put back what
    was removed from STATE: [Errno 28] cannot watch it" as an error, and again every minute,
    though nothing was removed. It says what it is, once, and runs on."""
    config, db = ticking(tmp_path)
    limit = WATCHES.read_text()
    WATCHES.write_text("0")  # for a moment: the watches in place stay, no new one is given
    daemon = DaemonProcess(config)
    try:
        daemon.start()
        wait_sync(lambda: "cannot watch" in daemon.log.read_text(), 20, "the watch refused")
    finally:
        WATCHES.write_text(limit)
    try:
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 2, 20, "ticks")
        text = daemon.log.read_text()
        assert "cannot put back" not in text, text
        (line,) = [line for line in text.splitlines() if "cannot watch" in line]
        assert "WARNING" in line and "fs.inotify.max_user_watches" in line, line
    finally:
        assert daemon.stop() == 0
