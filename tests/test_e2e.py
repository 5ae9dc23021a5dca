"""End to end: the real `moltsched daemon` process on a temporary config, driven by the CLI."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import pytest

from scheduler_core import __version__
from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, cli, query, wait_sync

CONFIG = """
state_dir: state
tasks_dir: tasks
timezone: Europe/Berlin
max_concurrent: 2
tasks:
  - id: tick
    script: tick.sh
    every: 1s
  - id: fails
    script: fails.sh
    every: 1h
  - id: slow
    script: slow.sh
    cron: "0 0 1 1 *"
    grace: 2s
"""

SCRIPTS = {
    "tick.sh": "echo tick\n",
    "fails.sh": "echo trying; echo 'disk on fire' >&2; exit 4\n",
    # Records its start and end, so tests can see whether two runs ever overlapped.
    "slow.sh": 'echo "start $(date +%s.%N)" >> "$(dirname "$MOLTSCHED_DB")/../slow.log"\n'
    "sleep ${SLOW_FOR:-1}\n"
    'echo "end $(date +%s.%N)" >> "$(dirname "$MOLTSCHED_DB")/../slow.log"\n',
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    for name, text in SCRIPTS.items():
        (tmp_path / "tasks" / name).write_text(text)
    path = tmp_path / "moltsched.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def daemon(config: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(config).start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def db(config: Path) -> Path:
    return config.parent / "state" / "moltsched.db"


def slow_intervals(config: Path) -> list[tuple[float, float]]:
    lines = (config.parent / "slow.log").read_text().split("\n")
    starts = [float(x.split()[1]) for x in lines if x.startswith("start")]
    ends = [float(x.split()[1]) for x in lines if x.startswith("end")]
    return list(zip(starts, ends, strict=True))


def no_overlap(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered))


def test_daemon_runs_tasks_answers_the_cli_and_stops_cleanly(
    daemon: DaemonProcess, config: Path
) -> None:
    wait_sync(
        lambda: query(db(config), "SELECT run_count FROM task WHERE id = 'tick'")[0][0] >= 3,
        20,
        "three ticks",
    )
    result = cli("--json", "status", config=config)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] is True and status["task_count"] == 3
    assert status["version"] == __version__
    tick = next(t for t in status["tasks"] if t["id"] == "tick")
    assert set(tick) == {
        "id",
        "name",
        "status",
        "enabled",
        "last_run",
        "next_run",
        "run_count",
        "error_count",
        "last_error",
        "last_outcome",
        "checkpoint",
    }
    assert tick["last_outcome"] == "success" and tick["enabled"] is True
    assert tick["next_run"].endswith(("+01:00", "+02:00"))  # shown in Europe/Berlin

    result = cli("run", "fails", config=config)
    assert result.returncode == 1
    assert "fails: failed (exit 4" in result.stdout and "disk on fire" in result.stdout
    result = cli("run", "tick", "--json", config=config)
    assert result.returncode == 0
    ran = json.loads(result.stdout)
    assert ran["outcome"] == "success" and ran["cause"] == "on-demand" and ran["stdout"] == "tick\n"

    result = cli("run", "tik", config=config)
    assert result.returncode == 2 and "unknown task 'tik'" in result.stderr
    assert "tick" in result.stderr and result.stdout == ""
    result = cli("--json", "run", "tik", config=config)
    assert result.returncode == 2 and json.loads(result.stdout)["nearest"] == ["tick"]

    result = cli("--json", "logs", "fails", "-n", "3", config=config)
    entries = json.loads(result.stdout)
    assert [e["action"] for e in entries] == ["failed", "started", "command"]
    assert set(entries[0]) == {"time", "task_id", "action", "message", "duration_s", "actor"}
    result = cli("status", "fails", config=config)
    assert "last error: exit 4" in result.stdout

    assert daemon.stop() == 0
    assert "daemon stopped" in daemon.log.read_text()
    assert not (config.parent / "state" / "control.sock").exists()
    assert query(db(config), "SELECT COUNT(*) FROM run WHERE outcome IS NULL") == [(0,)]
    assert query(db(config), "PRAGMA integrity_check") == [("ok",)]
    by_task = dict(query(db(config), "SELECT id, error_count FROM task"))
    assert by_task["fails"] >= 1


def test_sigterm_interrupts_a_running_run_and_records_it(config: Path) -> None:
    daemon = DaemonProcess(config, env={"SLOW_FOR": "30"}).start()
    runner = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "--json", "run", "slow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_sync(
        lambda: query(db(config), "SELECT status FROM task WHERE id = 'slow'") == [("running",)],
        10,
        "slow to run",
    )
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 6  # grace 2s plus a little
    out, _ = runner.communicate(timeout=10)
    assert runner.returncode == 1 and json.loads(out)["outcome"] == "interrupted"
    assert query(db(config), "SELECT status FROM task WHERE id = 'slow'") == [("interrupted",)]
    outcomes = query(db(config), "SELECT outcome FROM run WHERE task_id = 'slow'")
    assert outcomes == [("interrupted",)]


def test_two_runs_of_one_task_through_the_daemon_join_one_run(
    daemon: DaemonProcess, config: Path
) -> None:
    procs = [
        subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "--json", "run", "slow"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
    assert len({o["run_id"] for o in outs}) == 1
    admissions = sorted(o["admission"] for o in outs)
    # The first is started, or queued if tick and fails (due at the start) hold both slots.
    joined = [a for a in admissions if a in ("already-running", "already-queued")]
    assert len(joined) == 2 and set(admissions) - set(joined) <= {"started", "queued"}, outs
    assert len(slow_intervals(config)) == 1


def test_a_second_daemon_refuses_to_start(daemon: DaemonProcess, config: Path) -> None:
    result = cli("daemon", config=config, timeout=20)
    assert result.returncode == 2 and "already running" in result.stderr
    state = config.parent / "state"
    lock, sock = state / "moltsched.lock", state / "control.sock"
    # Its lock file removed ("a stale lock", someone thought): the daemon puts it back at
    # once (bot.state_watch). Before, a second daemon took a new one and both ran every task.
    lock.unlink()
    wait_sync(lock.exists, 10, "the lock file put back")
    result = cli("daemon", config=config, timeout=20)
    assert result.returncode == 2 and "already running" in result.stderr, result.stderr
    # Replaced by another file (which the daemon does not watch for): its lock on the
    # directory still tells.
    replace_with_a_file(lock)
    result = cli("daemon", config=config, timeout=20)
    assert result.returncode == 2 and "already running" in result.stderr, result.stderr
    assert "lock file" in result.stderr
    assert cli("--json", "status", config=config).returncode == 0  # the first one answers
    # And its control socket too: before, nothing was left to tell that a daemon ran, and a
    # second one started beside it.
    replace_with_a_file(sock)
    result = cli("daemon", config=config, timeout=20)
    assert result.returncode == 2 and "already running" in result.stderr, result.stderr
    result = cli("run", "tick", config=config, timeout=20)  # no foreground run beside it
    assert result.returncode == 3 and "is gone" in result.stderr, result.stderr
    assert cli("reload", config=config, timeout=20).returncode == 0  # SIGHUP: socket again
    assert cli("--json", "status", config=config).returncode == 0
    assert query(db(config), "SELECT COUNT(*) FROM run WHERE cause = 'on-demand'") == [(0,)]


def replace_with_a_file(path: Path) -> None:
    """Put an empty file in the place of `path` by a rename (as an editor saves, or `mv`):
    the daemon watches its state directory for removals, not for this."""
    spare = path.with_name(path.name + ".new")
    spare.write_text("")
    os.replace(spare, path)


def test_a_daemon_whose_control_socket_was_removed_says_so_and_sighup_makes_it_again(
    daemon: DaemonProcess, config: Path
) -> None:
    """Before: with the socket removed (a cleaner of old files in /tmp, say), `run` and
    `pause` waited for ever "for another foreground run to finish", beside a daemon that
    ran on, and nothing brought the socket back but a restart. Now the daemon puts a removed
    one back at once; one replaced by another file is made again by a SIGHUP, which the
    commands that find the socket gone suggest, and `moltsched reload` sends."""
    sock = config.parent / "state" / "control.sock"
    sock.unlink()
    wait_sync(lambda: sock.is_socket(), 10, "the socket put back")
    assert cli("run", "tick", config=config, timeout=20).returncode == 0
    replace_with_a_file(sock)
    result = cli("--json", "run", "tick", config=config, timeout=20)
    assert result.returncode == 3 and json.loads(result.stdout)["kind"] == "unavailable"
    assert f"its control socket {sock} is gone" in result.stderr
    assert f"kill -HUP {daemon.pid}" in result.stderr
    doctor = cli("doctor", config=config).stdout
    assert f"running (pid {daemon.pid}), but its control socket is gone" in doctor, doctor
    os.kill(daemon.pid, signal.SIGHUP)
    wait_sync(lambda: sock.is_socket(), 10, "the socket made again")
    status = json.loads(cli("--json", "status", config=config).stdout)
    assert status["running"] is True
    assert cli("run", "tick", config=config, timeout=20).returncode == 0
    # `moltsched reload` (systemd's ExecReload) does it too, and says how the reload went.
    replace_with_a_file(sock)
    reloaded = cli("reload", config=config, timeout=20)
    assert reloaded.returncode == 0 and "reloaded" in reloaded.stdout.lower(), reloaded
    assert sock.is_socket() and cli("run", "tick", config=config, timeout=20).returncode == 0


def test_without_a_daemon_commands_work_on_the_database(config: Path) -> None:
    result = cli("--json", "status", config=config)
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert status["running"] is False
    assert {t["status"] for t in status["tasks"]} == {"idle"}
    assert all(t["last_run"] is None for t in status["tasks"])

    result = cli("run", "tick", config=config)
    assert result.returncode == 0 and "tick: success" in result.stdout
    result = cli("run", "fails", config=config)
    assert result.returncode == 1
    result = cli("--json", "status", "fails", config=config)
    assert json.loads(result.stdout)["error_count"] == 1
    # On-demand runs leave the schedule alone: tick and fails are still due (they are new),
    # slow (a yearly cron) is not.
    result = cli("--json", "run-all", config=config)
    ran = {r["task_id"]: r["outcome"] for r in json.loads(result.stdout)["ran"]}
    assert ran == {"tick": "success", "fails": "failed"}
    assert result.returncode == 1
    # Now fails (hourly) and slow (yearly) are not due; tick (every second) may be again.
    result = cli("--json", "run-all", config=config)
    assert {r["task_id"] for r in json.loads(result.stdout)["ran"]} <= {"tick"}
    assert result.returncode == 0
    result = cli("--json", "logs", "-n", "50", config=config)
    actions = [e["action"] for e in json.loads(result.stdout)]
    assert actions.count("started") in (4, 5) and actions.count("failed") == 2


def test_before_any_daemon_ran_status_says_when_each_task_would_run(config: Path) -> None:
    """Set up, not started yet: `status` said "next -" for every task, and `--json` null,
    where the schedule already tells: a cron task at its next slot, an interval task at once
    (a daemon's start runs it). The time is only shown, not saved: the daemon decides it."""
    status = json.loads(cli("--json", "status", config=config).stdout)
    listed = {t["id"]: t for t in status["tasks"]}
    berlin = ZoneInfo("Europe/Berlin")
    slow = datetime.fromisoformat(listed["slow"]["next_run"])
    assert (slow.month, slow.day, slow.hour, slow.minute) == (1, 1, 0, 0)
    assert slow.utcoffset() == datetime(slow.year, 1, 1, tzinfo=berlin).utcoffset()
    for task_id in ("tick", "fails"):
        due = datetime.fromisoformat(listed[task_id]["next_run"])
        assert abs((due - datetime.now(UTC)).total_seconds()) < 60, listed[task_id]
    text = cli("status", config=config).stdout
    assert "next -" not in text, text
    assert f"slow: idle, last never run, next {slow.year}-01-01 00:00" in text, text
    assert "tick: idle, last never run, next" in text and "daemon not running" in text, text
    with contextlib.closing(sqlite3.connect(db(config))) as conn:
        saved = conn.execute("SELECT count(*) FROM task WHERE next_run IS NOT NULL").fetchone()
    assert saved == (0,)


def test_a_read_without_a_daemon_answers_from_the_tasks_alone(config: Path) -> None:
    """status, logs, output and a chat read need no scheduler: the process does not load it
    (nor its launcher or its alerts), and a run asked for in the same way still goes."""
    assert cli("run", "fails", config=config).returncode == 1
    for args in (["status"], ["status", "fails"], ["logs", "fails"], ["output", "fails"]):
        with_times = subprocess.run(
            [sys.executable, "-X", "importtime", MOLTSCHED, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert with_times.returncode == 0, with_times.stderr
        loaded = {line.rsplit("|", 1)[-1].strip() for line in with_times.stderr.splitlines()}
        assert "scheduler_core.store" in loaded
        assert not loaded & {"scheduler_core.scheduler", "scheduler_core.runner", "bot.outbox"}
    fails = json.loads(cli("--json", "status", "fails", config=config).stdout)
    assert fails["status"] == "error" and fails["recent_runs"][0]["outcome"] == "failed"
    result = cli("--json", "chat", "run:tick", config=config)
    assert result.returncode == 0 and "tick: success" in result.stdout


def test_foreground_runs_never_overlap(config: Path) -> None:
    procs = [
        subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "run", "slow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"SLOW_FOR": "0.5"},
        )
        for _ in range(3)
    ]
    for p in procs:
        p.communicate(timeout=30)
        assert p.returncode == 0
    intervals = slow_intervals(config)
    assert len(intervals) == 3 and no_overlap(intervals)


def test_a_stale_socket_from_a_crashed_daemon_is_replaced(config: Path) -> None:
    state = config.parent / "state"
    state.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(state / "control.sock"))
    stale.close()  # the file stays, nobody listens: what a kill -9 leaves
    daemon = DaemonProcess(config).start()
    try:
        assert "replacing a stale control socket" in daemon.log.read_text()
        assert (state / "control.sock").stat().st_mode & 0o777 == 0o600
        result = cli("--json", "status", config=config)
        assert json.loads(result.stdout)["running"] is True
    finally:
        assert daemon.stop() == 0


def test_after_kill_9_the_next_daemon_records_the_run_interrupted_and_resumes_it(
    config: Path,
) -> None:
    daemon = DaemonProcess(config, env={"SLOW_FOR": "30"}).start()
    runner = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "run", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_sync(
        lambda: query(db(config), "SELECT status FROM task WHERE id = 'slow'") == [("running",)],
        10,
        "slow to run",
    )
    daemon.stop(signal.SIGKILL)
    _, err = runner.communicate(timeout=10)
    assert runner.returncode == 1 and "closed the connection without answering" in err
    # What kill -9 of a daemon and its tasks leaves: kill the orphaned run's group too.
    for line in subprocess.run(
        ["pgrep", "-f", "slow.sh"], capture_output=True, text=True
    ).stdout.split():
        os.killpg(int(line), signal.SIGKILL)
    again = DaemonProcess(config).start()
    try:
        wait_sync(
            lambda: (
                query(
                    db(config), "SELECT cause, outcome FROM run WHERE task_id = 'slow' ORDER BY id"
                )[-1]
                == ("resume", "success")
            ),
            20,
            "the resumed run",
        )
        outcomes = query(db(config), "SELECT outcome FROM run WHERE task_id = 'slow' ORDER BY id")
        assert outcomes[0] == ("interrupted",)
        assert query(db(config), "PRAGMA integrity_check") == [("ok",)]
    finally:
        assert again.stop() == 0


def test_version(daemon: DaemonProcess) -> None:
    from importlib.metadata import version

    done = subprocess.run([MOLTSCHED, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == f"moltsched {__version__}\n"
    for argv in (["--json", "--version"], ["--version", "--json"]):  # the agent reads JSON
        done = subprocess.run([MOLTSCHED, *argv], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and json.loads(done.stdout) == {"version": __version__}
    assert version("moltbot-scheduler") == __version__  # what pip installed says the same
    assert f"moltsched {__version__} daemon running" in daemon.log.read_text()
    changelog = (Path(__file__).parent.parent / "CHANGELOG.md").read_text()
    assert f"## {__version__} (" in changelog


def test_ctrl_c_while_run_waits_says_the_run_goes_on(daemon: DaemonProcess, config: Path) -> None:
    """Before: a KeyboardInterrupt traceback. Now one line, exit 130 as a shell expects, and
    the run, which is the daemon's, goes on to its end."""
    waiting = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "run", "slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal
    )
    started = "SELECT COUNT(*) FROM run WHERE task_id = 'slow'"
    wait_sync(lambda: query(db(config), started) == [(1,)], 10, "the run to start")
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines() == [
        "moltsched: interrupted; slow goes on in the daemon (`moltsched status slow` follows it)"
    ]
    ended = "SELECT outcome FROM run WHERE task_id = 'slow'"
    wait_sync(lambda: query(db(config), ended) == [("success",)], 15, "the run to end")


def test_a_stale_lock_file_never_gets_a_process_signalled(config: Path) -> None:
    """The lock file of a daemon that has stopped still names its pid, which another process
    may have by now: `reload` must not send that one SIGHUP (SIGHUP ends most programs)."""
    (config.parent / "state").mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (config.parent / "state" / "moltsched.lock").write_text(f"{other.pid} daemon\n")
        reloaded = cli("reload", config=config, timeout=20)
        assert reloaded.returncode == 0 and "No daemon is running" in reloaded.stdout
        assert other.poll() is None  # not signalled
        assert "not running on" in cli("doctor", config=config).stdout
    finally:
        other.kill()
        other.wait()


def _unread(pipe: IO[bytes]) -> int:
    """How many bytes wait in a pipe, unread (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def test_an_answer_cut_short_is_a_failure_not_a_short_answer(tmp_path: Path) -> None:
    """The daemon killed while `status --json` streams a long answer: before, the CLI printed
    the first part and exited 0, and the agent took half a list for the whole. Now the
    answer's end is marked, and without it the CLI exits 1 and says why."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("true\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n"
        + "".join(f"  - {{id: t{i}, script: a.sh, cron: '0 0 1 1 *'}}\n" for i in range(10_000))
    )
    daemon = DaemonProcess(config).start()
    try:
        reader = subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "--json", "status"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert reader.stdout is not None
        # Its output is not read: the answer stops mid-way, the pipe and socket full. The cut
        # comes once the tasks have begun to arrive (the head alone is a few hundred bytes).
        wait_sync(lambda: _unread(reader.stdout) > 1000, 20, "the tasks to arrive")
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()
        out, err = reader.communicate(timeout=30)
    finally:
        daemon.kill()
    assert reader.returncode == 1, (reader.returncode, err)
    assert b"went away before it finished answering" in err, err
    assert len(out) > 1000 and b'"tasks"' in out, out[:300]  # what came before the cut
    # An answer that ends as it should is taken whole, as before.
    daemon = DaemonProcess(config).start()
    try:
        done = cli("--json", "status", config=config, timeout=60)
    finally:
        assert daemon.stop() == 0
    assert done.returncode == 0 and json.loads(done.stdout)["task_count"] == 10_000


def test_output_of_a_run_under_way_is_what_it_printed_so_far(tmp_path: Path) -> None:
    """`output TASK` (chat `output:TASK`) while a long run goes: what it has printed so far,
    marked running. Before: "has not finished a run yet", or the run before it, so a task
    could not be looked in on from the phone until it ended."""
    (tmp_path / "tasks").mkdir()
    go = tmp_path / "go"
    (tmp_path / "tasks" / "long.sh").write_text(
        f'echo "page 1 of 2"; echo "slow site" >&2; until [ -e "{go}" ]; do sleep 0.05; done\n'
        'echo "page 2 of 2"\n'
    )
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: long, script: long.sh, every: 1h}\n")
    daemon = DaemonProcess(config).start()
    try:

        def so_far() -> dict[str, object]:
            done = cli("--json", "output", "long", config=config)
            assert done.returncode == 0, done.stderr
            answer: dict[str, object] = json.loads(done.stdout)
            return answer

        wait_sync(lambda: "page 1 of 2" in str(so_far().get("stdout")), 30, "the first page")
        running = so_far()
        assert running["outcome"] is None and running["stderr"] == "slow site\n", running
        chat = cli("chat", "output:long", config=config).stdout
        assert "running" in chat and "page 1 of 2" in chat and "slow site" in chat, chat
        go.touch()
        wait_sync(lambda: so_far()["outcome"] == "success", 30, "the run's end")
        assert so_far()["stdout"] == "page 1 of 2\npage 2 of 2\n"
    finally:
        assert daemon.stop() == 0
