"""`moltsched checkpoint` from a shell, and from a task script run by the daemon."""

from __future__ import annotations

import contextlib
import json
import resource
import sqlite3
import subprocess
from pathlib import Path

import pytest

from scheduler_core.checkpoint import CheckpointError, save_checkpoint
from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, cli, query, wait_sync

CONFIG = """
tasks:
  - id: counter
    script: counter.sh
    every: 1h
"""

# The bash form of the seed's example: read the checkpoint, work, save progress.
COUNTER = """
last=$(moltsched checkpoint show "$MOLTSCHED_TASK_ID" --json | python3 -c '
import json, sys
value = json.load(sys.stdin)
print(value["n"] if value else 0)')
next=$((last + 1))
moltsched checkpoint save "$MOLTSCHED_TASK_ID" "{\\"n\\": $next}"
echo "n=$next"
"""


def setup(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "counter.sh").write_text(COUNTER)
    path = tmp_path / "moltsched.yaml"
    path.write_text(CONFIG)
    return path


def test_checkpoint_commands(tmp_path: Path) -> None:
    config = setup(tmp_path)
    assert cli("run", "counter", config=config).stdout.endswith("n=1\n")
    result = cli("run", "counter", config=config)
    assert result.returncode == 0 and result.stdout.endswith("n=2\n"), result.stderr
    assert cli("--json", "checkpoint", "show", "counter", config=config).stdout == '{"n": 2}\n'
    assert cli("checkpoint", "save", "counter", '{"n": 40}', config=config).returncode == 0
    assert cli("run", "counter", config=config).stdout.endswith("n=41\n")
    status = json.loads(cli("--json", "status", config=config).stdout)
    assert status["tasks"][0]["checkpoint"] == {"n": 41}

    bad = cli("checkpoint", "save", "counter", "{not json", config=config)
    assert bad.returncode == 2 and "not JSON" in bad.stderr
    assert cli("checkpoint", "show", "counter", config=config).stdout == '{\n  "n": 41\n}\n'
    unknown = cli("checkpoint", "show", "countr", config=config)
    assert unknown.returncode == 2 and "did you mean counter" in unknown.stderr

    assert cli("checkpoint", "clear", "counter", config=config).returncode == 0
    assert cli("checkpoint", "show", "counter", config=config).stdout == "no checkpoint\n"
    db = tmp_path / "state" / "moltsched.db"
    assert query(db, "SELECT checkpoint FROM task WHERE id = 'counter'") == [(None,)]


def test_checkpoint_save_and_clear_answer_json_under_json(tmp_path: Path) -> None:
    """The agent reads every answer under `--json` as JSON (its skill says so): `save` and
    `clear` printed nothing. They now print the checkpoint as it is after them, as `show`
    does."""
    config = setup(tmp_path)
    assert cli("run", "counter", config=config).returncode == 0  # which makes the database
    saved = cli("--json", "checkpoint", "save", "counter", '{"n": 7,  "at": "x"}', config=config)
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout) == {"n": 7, "at": "x"}
    shown = cli("--json", "checkpoint", "show", "counter", config=config)
    assert json.loads(shown.stdout) == json.loads(saved.stdout)
    cleared = cli("--json", "checkpoint", "clear", "counter", config=config)
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout) is None
    # Without --json they stay quiet, as before.
    assert cli("checkpoint", "save", "counter", "1", config=config).stdout == ""


SAVER = """#!/usr/bin/env -S ${MOLTSCHED_PYTHON}
from scheduler_core.checkpoint import save_checkpoint
for i in range(1, 201):
    save_checkpoint({"n": i})
print("saved 200")
"""


def test_a_checkpoint_set_before_the_first_start_is_where_the_first_run_begins(
    tmp_path: Path,
) -> None:
    """A task moved from elsewhere starts where it was: its checkpoint is saved before the
    daemon has ever run (no database yet), and its first run begins from it. Showing or
    clearing one that cannot exist yet is an answer, not an error, and creates nothing."""
    config = setup(tmp_path)
    db = tmp_path / "state" / "moltsched.db"
    shown = cli("--json", "checkpoint", "show", "counter", config=config)
    assert (shown.returncode, shown.stdout) == (0, "null\n"), shown.stderr
    cleared = cli("checkpoint", "clear", "counter", config=config)
    assert (cleared.returncode, cleared.stdout) == (0, ""), cleared.stderr
    bad = cli("checkpoint", "save", "counter", "{not json", config=config)
    assert bad.returncode == 2 and not db.exists()
    saved = cli("checkpoint", "save", "counter", '{"n": 40}', config=config)
    assert saved.returncode == 0, saved.stderr
    assert cli("checkpoint", "show", "counter", config=config).stdout == '{\n  "n": 40\n}\n'
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] == 1, 30, "the run")
    finally:
        assert daemon.stop() == 0
    assert query(db, "SELECT stdout FROM run") == [("n=41\n",)]


