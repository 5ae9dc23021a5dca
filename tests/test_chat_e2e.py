"""Chat, pause and resume end to end, through the real daemon and without one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.daemon import DaemonProcess
from tests.helpers import cli, query, wait_sync

CONFIG = """
state_dir: state
tasks_dir: tasks
tasks:
  - id: worker
    script: worker.sh
    every: 1h
    grace: 2s
  - id: quick
    script: quick.sh
    every: 1h
"""

# Counts through items, saving its place; records each item it processes.
WORKER = """
start=$(moltsched checkpoint show "$MOLTSCHED_TASK_ID" --json | python3 -c '
import json, sys
value = json.load(sys.stdin)
print(value["next"] if value else 0)')
echo "$MOLTSCHED_RUN_ID start $start" >> ../items.log
for ((i = start; i < 60; i++)); do
  echo "$i" >> ../items.log
  moltsched checkpoint save "$MOLTSCHED_TASK_ID" "{\\"next\\": $((i + 1))}"
  sleep 0.1
done
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "worker.sh").write_text(WORKER)
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    path = tmp_path / "moltsched.yaml"
    path.write_text(CONFIG)
    return path


def db(config: Path) -> Path:
    return config.parent / "state" / "moltsched.db"


def items(config: Path) -> list[int]:
    lines = (config.parent / "items.log").read_text().split("\n")
    return [int(x) for x in lines if x.isdigit()]


def test_pause_interrupts_survives_a_restart_and_resume_goes_on(config: Path) -> None:
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(
            lambda: len(items(config)) >= 5 if (config.parent / "items.log").exists() else False,
            20,
            "the worker to get going",
        )
        result = cli("chat", "pause:worker", config=config)
        assert result.stdout.startswith("Paused worker: no scheduled runs until resume:worker.")
        assert "Its run was interrupted after" in result.stdout
        last = cli("status", "worker", config=config).stdout.splitlines()[2]
        assert re.fullmatch(r"last run: \S+ \(interrupted: paused, after \d+\.\ds\)", last), last
        status = json.loads(cli("--json", "status", "worker", config=config).stdout)
        # Five items were logged; the fifth's checkpoint may be the save the pause cut.
        assert status["status"] == "paused" and status["checkpoint"]["next"] >= 4
        assert cli("pause", "worker", config=config).stdout == "worker was already paused.\n"
    finally:
        assert daemon.stop() == 0
    seen = len(items(config))
    again = DaemonProcess(config).start()  # the pause persists: the interrupted run does not resume
    try:
        assert "paused" in cli("status", config=config).stdout
        result = cli("resume", "worker", config=config)
        assert result.stdout.startswith("Resumed worker: its interrupted run goes on now")
        wait_sync(
            lambda: (
                query(
                    db(config),
                    "SELECT outcome FROM run WHERE task_id = 'worker' ORDER BY id DESC LIMIT 1",
                )
                == [("success",)]
            ),
            30,
            "the resumed run to finish",
        )
    finally:
        assert again.stop() == 0
    done = items(config)
    assert len(done) > seen
    # Every item processed, none twice beyond the last checkpoint (the one being saved when
    # the run was cut may repeat once).
    assert set(done) == set(range(60))
    assert len(done) - 60 <= 1
    causes = query(
        db(config), "SELECT cause, outcome FROM run WHERE task_id = 'worker' ORDER BY id"
    )
    assert causes[0] == ("schedule", "interrupted") and causes[-1] == ("resume", "success")
    audit = query(db(config), "SELECT action, actor FROM log WHERE action IN ('paused', 'resumed')")
    assert [a for a, _ in audit] == ["paused", "resumed"]
    assert all(actor.startswith("cli:") for _, actor in audit)


