"""deploy/moltsched.service, and the notify protocol against a real datagram socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import MOLTSCHED, REPO

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
    assert d["ExecStartPre"].endswith("moltsched validate")
    assert d["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert d["Restart"] == "on-failure" and d["KillMode"] == "mixed"
    assert int(d["TimeoutStopSec"]) > 10 + 5  # the default task grace, and time to record
    assert d["StateDirectory"] == d["ConfigurationDirectory"] == "moltsched"
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


def test_ready_watchdog_and_stopping_on_a_real_notify_socket(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: t, script: t.sh, cron: '0 0 1 1 *'}\n")
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(15)
        daemon = subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "daemon"],
            stderr=subprocess.DEVNULL,
            env=os.environ | {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"},
        )
        try:
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
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


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
