"""`moltsched import-seed` on a folder laid out like the seed skill's, with its schema."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

import yaml

from config.locate import MAX_FILE_BYTES
from tests.helpers import cli, query

# The seed skill's schema, as its StateManager creates it.
SEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_state (
    task_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT DEFAULT 'idle',
    last_run TEXT,
    next_run TEXT,
    run_count INTEGER DEFAULT 0,
    error_count INTEGER DEFAULT 0,
    last_error TEXT,
    checkpoint TEXT,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS task_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    timestamp TEXT DEFAULT CURRENT_TIMESTAMP,
    action TEXT,
    message TEXT,
    duration_seconds REAL
);
CREATE INDEX IF NOT EXISTS idx_log_task ON task_log(task_id);
CREATE INDEX IF NOT EXISTS idx_log_time ON task_log(timestamp);
"""

TASKS = {
    "tasks": [
        {
            "task_id": "scrape-all",
            "name": "Scraper",
            "script_path": "scrape.sh",
            "interval_minutes": 60,
            "enabled": True,
            "priority": 3,
        },
        {
            "task_id": "check-email",
            "name": "Email",
            "script_path": "email.sh",
            "interval_minutes": 15,
            "enabled": True,
            "priority": 5,
        },
        {
            "task_id": "calendar",
            "name": "Calendar",
            "script_path": "calendar.sh",
            "interval_minutes": 30,
            "enabled": False,
            "priority": 7,
        },
    ]
}


def make_seed(root: Path) -> Path:
    seed = root / "moltbot-system"
    for sub in ("config", "data", "tasks"):
        (seed / sub).mkdir(parents=True)
    (seed / "config" / "tasks.json").write_text(json.dumps(TASKS))
    for script in ("scrape.sh", "email.sh", "calendar.sh"):
        (seed / "tasks" / script).write_text(f"echo {script}\n")
    conn = sqlite3.connect(seed / "data" / "scheduler.db")
    conn.executescript(SEED_SCHEMA)
    conn.executemany(
        "INSERT INTO task_state (task_id, name, status, last_run, next_run, run_count, "
        "error_count, last_error, checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "scrape-all",
                "Scraper",
                "idle",
                "2026-11-20T10:15:00.123456",
                "2026-11-20T11:15:00.123456",
                12,
                1,
                None,
                '{"last_index": 40}',
            ),
            (
                "check-email",
                "Email",
                "error",
                "2026-11-20T10:00:00",
                None,
                30,
                4,
                "Exit code 1: imap timeout",
                None,
            ),
            ("calendar", "Calendar", "paused", None, None, 0, 0, None, None),
        ],
    )
    conn.executemany(
        "INSERT INTO task_log (task_id, timestamp, action, message, duration_seconds) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            ("scrape-all", "2026-11-20 09:15:00", "started", "Running Scraper", None),
            ("scrape-all", "2026-11-20 09:15:07", "completed", "Completed successfully", 7.2),
            ("check-email", "2026-11-20 09:00:02", "error", "Exit code 1: imap timeout", 2.0),
        ],
    )
    conn.commit()
    conn.close()
    return seed