def test_chat_answers_like_the_bot_with_and_without_a_daemon(config: Path) -> None:
    offline = cli("chat", "run:quick", config=config)
    assert offline.returncode == 0
    ack, result, out = offline.stdout.splitlines()
    assert ack == "Started quick." and result.startswith("quick: success") and out == "quick"
    daemon = DaemonProcess(config).start()
    try:
        online = cli("chat", "/RUN : quick", config=config)
        assert online.stdout.splitlines()[0] in (
            "Started quick.",
            "quick is already running; I'll tell you how it ends.",
        )
        assert "quick: success" in online.stdout
        replies = json.loads(cli("--json", "chat", "status", config=config).stdout)["replies"]
        assert replies[0].startswith("2 task(s), daemon running")
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    "text",
    [
        "run:quick; touch PWNED",
        "run:$(touch PWNED)",
        "run:`touch PWNED`",
        "run:../tasks/quick.sh",
        "run:quick.sh",
        "run:QUIC\u212a",  # a Kelvin sign, which casefolds to k: not an id
        "run:" + "q" * 5000,
        "run:qu\u202eick",
        "\u202erun:quick",
        "run:🙂",
    ],
)
def test_hostile_chat_runs_nothing(config: Path, text: str) -> None:
    result = cli("chat", text, config=config)
    assert result.returncode == 0
    assert 0 < len(result.stdout) < 800
    assert (
        not (config.parent / "PWNED").exists() and not (config.parent / "tasks" / "PWNED").exists()
    )
    runs = query(db(config), "SELECT COUNT(*) FROM run") if db(config).exists() else [(0,)]
    assert runs == [(0,)]


def test_unknown_tasks_get_the_nearest_ids(config: Path) -> None:
    result = cli("chat", "run:quik", config=config)
    assert result.stdout == "unknown task 'quik' (did you mean quick?)\n"
    result = cli("pause", "workr", config=config)
    assert result.returncode == 2 and "did you mean worker" in result.stderr
    # A task, then words its command does not take: what to write instead (it was "unknown
    # task 'quick 18:00' (did you mean quick?)").
    result = cli("chat", "run:quick 18:00", config=config)
    said = "run:quick runs it now, run:quick in 20m or at 18:00 later; not '18:00'\n"
    assert result.stdout == said
    result = cli("chat", "Logs: Quick 5", config=config)
    assert result.stdout == "logs:quick takes nothing after the task, not '5'\n"
    # `status all` and `logs all` mean every task (no task is called `all`).
    assert (
        cli("chat", "Status all", config=config).stdout
        == cli("chat", "status", config=config).stdout
    )
    assert (
        cli("chat", "logs:ALL", config=config).stdout == cli("chat", "logs", config=config).stdout
    )
    result = cli("chat", "logs 50", config=config)
    assert (
        result.stdout == "logs takes a task, not a count: logs:TASK; it shows what fits a screen\n"
    )
    # Every task, or several at once, for a verb that takes one (it was "unknown task 'all'"
    # with the nearest ids, or "unknown task 'quick, worker'"): one command a task.
    for verb in ("pause", "Resume", "stop", "run", "cancel"):
        said = cli("chat", f"{verb} all", config=config).stdout
        assert said == f"{verb.lower()} takes one task at a time: {verb.lower()}:TASK\n", said
    said = cli("chat", "pause:quick, worker", config=config).stdout
    assert said == "One task a command: pause:quick, then pause:worker\n", said
    said = cli("chat", "Pause quick worker", config=config).stdout
    assert said == "One task a command: pause:quick, then pause:worker\n", said
    assert query(db(config), "SELECT COUNT(*) FROM task WHERE paused = 1") == [(0,)]


def test_a_pause_made_without_a_daemon_holds_when_it_starts(config: Path) -> None:
    result = cli("pause", "quick", config=config)
    assert result.returncode == 0 and result.stdout.startswith("Paused quick")
    daemon = DaemonProcess(config).start()
    try:
        # worker (new, every 1h) runs at once; quick, paused, must not.
        wait_sync(
            lambda: (
                query(db(config), "SELECT COUNT(*) FROM run WHERE task_id = 'worker'")[0][0] >= 1
            ),
            15,
            "worker to start",
        )
        assert query(db(config), "SELECT COUNT(*) FROM run WHERE task_id = 'quick'") == [(0,)]
        assert json.loads(cli("--json", "status", "quick", config=config).stdout)["status"] == (
            "paused"
        )
    finally:
        assert daemon.stop() == 0


