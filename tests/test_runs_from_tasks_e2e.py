"""A task that runs another task (`moltsched run b` in its script), on the real daemon.

The run that asks lends its slot: the task it asks for starts at once, even when every slot is
taken, and the asking run is never the one interrupted for it. Before, with every slot taken,
the asking run was cut for the run it had asked for, resumed, asked again and was cut again,
for ever.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.daemon import DaemonProcess
from tests.helpers import cli, query, wait_sync

ASKS = 'echo "a asks for b"\nmoltsched run b >/dev/null\necho "b answered $?"\n'


def setup(tmp_path: Path, tasks: str, max_concurrent: int) -> DaemonProcess:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "asks.sh").write_text(ASKS)
    (tmp_path / "tasks" / "self.sh").write_text(
        'moltsched run "$MOLTSCHED_TASK_ID"\necho "asked for itself: $?"\n'
    )
    (tmp_path / "tasks" / "b.sh").write_text("echo b ran\n")
    (tmp_path / "tasks" / "long.sh").write_text("sleep 600\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"max_concurrent: {max_concurrent}\ntasks:\n{tasks}")
    return DaemonProcess(config).start()


def runs(db: Path, task_id: str) -> list[tuple[str | None, str]]:
    return query(db, "SELECT outcome, stdout FROM run WHERE task_id = ? ORDER BY id", (task_id,))


def a_ran_b_once(db: Path) -> None:
    """a's run ended, with b's answer, and b ran once, in between."""
    answered = [("success", "a asks for b\nb answered 0\n")]
    wait_sync(lambda: runs(db, "a")[-1:] == answered, 15, "a's run to end, answered")
    assert runs(db, "a") == answered
    assert runs(db, "b") == [("success", "b ran\n")]


def test_a_run_that_asks_for_another_with_every_slot_taken_lends_it_its_slot(
    tmp_path: Path,
) -> None:
    daemon = setup(
        tmp_path,
        "  - {id: a, script: asks.sh, every: 1h, timeout: 60s}\n"
        "  - {id: b, script: b.sh, cron: '0 0 1 1 *'}\n",
        max_concurrent=1,
    )
    try:
        a_ran_b_once(daemon.db)
        assert query(daemon.db, "SELECT COUNT(*) FROM log WHERE action = 'interrupted'") == [(0,)]
    finally:
        assert daemon.stop() == 0


def test_the_asking_run_is_not_cut_even_when_it_is_the_lowest_priority(tmp_path: Path) -> None:
    daemon = setup(
        tmp_path,
        "  - {id: long, script: long.sh, every: 1h, priority: 1}\n"
        "  - {id: a, script: asks.sh, every: 1h, priority: 10, timeout: 60s}\n"
        "  - {id: b, script: b.sh, cron: '0 0 1 1 *'}\n",
        max_concurrent=2,
    )
    try:
        a_ran_b_once(daemon.db)
        # The other run went on: nothing was interrupted for b, and the slots held.
        assert runs(daemon.db, "long") == [(None, "")]
        assert query(daemon.db, "SELECT COUNT(*) FROM log WHERE action = 'interrupted'") == [(0,)]
    finally:
        assert daemon.stop() == 0


def test_a_run_that_asks_for_itself_is_told_at_once(tmp_path: Path) -> None:
    daemon = setup(tmp_path, "  - {id: s, script: self.sh, every: 1h, timeout: 60s}\n", 2)
    try:
        wait_sync(
            lambda: runs(daemon.db, "s")[-1:] == [("success", "asked for itself: 2\n")],
            15,
            "s's run to end",
        )
        (message,) = query(daemon.db, "SELECT stderr FROM run WHERE task_id = 's'")[0]
        assert "s cannot wait for its own run" in message
    finally:
        assert daemon.stop() == 0


def test_with_no_daemon_a_run_that_asks_for_another_is_told_at_once(tmp_path: Path) -> None:
    """`moltsched run a` with no daemon holds the state lock until a ends: a's own
    `moltsched run b` cannot start b, and says so at once (before: it waited for the lock,
    so for a's timeout)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "asks.sh").write_text(ASKS.replace(">/dev/null", "2>&1"))
    (tmp_path / "tasks" / "b.sh").write_text("echo b ran\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n  - {id: a, script: asks.sh, every: 1h, timeout: 60s}\n"
        "  - {id: b, script: b.sh, every: 1h}\n"
    )
    done = cli("--json", "run", "a", config=config, timeout=20)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)["stdout"]
    assert out.endswith("b answered 3\n")
    assert "start the daemon" in out and "waiting" not in out
    assert runs(tmp_path / "state" / "moltsched.db", "b") == []
