"""Everyday scripts that leave something running, on the real daemon: every run ends on time,
and nothing a run started outlives it (timeout, normal exit, pause, `run`, shutdown)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support.daemon import DaemonProcess
from tests.helpers import ESCAPES, MOLTSCHED, alive, cli, processes_of, query, wait_sync

SCRIPTS = {
    # The reproduction from the issue: the helper keeps the run's pipes open.
    "escape.sh": "( setsid bash -c 'sleep 600' & ); exit 0\n",
    # A helper that ignores SIGTERM, started by a run that then works for a long time.
    "stubborn.sh": "setsid bash -c 'trap \"\" TERM; while :; do sleep 1; done' &\nsleep 600\n",
}


def zombies_of(pid: int) -> list[int]:
    """The dead children `pid` has not reaped."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(proc.name))
    return found


def setup(tmp_path: Path, tasks: str) -> tuple[Path, Path]:
    (tmp_path / "tasks").mkdir()
    for name, text in SCRIPTS.items():
        (tmp_path / "tasks" / name).write_text(text)
    # A proper daemon: double fork, output to /dev/null.
    daemonize = ESCAPES["double-fork"].format(pids=tmp_path / "daemon.pids")
    (tmp_path / "tasks" / "daemonize.sh").write_text(daemonize + "\necho daemonized\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("max_concurrent: 10\ntasks:\n" + tasks)
    return config, tmp_path / "state" / "moltsched.db"


def test_ten_runs_that_leave_setsid_helpers_all_end_and_leave_nothing(tmp_path: Path) -> None:
    tasks = "".join(
        f"  - {{id: e{i}, script: escape.sh, every: 1h, timeout: 5s, grace: 1s}}\n"
        for i in range(10)
    )
    tasks += "  - {id: d, script: daemonize.sh, every: 1h, timeout: 5s, grace: 1s}\n"
    config, db = setup(tmp_path, tasks)
    ids = {f"e{i}" for i in range(10)} | {"d"}
    daemon = DaemonProcess(config).start()
    try:
        # Each run ends at its normal exit, well before its 5 s timeout.
        wait_sync(
            lambda: query(db, "SELECT COUNT(*) FROM run WHERE outcome = 'success'") == [(11,)],
            4.5,
            "eleven successful runs",
        )
        wait_sync(lambda: processes_of(db, ids) == [], 5, "the helpers to be gone")
        assert daemon.proc is not None
        assert zombies_of(daemon.proc.pid) == []  # the adopted helpers were reaped
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert {t["status"] for t in status["tasks"]} == {"idle"}
        logged = [m for (m,) in query(db, "SELECT message FROM log WHERE action = 'completed'")]
        assert len(logged) == 11
        assert all("left behind and stopped: " in m and "(pid " in m for m in logged), logged
    finally:
        assert daemon.stop(timeout=10) == 0
    assert processes_of(db, ids) == []


def test_timeout_pause_run_and_shutdown_end_within_the_grace(tmp_path: Path) -> None:
    tasks = (
        "  - {id: timed, script: stubborn.sh, every: 1h, timeout: 2s, grace: 1s}\n"
        "  - {id: paused, script: stubborn.sh, every: 1h, timeout: 1h, grace: 1s}\n"
        "  - {id: asked, script: stubborn.sh, cron: '0 0 1 1 *', timeout: 3s, grace: 1s}\n"
        "  - {id: left, script: stubborn.sh, every: 1h, timeout: 1h, grace: 1s}\n"
    )
    config, db = setup(tmp_path, tasks)
    daemon = DaemonProcess(config).start()
    assert daemon.proc is not None
    try:
        wait_sync(lambda: len(processes_of(db, {"paused", "left"})) >= 4, 10, "the helpers")
        # `run` waits for a run whose helper ignores SIGTERM: it gets its answer at the timeout.
        asked = subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "--json", "run", "asked"],
            stdout=subprocess.PIPE,
            text=True,
        )
        # The timeout ends the run and its helper: 2 s + 1 s of grace + a margin.
        wait_sync(
            lambda: query(db, "SELECT outcome FROM run WHERE task_id = 'timed'") == [("timeout",)],
            6,
            "the timeout",
        )
        assert processes_of(db, {"timed"}) == []
        before = time.monotonic()
        paused = cli("pause", "paused", config=config)
        assert paused.returncode == 0, paused.stderr
        assert time.monotonic() - before < 1 + 3
        assert processes_of(db, {"paused"}) == []
        out, _ = asked.communicate(timeout=10)
        assert asked.returncode == 1 and json.loads(out)["outcome"] == "timeout"
        assert processes_of(db, {"asked"}) == []
        before = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=1 + 5) == 0
        assert time.monotonic() - before < 1 + 5
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
    assert processes_of(db, {"timed", "paused", "asked", "left"}) == []
    (left,) = query(db, "SELECT outcome FROM run WHERE task_id = 'left'")[0]
    assert left == "interrupted"


def test_a_helper_that_clears_its_environment_is_found_too(tmp_path: Path) -> None:
    """`env -i setsid helper &` carries no run's tag; the daemon, which starts nothing but
    runs, still knows it for the run's when no other run is going."""
    config, db = setup(tmp_path, "  - {id: bare, script: bare.sh, every: 1h}\n")
    pidfile = tmp_path / "helper.pid"
    (tmp_path / "tasks" / "bare.sh").write_text(
        f"env -i setsid /bin/sleep 600 &\necho $! > {pidfile}\n"
    )
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: query(db, "SELECT outcome FROM run") == [("success",)], 10, "the run")
        helper = int(pidfile.read_text())
        assert not alive(helper)
        (message,) = query(db, "SELECT message FROM log WHERE action = 'completed'")[0]
        assert "left behind and stopped: " in message and f"(pid {helper})" in message
    finally:
        assert daemon.stop() == 0


def test_a_script_another_task_turned_into_a_pipe_holds_only_its_own_run(tmp_path: Path) -> None:
    """A task may write where the scripts are: one that puts a named pipe at another task's
    script path (or a deploy that does) made the daemon read the pipe's `#!` line in its
    event loop, and wait there for ever: no run started or ended, no command was answered.
    Now the run is the one that waits (bash reads the pipe) and ends at its timeout."""
    config, _ = setup(
        tmp_path,
        '  - {id: piped, script: piped.sh, cron: "0 0 1 1 *", timeout: 1s, grace: 1s}\n'
        '  - {id: other, script: escape.sh, cron: "0 0 1 1 *"}\n',
    )
    script = tmp_path / "tasks" / "piped.sh"
    script.write_text("echo fine\n")
    daemon = DaemonProcess(config).start()
    try:
        script.unlink()
        os.mkfifo(script)
        started = time.monotonic()
        done = cli("--json", "run", "piped", config=config, timeout=30)
        assert json.loads(done.stdout)["outcome"] == "timeout", done.stdout + done.stderr
        assert time.monotonic() - started < 20
        assert cli("run", "other", config=config, timeout=30).returncode == 0
    finally:
        assert daemon.stop() == 0
