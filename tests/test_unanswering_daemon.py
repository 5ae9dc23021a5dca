"""A daemon that holds its control socket but does not answer never hangs a command.

Stopped (Ctrl-Z in the terminal it runs in, SIGSTOP): every command said nothing and waited
for ever, `doctor` too, and a second `moltsched daemon` hung in its start. Now they say so at
once, with the pid and `kill -CONT`, and send nothing the daemon would carry out when it goes
on. A daemon whose loop is stuck is found by a ping on a second connection; one that is only
busy (a long `run`) answers the ping and is waited for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import client
from support.daemon import DaemonProcess
from tests.helpers import cli, query, wait_sync


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stopped_daemon_is_named_at_once_and_asked_nothing(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, cron: '0 0 1 1 *'}\n")
    daemon = DaemonProcess(config).start()
    try:
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            wait_sync(lambda: state(daemon.pid) == "T", 10, "the daemon to stop")
            stopped_daemon_is_named(config, daemon.pid)
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        assert cli("--json", "status", config=config).returncode == 0
        # What it was asked while stopped never reached it: nothing ran, nothing paused.
        db = tmp_path / "state" / "moltsched.db"
        assert query(db, "SELECT COUNT(*) FROM run") == [(0,)]
        assert query(db, "SELECT paused FROM task") == [(0,)]
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def stopped_daemon_is_named(config: Path, pid: int) -> None:
    hint = f"`kill -CONT {pid}`"
    for args in (["status"], ["run", "tick"], ["pause", "tick"], ["logs"]):
        done = cli(*args, config=config, timeout=30)
        assert done.returncode == 3 and hint in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    done = cli("--json", "status", config=config, timeout=30)
    error = json.loads(done.stdout)
    assert done.returncode == 3 and error["kind"] == "unavailable"
    assert "is stopped" in error["error"]
    doctor = cli("doctor", config=config, timeout=30)
    assert doctor.returncode == 1 and hint in doctor.stdout, doctor.stdout
    second = cli("daemon", config=config, timeout=30)
    assert second.returncode == 2 and "already running" in second.stderr
    assert hint in second.stderr and "Traceback" not in second.stderr


class Server:
    """A control socket that answers pings (`pings`) and, after `delay` (None: never), the
    one other request with its own answer; a real socket served by a thread."""

    def __init__(self, state_dir: Path, *, pings: bool, delay: float | None) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(state_dir / client.SOCKET_NAME))
        self.listener.listen(16)
        self.pings, self.delay = pings, delay
        self.held: list[socket.socket] = []
        self.pinged = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.held.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        asked = json.loads(conn.makefile("rb").readline())
        if asked["command"]["verb"] == "ping":
            self.pinged += 1
            if self.pings:
                conn.sendall(b'{"exit": 0, "err": "", "pid": 1, "sealed": true}\n' + client.END)
                conn.close()
            return
        if self.delay is not None:
            time.sleep(self.delay)
            conn.sendall(b'{"exit": 0, "err": "", "sealed": true}\ndone\n' + client.END)
            conn.close()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The client's patience, in tenths of a second instead of tens of seconds."""
    monkeypatch.setattr(client, "LOOK_S", 0.05)
    monkeypatch.setattr(client, "PING_AFTER_S", 0.3)
    monkeypatch.setattr(client, "HUNG_S", 0.5)
    yield


def test_a_stuck_daemon_is_found_by_a_ping(tmp_path: Path, quick: None) -> None:
    server = Server(tmp_path, pings=False, delay=None)
    try:
        with pytest.raises(client.NotAnswering, match="it is stuck"):
            client.request(tmp_path, {"command": {"verb": "status"}, "json": True})
    finally:
        server.close()
    assert server.pinged == 1


def test_a_busy_daemon_that_answers_pings_is_waited_for(tmp_path: Path, quick: None) -> None:
    server = Server(tmp_path, pings=True, delay=1.5)  # five times PING_AFTER_S
    try:
        reply = client.request(tmp_path, {"command": {"verb": "run", "task": "x"}, "json": False})
    finally:
        server.close()
    assert reply is not None and reply["out"] == "done\n" and reply["exit"] == 0
    assert server.pinged >= 1  # it was asked whether it still answers, and it did