def test_import_seed_twice(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    config = tmp_path / "home" / "moltsched.yaml"
    first = cli("--json", "import-seed", str(seed), config=config)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "config": str(config),
        "config_written": True,
        "tasks": 3,
        "states_imported": 3,
        "log_entries_imported": 3,
        "not_found": [],
        "checkpoints_left_out": {},
    }
    assert cli("validate", config=config).returncode == 0
    # Absolute paths: the file works wherever it is moved (to /etc, say).
    written = yaml.safe_load(config.read_text())
    assert written["tasks_dir"] == str((seed / "tasks").resolve())
    assert written["state_dir"] == str(config.parent.resolve() / "state")

    status = {
        t["id"]: t for t in json.loads(cli("--json", "status", config=config).stdout)["tasks"]
    }
    scrape = status["scrape-all"]
    assert (scrape["run_count"], scrape["error_count"]) == (12, 1)
    assert scrape["checkpoint"] == {"last_index": 40} and scrape["last_outcome"] == "success"
    assert scrape["last_run"].startswith("2026-11-20T10:15:00")
    email = status["check-email"]
    assert email["status"] == "error" and email["last_error"] == "Exit code 1: imap timeout"
    assert status["calendar"]["status"] == "paused" and status["calendar"]["enabled"] is False
    logs = json.loads(cli("--json", "logs", "-n", "50", config=config).stdout)
    seeded = [(e["task_id"], e["action"]) for e in logs if e["message"] != ""]
    assert ("check-email", "failed") in seeded and ("scrape-all", "completed") in seeded

    again = cli("--json", "import-seed", str(seed), config=config)
    assert json.loads(again.stdout)["states_imported"] == 0
    assert json.loads(again.stdout)["log_entries_imported"] == 0
    assert json.loads(again.stdout)["config_written"] is False
    db = config.parent / "state" / "moltsched.db"
    assert query(db, "SELECT COUNT(*) FROM log WHERE actor = 'seed'") == [(3,)]

    # The imported task runs here, with its checkpoint; a later import keeps our history.
    ran = json.loads(cli("--json", "run", "scrape-all", config=config).stdout)
    assert ran["outcome"] == "success" and ran["stdout"] == "scrape.sh\n"
    cli("import-seed", str(seed), config=config)
    scrape = json.loads(cli("--json", "status", "scrape-all", config=config).stdout)
    assert scrape["run_count"] == 13


