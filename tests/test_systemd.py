"""deploy/moltsched.service, and the notify protocol against a real datagram socket."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MOLTSCHED, REPO, cli, query, wait_sync

UNIT = REPO / "deploy" / "moltsched.service"


def directives() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_the_unit_has_what_a_deployment_needs() -> None:
    d = directives()
    assert d["Type"] == "notify" and int(d["WatchdogSec"]) > 0
    assert d["ExecStart"].endswith("/.venv/bin/moltsched daemon")  # no shell wrapper
    # The daemon checks the file itself: a validate before it would refuse a broken file
    # without a word to the phone (see bot.start_refused).
    assert "ExecStartPre" not in d
    assert d["ExecReload"].endswith("/.venv/bin/moltsched reload")  # waits, fails if rejected
    assert d["Restart"] == "on-failure" and d["KillMode"] == "mixed"
    assert "2" in d["RestartPreventExitStatus"].split()  # a bad configuration: no loop
    assert int(d["TimeoutStopSec"]) > 10 + 5  # the default task grace, and time to record
    assert d["StateDirectory"] == d["ConfigurationDirectory"] == "moltsched"
    assert d["CacheDirectory"] == "moltsched" and d["CacheDirectoryMode"] == "0700"
    assert d["User"] == "moltsched"


def test_every_directive_is_commented() -> None:
    lines = UNIT.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" not in line or line.startswith("#"):
            continue
        before = i - 1
        while before >= 0 and "=" in lines[before] and not lines[before].startswith("#"):
            before -= 1  # a group of directives under one comment
        assert before >= 0 and lines[before].startswith("#"), f"no comment for {line!r}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "moltsched.service"
    # Point it at this checkout's moltsched: verify checks that the programs exist.
    unit.write_text(UNIT.read_text().replace("/opt/moltsched/.venv/bin/moltsched", MOLTSCHED))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    complaints = [ln for ln in result.stderr.splitlines() if str(unit) in ln]
    assert result.returncode == 0 and complaints == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_security_rates_the_unit_5_or_lower(tmp_path: Path) -> None:
    unit = tmp_path / "moltsched.service"
    unit.write_text(UNIT.read_text().replace("/opt/moltsched/.venv/bin/moltsched", MOLTSCHED))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    overall = [ln for ln in result.stdout.splitlines() if "Overall exposure level" in ln]
    assert overall, result.stdout + result.stderr
    score = float(overall[0].split(":")[1].split()[0])
    assert score <= 5.0, overall[0]


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams up to and including the first that starts with `wanted` (watchdog pings
    left out)."""
    seen = []
    while True:
        msg = sock.recv(4096).decode()
        if msg != "WATCHDOG=1":
            seen.append(msg)
        if msg.startswith(wanted):
            return seen