def test_checkpoint_saves_beside_a_busy_daemon(tmp_path: Path) -> None:
    """Four tasks save 200 checkpoints each while the daemon records runs: no save fails."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "saver.py").write_text(SAVER)
    (tmp_path / "tasks" / "noop.sh").write_text("true\n")
    savers = "\n".join(f"  - {{id: saver{i}, script: saver.py, every: 1h}}" for i in range(4))
    noops = "\n".join(f"  - {{id: noop{i}, script: noop.sh, every: 1s}}" for i in range(4))
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"max_concurrent: 8\ntasks:\n{savers}\n{noops}\n")
    daemon = DaemonProcess(config).start()
    db = tmp_path / "state" / "moltsched.db"
    try:
        wait_sync(
            lambda: (
                query(
                    db,
                    "SELECT COUNT(*) FROM run WHERE task_id LIKE 'saver%' AND outcome IS NOT NULL",
                )[0][0]
                == 4
            ),
            60,
            "the savers",
        )
    finally:
        assert daemon.stop() == 0
    rows = query(db, "SELECT outcome, stdout, stderr FROM run WHERE task_id LIKE 'saver%'")
    assert rows == [("success", "saved 200\n", "")] * 4
    assert query(db, "SELECT DISTINCT checkpoint FROM task WHERE id LIKE 'saver%'") == [
        ('{"n":200}',)
    ]


def test_a_checkpoint_must_be_json(tmp_path: Path) -> None:
    config = setup(tmp_path)
    cli("status", config=config)  # creates the database
    db = tmp_path / "state" / "moltsched.db"
    for bad in (object(), float("nan"), {1, 2}):
        with pytest.raises(CheckpointError, match="a checkpoint must be JSON"):
            save_checkpoint(bad, "counter", db=db)
    with pytest.raises(CheckpointError, match="no task id"):
        save_checkpoint({"a": 1}, db=db)


def test_a_checkpoint_too_big_for_the_next_runs_environment_is_refused(tmp_path: Path) -> None:
    """The next run gets the checkpoint in $MOLTSCHED_CHECKPOINT; a variable over 128 KiB
    would keep the task from starting ever again. So a save over 64 KiB is refused, clearly,
    and the last good checkpoint is kept."""
    config = setup(tmp_path)
    cli("status", config=config)
    db = tmp_path / "state" / "moltsched.db"
    save_checkpoint({"n": 7, "pad": "x" * 60_000}, "counter", db=db)
    with pytest.raises(CheckpointError, match="at most 64 KiB and this one is 100,"):
        save_checkpoint({"n": 8, "pad": "x" * 100_000}, "counter", db=db)
    big = cli("checkpoint", "save", "counter", json.dumps({"pad": "x" * 70_000}), config=config)
    assert big.returncode == 2 and "at most 64 KiB" in big.stderr
    assert json.loads(query(db, "SELECT checkpoint FROM task")[0][0])["n"] == 7
    # And the run that gets the largest allowed checkpoint starts.
    result = cli("--json", "run", "counter", config=config)
    assert json.loads(result.stdout)["outcome"] == "success", result.stdout


def test_a_checkpoint_nested_too_deep_is_refused_and_one_stored_breaks_nothing(
    tmp_path: Path,
) -> None:
    """JSON nested thousands deep: before, `checkpoint save` ended in a traceback, and one
    stored all the same (by a task that raised its recursion limit, or by hand) made every
    `status` of the task "something went wrong" and `checkpoint show` a traceback."""
    config = setup(tmp_path)
    cli("status", config=config)
    db = tmp_path / "state" / "moltsched.db"
    deep = "[" * 5000 + "]" * 5000
    saved = cli("--json", "checkpoint", "save", "counter", deep, config=config)
    assert saved.returncode == 2 and "Traceback" not in saved.stderr, saved.stderr
    assert json.loads(saved.stdout)["kind"] == "usage"
    nested: list[object] = []
    for _ in range(200):  # deeper than a checkpoint may be, shallower than Python's limit
        nested = [nested]
    with pytest.raises(CheckpointError, match="nested at most 100 deep"):
        save_checkpoint(nested, "counter", db=db)
    save_checkpoint(json.loads("[" * 100 + "]" * 100), "counter", db=db)  # as deep as may be
    assert query(db, "SELECT checkpoint FROM task") == [("[" * 100 + "]" * 100,)]
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE task SET checkpoint = ?", (deep,))
    for args in (["--json", "status"], ["status", "counter"], ["--json", "status", "counter"]):
        done = cli(*args, config=config)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    status = json.loads(cli("--json", "status", config=config).stdout)
    assert status["tasks"][0]["checkpoint"] == deep  # shown as the text it is
    shown = cli("--json", "checkpoint", "show", "counter", config=config)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr, shown.stderr
    assert "checkpoint clear counter" in json.loads(shown.stdout)["error"]


def test_a_checkpoint_piped_in_without_end_is_refused_not_read_whole(tmp_path: Path) -> None:
    """`producer | moltsched checkpoint save TASK -` where the producer never stops: before,
    everything was read (a MemoryError traceback in a 1 GB machine, after taking all of it)."""
    config = setup(tmp_path)
    cli("status", config=config)
    assert cli("checkpoint", "save", "counter", '{"n": 3}', config=config).returncode == 0
    with subprocess.Popen(["yes"], stdout=subprocess.PIPE) as endless:
        try:
            result = subprocess.run(
                [MOLTSCHED, "--config", str(config), "checkpoint", "save", "counter", "-"],
                stdin=endless.stdout,
                capture_output=True,
                text=True,
                timeout=60,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)),
            )
        finally:
            endless.kill()
    assert result.returncode == 2, result.stderr
    assert "at most 64 KiB" in result.stderr and "Traceback" not in result.stderr
    shown = cli("--json", "checkpoint", "show", "counter", config=config)
    assert json.loads(shown.stdout) == {"n": 3}
    # Pretty-printed JSON on stdin, bigger than the checkpoint it makes, is still taken.
    pretty = json.dumps({"items": list(range(5000))}, indent=8)
    assert len(pretty) > 64 * 1024
    saved = subprocess.run(
        [MOLTSCHED, "--config", str(config), "checkpoint", "save", "counter", "-"],
        input=pretty,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert saved.returncode == 0, saved.stderr


def test_a_task_that_sets_its_own_path_still_finds_moltsched(tmp_path: Path) -> None:
    """`env: {PATH: /usr/bin:/bin}` on a task: before, its PATH replaced the one moltsched
    makes sure of (DESIGN.md section 5), and `moltsched checkpoint save` in its script was
    "command not found". Its PATH is kept, with moltsched's folder after it."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "save.sh").write_text(
        'echo "PATH=$PATH"\nmoltsched checkpoint save "$MOLTSCHED_TASK_ID" \'{"n": 1}\'\n'
    )
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n  - {id: save, script: save.sh, every: 1h, env: {PATH: '/usr/bin:/bin'}}\n"
    )
    result = cli("--json", "run", "save", config=config)
    ran = json.loads(result.stdout)
    assert ran["outcome"] == "success", ran
    assert ran["stdout"].startswith("PATH=/usr/bin:/bin:")  # the task's own first
    shown = cli("--json", "checkpoint", "show", "save", config=config)
    assert json.loads(shown.stdout) == {"n": 1}


def test_a_pretty_printed_checkpoint_goes_through_the_daemon(tmp_path: Path) -> None:
    """Pretty-printed JSON on stdin is taken up to 1 MiB; sent to the daemon as it came, a
    request of such text could pass what its socket reads (1 MiB), and was refused. The
    command line sends the checkpoint it makes, not the text it read."""
    config = setup(tmp_path)
    value = {f"k{i}": "x" for i in range(4000)}
    pretty = json.dumps(value, indent=245)
    assert len(pretty) <= 16 * 64 * 1024 < len(json.dumps(pretty))
    daemon = DaemonProcess(config).start()
    try:
        saved = subprocess.run(
            [MOLTSCHED, "--config", str(config), "--json", "checkpoint", "save", "counter", "-"],
            input=pretty,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert saved.returncode == 0, saved.stdout + saved.stderr
        shown = cli("--json", "checkpoint", "show", "counter", config=config)
        assert json.loads(shown.stdout) == value
        logged = cli("--json", "logs", "-n", "3", config=config)
        assert "checkpoint save:counter" in [e["message"] for e in json.loads(logged.stdout)]
    finally:
        assert daemon.stop() == 0