def test_an_existing_config_must_have_the_seed_tasks(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    config = tmp_path / "moltsched.yaml"
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("true\n")
    config.write_text("tasks:\n  - {id: a, script: a.sh, every: 1h}\n")
    result = cli("import-seed", str(seed), config=config)
    assert result.returncode == 2
    assert "lacks the seed's task(s) scrape-all, check-email, calendar" in result.stderr
    assert config.read_text() == "tasks:\n  - {id: a, script: a.sh, every: 1h}\n"


def test_not_a_seed_folder(tmp_path: Path) -> None:
    result = cli("import-seed", str(tmp_path), config=tmp_path / "c.yaml")
    assert result.returncode == 2 and "is" in result.stderr and "seed skill" in result.stderr


def test_the_seed_tasks_json_works_unchanged_as_the_configuration(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    config = seed / "config" / "tasks.json"
    assert cli("validate", config=config).returncode == 0
    ran = json.loads(cli("--json", "run", "check-email", config=config).stdout)
    assert ran["outcome"] == "success" and ran["stdout"] == "email.sh\n"


def test_a_seed_without_its_database_says_so(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    (seed / "data" / "scheduler.db").unlink()
    config = tmp_path / "new" / "moltsched.yaml"
    done = cli("import-seed", str(seed), config=config)
    assert done.returncode == 0, done.stderr
    assert f"not found: {seed / 'data' / 'scheduler.db'}" in done.stdout
    assert "imported 0 task state(s)" in done.stdout
    config.unlink()
    answer = json.loads(cli("--json", "import-seed", str(seed), config=config).stdout)
    assert answer["not_found"] == [str(seed / "data" / "scheduler.db")]


def test_a_configuration_written_under_etc_keeps_its_state_in_var_lib() -> None:
    from config.locate import state_dir_for

    assert state_dir_for(Path("/etc/moltsched/moltsched.yaml")) == Path("/var/lib/moltsched")


def test_an_import_that_cannot_be_done_is_a_json_error_too(tmp_path: Path) -> None:
    result = cli("--json", "import-seed", str(tmp_path), config=tmp_path / "c.yaml")
    assert result.returncode == 2 and json.loads(result.stdout)["kind"] == "usage"


def test_a_seed_checkpoint_this_cannot_hand_to_a_run_is_left_out_and_said(tmp_path: Path) -> None:
    """The seed set no limit: a checkpoint over 64 KiB, imported, would keep its task from
    ever starting (a run gets it in its environment, at most 128 KiB a variable), and one
    nested thousands deep ended the import in a traceback. Both are left out, by name."""
    seed = make_seed(tmp_path)
    conn = sqlite3.connect(seed / "data" / "scheduler.db")
    with conn:
        big = json.dumps({"pad": "x" * 200_000})
        conn.execute("UPDATE task_state SET checkpoint = ? WHERE task_id = 'scrape-all'", (big,))
        deep = "[" * 5000 + "]" * 5000
        conn.execute("UPDATE task_state SET checkpoint = ? WHERE task_id = 'check-email'", (deep,))
    conn.close()
    config = tmp_path / "home" / "moltsched.yaml"
    done = cli("--json", "import-seed", str(seed), config=config)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    left_out = json.loads(done.stdout)["checkpoints_left_out"]
    assert left_out.keys() == {"scrape-all", "check-email"}
    assert left_out["scrape-all"].startswith("a checkpoint is at most 64 KiB and this one is 2")
    assert left_out["check-email"] == "a checkpoint must be JSON nested at most 100 deep"
    status = {
        t["id"]: t for t in json.loads(cli("--json", "status", config=config).stdout)["tasks"]
    }
    assert status["scrape-all"]["checkpoint"] is None and status["scrape-all"]["run_count"] == 12
    ran = json.loads(cli("--json", "run", "scrape-all", config=config).stdout)
    assert ran["outcome"] == "success", ran
    text = cli("import-seed", str(seed), config=tmp_path / "other" / "moltsched.yaml").stdout
    assert "checkpoint of scrape-all left out: a checkpoint is at most 64 KiB" in text


def test_a_seed_tasks_json_saved_with_a_byte_order_mark_imports(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    tasks = seed / "config" / "tasks.json"
    tasks.write_text("\ufeff" + tasks.read_text())
    done = cli("--json", "import-seed", str(seed), config=tmp_path / "home" / "moltsched.yaml")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"] == 3


def test_a_seed_tasks_json_far_too_big_is_refused_unread(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    with (seed / "config" / "tasks.json").open("r+b") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    done = cli("import-seed", str(seed), config=tmp_path / "home" / "moltsched.yaml")
    assert done.returncode == 2 and f"over {MAX_FILE_BYTES >> 20} MiB" in done.stderr
    assert not (tmp_path / "home" / "moltsched.yaml").exists()


def test_a_seed_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO where the seed's database belongs: opened to be read, it waited for a writer
    that never came, and import-seed never ended. One where its tasks.json belongs was said
    not to exist."""
    # SQLite opens a rollback journal beside the database, to replay it, as it opens it.
    for name in ("data/scheduler.db", "data/scheduler.db-journal", "config/tasks.json"):
        seed = make_seed(tmp_path / Path(name).name)
        (seed / name).unlink(missing_ok=True)
        os.mkfifo(seed / name)
        done = cli("import-seed", str(seed), config=tmp_path / name / "c.yaml", timeout=20)
        assert done.returncode == 2, done.stderr
        assert f"{seed / name} is a FIFO, not a file" in done.stderr, done.stderr
        (seed / name).unlink()  # tasks.json's is found first, before the database is looked at


def test_a_seed_database_that_cannot_be_read_leaves_no_configuration_behind(
    tmp_path: Path,
) -> None:
    """Before: the configuration was written, then the database refused ("file is not a
    database"), and the file stayed, as though the import had been done."""
    seed = make_seed(tmp_path)
    (seed / "data" / "scheduler.db").write_bytes(b"\x13garbage, not SQLite" * 200)
    config = tmp_path / "new" / "moltsched.yaml"
    done = cli("import-seed", str(seed), config=config)
    assert done.returncode == 2 and "scheduler.db" in done.stderr, done.stderr
    assert not config.exists() and list(config.parent.iterdir()) == []


def test_a_database_that_is_not_the_seeds_is_refused_not_imported_as_empty(
    tmp_path: Path,
) -> None:
    seed = make_seed(tmp_path)
    db = seed / "data" / "scheduler.db"
    db.unlink()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE tasks (task_id TEXT, run_count INTEGER)")
    done = cli("import-seed", str(seed), config=tmp_path / "new" / "moltsched.yaml")
    assert done.returncode == 2 and "not the seed skill's database" in done.stderr, done.stderr