def test_long_chat_answers_are_cut_for_a_phone(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    tasks = "\n".join(f"  - {{id: t{i:03d}, script: t.sh, every: 1h}}" for i in range(60))
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"tasks:\n{tasks}\n")
    lines = cli("chat", "status", config=config).stdout.splitlines()
    assert len(lines) == 25
    assert lines[-1] == "… 37 more, all idle; send status:TASK for one task"
    full = cli("status", config=config).stdout.splitlines()
    assert len(full) == 61  # the terminal gets everything


def test_a_cut_status_shows_the_tasks_that_are_not_idle_first(tmp_path: Path) -> None:
    """On a phone, 60 tasks are cut to a screen: the one that failed and the one paused,
    far down the file, are on it, before the idle ones, and the note says the rest are idle."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    (tmp_path / "tasks" / "bad.sh").write_text("exit 3\n")
    tasks = [f"  - {{id: t{i:03d}, script: t.sh, every: 1h}}" for i in range(60)]
    tasks[45] = "  - {id: t045, script: bad.sh, every: 1h}"
    tasks[40] = "  - {id: t040, script: bad.sh, every: 1h, enabled: false}"  # its error: old news
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n" + "\n".join(tasks) + "\n")
    assert cli("run", "t045", config=config).returncode == 1
    assert cli("run", "t040", config=config).returncode == 1
    cli("pause", "t050", config=config)
    lines = cli("chat", "status", config=config).stdout.splitlines()
    assert len(lines) == 25
    assert lines[1].startswith("t045: error, last FAILED")
    assert lines[2].startswith("t050: paused, last never run")
    assert lines[3].startswith("t000: idle")
    assert lines[-1] == "… 37 more, all idle; send status:TASK for one task"


def test_a_cut_status_counts_the_tasks_not_idle_that_did_not_fit(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    (tmp_path / "tasks" / "bad.sh").write_text("exit 3\n")
    tasks = [
        f"  - {{id: t{i:03d}, script: {'bad' if i >= 30 else 't'}.sh, every: 1h}}"
        for i in range(60)
    ]
    config = tmp_path / "moltsched.yaml"
    config.write_text("max_concurrent: 4\ntasks:\n" + "\n".join(tasks) + "\n")
    assert cli("run-all", config=config).returncode == 1
    lines = cli("chat", "status", config=config).stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:24]] == [f"t{i:03d}" for i in range(30, 53)]
    assert lines[-1] == "… 37 more, 7 not idle; send status:TASK for one task"


def test_status_of_a_running_task_says_its_last_run_is_under_way(tmp_path: Path) -> None:
    """`last run` of a task that runs is the run under way: its outcome is not yet, and the
    one before it is named as that (before: "last run: 13:21:14 (success)", the time of the
    run under way with the outcome of the one before)."""
    (tmp_path / "tasks").mkdir()
    go = tmp_path / "go"
    (tmp_path / "tasks" / "wait.sh").write_text(f"until [ -e {go} ]; do sleep 0.05; done\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: waits, script: wait.sh, every: 1h}\n")
    go.touch()
    assert cli("run", "waits", config=config).returncode == 0
    go.unlink()
    daemon = DaemonProcess(config).start()  # its first slot is now: the run waits for `go`
    try:
        wait_sync(
            lambda: (
                json.loads(cli("--json", "status", "waits", config=config).stdout)["status"]
                == "running"
            ),
            20,
            "the run to start",
        )
        lines = cli("status", "waits", config=config).stdout.splitlines()
        assert lines[2].endswith("(under way; the one before: success)"), lines
        go.touch()
    finally:
        assert daemon.stop() == 0