@contextlib.contextmanager
def notified_daemon(
    root: Path, tasks: str, scripts: dict[str, str], env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket, Path]]:
    """The daemon on `tasks` (YAML lines) with a notify socket of ours: (daemon, socket,
    config). Killed at the end if it is still running."""
    (root / "tasks").mkdir()
    for name, text in scripts.items():
        (root / "tasks" / name).write_text(text)
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n" + tasks)
    address = str(root / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(15)
        daemon = subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "daemon"],
            stderr=subprocess.DEVNULL,
            env=os.environ | {"NOTIFY_SOCKET": address} | (env or {}),
        )
        try:
            yield daemon, sock, config
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def test_reload_says_reloading_then_ready_and_waits_for_the_verdict(tmp_path: Path) -> None:
    tasks = "  - {id: t, script: t.sh, cron: '0 0 1 1 *'}\n"
    with notified_daemon(tmp_path, tasks, {"t.sh": "true\n"}) as (_, sock, config):
        receive_until(sock, "READY=1")
        config.write_text(config.read_text() + "  - {id: u, script: t.sh, every: 1h}\n")
        done = cli("reload", config=config)
        assert done.returncode == 0 and "added u" in done.stdout, done.stderr
        seen = receive_until(sock, "READY=1")
        assert seen[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert "STATUS=running 2 task(s)" in seen[-1]
        config.write_text("tasks: [{id: BAD}]\n")
        rejected = cli("--json", "reload", config=config)
        assert rejected.returncode == 2
        verdict = json.loads(rejected.stdout)
        assert verdict["reloaded"] is False and verdict["kind"] == "config"
        assert "tasks[0].id" in verdict["error"]
        seen = receive_until(sock, "READY=1")  # still ready, on the old configuration
        assert seen[0].startswith("RELOADING=1") and "2 task(s)" in seen[-1]
        logs = json.loads(cli("--json", "logs", config=config).stdout)
        actions = [(e["action"], e["actor"]) for e in logs]
        me = f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
        assert ("reload_rejected", me) in actions and ("reloaded", me) in actions


def test_stopping_extends_the_timeout_by_a_running_tasks_grace(tmp_path: Path) -> None:
    # Ignores SIGTERM for a while, so the daemon must wait out its grace.
    slow = {"slow.sh": "trap '' TERM\nsleep 1.5\n"}
    tasks = "  - {id: slow, script: slow.sh, every: 1h, grace: 45s}\n"
    with notified_daemon(tmp_path, tasks, slow) as (daemon, sock, _):
        receive_until(sock, "READY=1")
        db = tmp_path / "state" / "moltsched.db"
        wait_sync(lambda: query(db, "SELECT COUNT(*) FROM run")[0][0] == 1, 15, "the run")
        daemon.send_signal(signal.SIGTERM)
        seen = receive_until(sock, "EXTEND_TIMEOUT_USEC=")
        assert "STOPPING=1" in seen
        assert int(seen[-1].split("=")[1]) >= 45_000_000
        assert daemon.wait(15) == 0


def test_ready_watchdog_and_stopping_on_a_real_notify_socket(tmp_path: Path) -> None:
    tasks = "  - {id: t, script: t.sh, cron: '0 0 1 1 *'}\n"
    every_100ms = {"WATCHDOG_USEC": "200000"}
    with notified_daemon(tmp_path, tasks, {"t.sh": "true\n"}, every_100ms) as (daemon, sock, _):
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\n") and "STATUS=running 1 task(s)" in ready
        pings = [sock.recv(4096).decode() for _ in range(3)]  # every 0.1 s
        assert pings == ["WATCHDOG=1"] * 3
        daemon.send_signal(signal.SIGTERM)
        rest = []
        while (msg := sock.recv(4096).decode()) != "STOPPING=1":
            rest.append(msg)
        assert set(rest) <= {"WATCHDOG=1"}
        assert daemon.wait(15) == 0


def test_no_notify_socket_no_watchdog() -> None:
    from bot.systemd import notify, watchdog_interval

    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        assert notify("READY=1") is False and watchdog_interval() is None
        os.environ.update(WATCHDOG_USEC="5000000", WATCHDOG_PID="1")  # meant for another pid
        assert watchdog_interval() is None
        os.environ["WATCHDOG_PID"] = str(os.getpid())
        assert watchdog_interval() == 5.0
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_notify_socket_no_one_reads_does_not_stop_the_daemon(tmp_path: Path) -> None:
    """A supervisor that set NOTIFY_SOCKET and stopped reading it: once its queue was full,
    the next watchdog ping blocked the daemon, runs and answers with it, for good."""
    tasks = "  - {id: t, script: t.sh, every: 1s}\n"
    every_10ms = {"WATCHDOG_USEC": "20000"}
    with notified_daemon(tmp_path, tasks, {"t.sh": "true\n"}, every_10ms) as (daemon, sock, cfg):
        assert sock.recv(4096).decode().startswith("READY=1")  # and no more reading
        db = tmp_path / "state" / "moltsched.db"
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 3, 30, "three runs")
        status = cli("--json", "status", config=cfg, timeout=30)
        assert json.loads(status.stdout)["running"] is True
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
