"""Damaged or unreachable state never hangs a process: garbage, a torn file, a read-only state
directory, a database locked past the busy timeout. Every command and the daemon exit within
seconds with one line and exit code 3 (JSON on stdout under --json); never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, cli, query

TASKS = 300  # enough pages that a torn file loses some that every command reads


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo hi\n")
    path = tmp_path / "moltsched.yaml"
    path.write_text(
        "tasks:\n" + "".join(f"  - {{id: t{i}, script: a.sh, every: 1h}}\n" for i in range(TASKS))
    )
    return path


def db_of(config: Path) -> Path:
    return config.parent / "state" / "moltsched.db"


def made(config: Path) -> Path:
    """A real database with history, as the CLI leaves it."""
    for i in range(3):
        assert cli("run", f"t{i}", config=config).returncode == 0
    return db_of(config)


def garbage(config: Path) -> None:
    db = made(config)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(os.urandom(db.stat().st_size))


def torn(config: Path) -> None:
    db = made(config)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    os.truncate(db, db.stat().st_size // 2)


COMMANDS = [
    ("status",),
    ("status", "t1"),
    ("run", "t1"),
    ("logs",),
    ("pause", "t2"),
    ("checkpoint", "show", "t1"),
    ("chat", "status"),
]


def assert_unreachable(config: Path, args: tuple[str, ...], kind: str, within: float = 20) -> None:
    started = time.monotonic()
    text = cli(*args, config=config, timeout=within)
    as_json = cli("--json", *args, config=config, timeout=within)
    assert time.monotonic() - started < 2 * within
    for result in (text, as_json):
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("moltsched: "), result.stderr
    error = json.loads(as_json.stdout)
    assert set(error) == {"error", "kind"} and error["kind"] == kind, error


@pytest.mark.parametrize("damage", [garbage, torn], ids=["garbage", "torn"])
def test_a_damaged_database_gives_one_line_and_exit_3(config: Path, damage: object) -> None:
    damage(config)  # type: ignore[operator]
    for args in COMMANDS:
        assert_unreachable(config, args, "damaged")
    daemon = subprocess.run(
        [MOLTSCHED, "--config", str(config), "daemon"], capture_output=True, text=True, timeout=20
    )
    assert daemon.returncode == 3 and "Traceback" not in daemon.stderr, daemon.stderr
    assert "damaged" in daemon.stderr.strip().splitlines()[-1]


def page_overwritten(config: Path, which_page: str) -> None:
    """One page of a real database with history overwritten, the rest of the file whole:
    the page the query `which_page` names (its first column), in the file as checkpointed."""
    db = made(config)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page,) = conn.execute(which_page).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    with open(db, "r+b") as file:
        file.seek((page - 1) * size)
        file.write(b"\xde\xad" * (size // 2))


def test_status_of_a_damaged_task_table_is_an_error_answer_with_and_without_the_daemon(
    config: Path,
) -> None:
    """`status --json` wrote its first line, then met the damage: the agent got a JSON text
    cut in the middle, and from the daemon "the daemon went away" (kind daemon-gone, exit 1)
    although only the database was at fault. Now: exit 3, one line, `{"error", "kind"}`.
    The task table's first page is overwritten: the header and schema read, so the daemon
    starts (its write alarm says the database cannot be written)."""
    page_overwritten(config, "SELECT rootpage FROM sqlite_schema WHERE name = 'task'")
    assert_unreachable(config, ("status",), "damaged")
    daemon = DaemonProcess(config).start()
    try:
        assert_unreachable(config, ("status",), "damaged")
        assert cli("logs", config=config).returncode == 0  # what can be read still is
    finally:
        assert daemon.stop() == 0


def test_status_of_a_task_table_damaged_past_its_first_batch_ends_the_document_whole(
    tmp_path: Path,
) -> None:
    """1,200 tasks, the page holding the last of them overwritten: `status --json` has begun
    when it meets the damage. It ends the document with `error` and `kind` beside the tasks
    it read, and exits 3, with the daemon and without."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo hi\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n" + "".join(f"  - {{id: t{i}, script: a.sh, every: 1h}}\n" for i in range(1200))
    )
    last_leaf = (
        "SELECT pageno FROM dbstat WHERE name = 'task' AND pagetype = 'leaf' "
        "ORDER BY path DESC LIMIT 1"
    )
    page_overwritten(config, last_leaf)
    daemon = DaemonProcess(config)
    for up in (False, True):
        if up:
            daemon.start()
        try:
            done = cli("--json", "status", config=config)
            assert done.returncode == 3, (up, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("moltsched: "), done.stderr
            answer = json.loads(done.stdout)
            assert answer["kind"] == "damaged" and "malformed" in answer["error"], answer
            assert answer["running"] is up and 500 <= len(answer["tasks"]) < 1200
            assert cli("--json", "logs", config=config).returncode == 0
        finally:
            if up:
                assert daemon.stop() == 0


@pytest.mark.parametrize("lost", ["TABLE log", "TRIGGER run_ended", "INDEX run_open"])
def test_a_database_that_lost_part_of_its_schema_is_damaged(config: Path, lost: str) -> None:
    """Part of the schema dropped by hand (a sqlite3 shell, a tool): the daemon started, and
    the start of every run failed, said once in the journal and never again, with no alarm
    (or, without the trigger, runs went on and recorded nothing of their end); `run` said so
    in three lines. Every command and the daemon now refuse the file as damaged, naming what
    it lost, and so does doctor."""
    db = made(config)
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP {lost}")
    conn.close()
    last = refused_by_all(config, "damaged", f"its {lost.lower()}")
    assert "missing" in last and "damaged" in last, last


def refused_by_all(config: Path, kind: str, said: str) -> str:
    """Every command (but a task's own checkpoint save, which touches one column, as it
    always did), the daemon and doctor refuse the database, saying `said`; the daemon's last
    line."""
    for args in COMMANDS:
        if args[0] != "checkpoint":
            assert_unreachable(config, args, kind)
    daemon = subprocess.run(
        [MOLTSCHED, "--config", str(config), "daemon"], capture_output=True, text=True, timeout=20
    )
    last = daemon.stderr.strip().splitlines()[-1]
    assert daemon.returncode == 3 and said in last, daemon.stderr
    doctor = cli("doctor", config=config)
    assert doctor.returncode == 1 and said in doctor.stdout, doctor.stdout
    return last


def test_a_database_from_a_newer_moltsched_is_refused_not_used(config: Path) -> None:
    """After a downgrade: before, this version read and wrote a schema it does not know."""
    db = made(config)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    refused_by_all(config, "newer", "from a newer moltsched")
    assert query(db, "PRAGMA user_version") == [(99,)]


@pytest.fixture
def read_only_state(config: Path) -> Iterator[Path]:
    state = config.parent / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield state
    subprocess.run(["umount", str(state)], check=False)


def test_a_state_directory_that_cannot_be_written(config: Path, read_only_state: Path) -> None:
    for args in [("status",), ("run", "t1"), ("logs",)]:
        assert_unreachable(config, args, "permission")
    daemon = subprocess.run(
        [MOLTSCHED, "--config", str(config), "daemon"], capture_output=True, text=True, timeout=20
    )
    assert daemon.returncode == 3 and "Traceback" not in daemon.stderr, daemon.stderr


def test_a_database_locked_past_the_busy_timeout(config: Path) -> None:
    db = made(config)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # and never lets go
    try:
        # What needs to write waits out the busy timeout (10 s), then says so.
        procs = [
            subprocess.Popen(
                [MOLTSCHED, "--config", str(config), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in (["--json", "run", "t1"], ["daemon"])
        ]
        outs = []
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            outs.append(out)
            assert proc.returncode == 3, (out, err)
            assert "Traceback" not in err and "locked" in err.strip().splitlines()[-1], err
        assert json.loads(outs[0])["kind"] == "locked"
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize(
    ("name", "make", "what"),
    [
        ("moltsched.db", os.mkfifo, "a FIFO"),
        ("moltsched.db", os.mkdir, "a directory"),
        ("moltsched.db-shm", os.mkfifo, "a FIFO"),
        ("moltsched.db-wal", os.mkdir, "a directory"),
        # SQLite looks for a rollback journal to replay as it opens any database, WAL or not.
        ("moltsched.db-journal", os.mkfifo, "a FIFO"),
        ("moltsched.lock", os.mkfifo, "a FIFO"),
    ],
    ids=["db-fifo", "db-directory", "shm-fifo", "wal-directory", "journal-fifo", "lock-fifo"],
)
def test_a_state_file_that_is_no_file_is_refused_naming_it(
    config: Path, name: str, make: Any, what: str
) -> None:
    """A FIFO or a directory where the database, its -wal or -shm file, or the lock file
    belongs. Opened to be read, a FIFO waits for a writer that never comes: doctor waited for
    ever on such a database, and status, reload and doctor on such a lock file; the rest said
    "disk I/O error", "unable to open database file" or "cannot use: Invalid argument",
    naming neither the file nor what is wrong with it. Every command that uses the file, a
    task's own checkpoint save, the daemon and doctor now refuse it at once as damaged,
    naming it and what it is."""
    target = made(config).parent / name
    target.unlink(missing_ok=True)
    make(target)
    said = f"{target} is {what}, not a file"
    for args in [*COMMANDS, ("checkpoint", "save", "t1", "{}")]:
        if args[0] == "checkpoint" and name == "moltsched.lock":
            continue  # with no daemon, a checkpoint needs only the database
        assert_unreachable(config, args, "damaged")
        assert said in cli(*args, config=config, timeout=20).stderr
    assert_daemon_refuses(config, said)
    doctor = cli("doctor", config=config, timeout=20)
    assert doctor.returncode == 1 and said in doctor.stdout, doctor.stdout
    if name.startswith("moltsched.db"):  # from inside a task, the library's own way
        saved = subprocess.run(
            [
                sys.executable,
                "-c",
                "from scheduler_core.checkpoint import save_checkpoint\nsave_checkpoint({'at': 1})",
            ],
            env={**os.environ, "MOLTSCHED_DB": str(db_of(config)), "MOLTSCHED_TASK_ID": "t1"},
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert saved.returncode != 0 and said in saved.stderr, saved.stderr


def test_a_directory_where_the_control_socket_belongs_stops_the_daemon_as_damaged(
    config: Path,
) -> None:
    """It exited 2, as for a mistake in the configuration, with Python's own words."""
    socket = made(config).parent / "control.sock"
    socket.mkdir()
    daemon = subprocess.run(
        [MOLTSCHED, "--config", str(config), "daemon"], capture_output=True, text=True, timeout=20
    )
    assert daemon.returncode == 3, daemon.stderr
    assert f"{socket} is a directory, not a file" in daemon.stderr.strip().splitlines()[-1]


def test_a_file_where_the_state_directory_belongs_is_named(config: Path) -> None:
    """Every command said "cannot create the state directory …: File exists", the daemon
    "cannot use …: File exists", and doctor that the directory was not writable by root."""
    state = config.parent / "state"
    state.write_text("not a directory\n")
    said = f"{state} is a file, not a directory"
    for args in [("status",), ("run", "t1"), ("logs",), ("chat", "status")]:
        assert_unreachable(config, args, "damaged")
        assert said in cli(*args, config=config, timeout=20).stderr
    assert_daemon_refuses(config, said)
    doctor = cli("doctor", config=config, timeout=20)
    assert doctor.returncode == 1 and f"FAIL state_dir: {state} is not a directory" in doctor.stdout


def assert_daemon_refuses(config: Path, said: str) -> None:
    """The daemon exits 3, its last line saying `said`."""
    daemon = subprocess.run(
        [MOLTSCHED, "--config", str(config), "daemon"], capture_output=True, text=True, timeout=20
    )
    assert daemon.returncode == 3 and said in daemon.stderr.strip().splitlines()[-1], daemon.stderr


def test_an_emptied_database_is_said_once_not_taken_silently(config: Path) -> None:
    """A database file of no bytes (emptied by hand, by a tool, by a restore gone wrong) is a
    valid empty database to SQLite: the history, checkpoints and pauses it held were gone
    with nothing said. The first process to open it says so (a command on stderr, the daemon
    in its log), once: then the file is a database again."""
    db = made(config)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    os.truncate(db, 0)
    doctor = json.loads(cli("--json", "doctor", config=config).stdout)["checks"]
    (check,) = [c for c in doctor if c["name"] == "database"]
    assert check["status"] == "warn" and "an empty file" in check["detail"], check
    assert "restore" in check["fix"] and db.stat().st_size == 0  # it only looked
    first = cli("status", "t1", config=config)
    assert first.returncode == 0, first.stderr
    (line,) = first.stderr.strip().splitlines()
    assert "was an empty file" in line and "restore it from a backup" in line, line
    assert "runs: 0" in first.stdout  # made anew: its history is gone
    again = cli("status", "t1", config=config)
    assert again.returncode == 0 and again.stderr == "", again.stderr
