"""The control socket cannot be starved, on the real daemon: readers that stop reading, idle
connections by the hundred, oversized and malformed requests, and a daemon out of file
descriptors. Each gets a timeout, a cap or an error answer; other callers keep getting
answers; runs keep starting; nothing lands in the log as a traceback."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.daemon import DaemonProcess, proc_status
from tests.helpers import cli, query, wait_sync

TASKS = 3000  # a `status --json` answer far bigger than a socket's buffers


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo hi\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n  - {id: tick, script: a.sh, every: 1s}\n"
        + "".join(
            f"  - {{id: task-with-a-long-name-{i}, script: a.sh, cron: '0 0 1 1 *'}}\n"
            for i in range(TASKS)
        )
    )
    d = DaemonProcess(config).start()
    yield d
    assert d.stop() == 0
    log = d.log.read_text()
    assert "Traceback" not in log


def sock_path(d: DaemonProcess) -> str:
    return str(d.config.parent / "state" / "control.sock")


def connect(d: DaemonProcess) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path(d))
    return s


def ask(d: DaemonProcess, raw: bytes) -> dict[str, object]:
    with connect(d) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\n", 1)[0])


def ticks(d: DaemonProcess) -> int:
    db = d.config.parent / "state" / "moltsched.db"
    return query(db, "SELECT run_count FROM task WHERE id = 'tick'")[0][0]


def status_ok(d: DaemonProcess) -> None:
    result = cli("--json", "status", config=d.config, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["task_count"] == TASKS + 1


def test_readers_that_stop_reading_do_not_hold_up_the_others(daemon: DaemonProcess) -> None:
    request = json.dumps({"command": {"verb": "status", "task": None}, "json": True}) + "\n"
    stalled = []
    for _ in range(4):  # more than there are listing slots
        s = connect(daemon)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(request.encode())
        stalled.append(s)  # and never read
    try:
        started = time.monotonic()
        for _ in range(3):
            status_ok(daemon)
        assert time.monotonic() - started < 20
    finally:
        for s in stalled:
            s.close()


def test_callers_still_connected_at_shutdown_are_let_go_quietly(daemon: DaemonProcess) -> None:
    """Connected when the daemon stops: some have not sent their request, one is in the middle
    of an answer it does not read. They are closed, the daemon exits 0, and nothing lands in
    the log as a traceback (the fixture reads it)."""
    request = json.dumps({"command": {"verb": "status", "task": None}, "json": True}) + "\n"
    callers = [connect(daemon) for _ in range(5)]
    stalled = connect(daemon)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(request.encode())
    callers.append(stalled)
    try:
        status_ok(daemon)  # answered after the ones before it were taken in
        assert daemon.stop() == 0
        for s in callers[:-1]:
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""  # closed by the daemon
    finally:
        for s in callers:
            s.close()


def test_a_stop_while_out_of_file_descriptors_is_quiet(daemon: DaemonProcess) -> None:
    """Stopped while it cannot accept, with an answer under way that it waits for: asyncio's
    retries to accept on the socket closed meanwhile are not logged as tracebacks (the
    fixture reads the log)."""
    stalled = connect(daemon)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = json.dumps({"command": {"verb": "status", "task": None}, "json": True}) + "\n"
    stalled.sendall(request.encode())
    _, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    in_use = len(list(Path(f"/proc/{daemon.pid}/fd").iterdir()))
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (in_use + 3, hard))
    held = [stalled]
    try:
        for _ in range(40):
            with contextlib.suppress(OSError):
                held.append(connect(daemon))
        wait_sync(lambda: "cannot accept connections" in daemon.log.read_text(), 20, "the report")
        assert daemon.stop() == 0
    finally:
        for s in held:
            s.close()


def test_a_log_of_any_length_is_answered_a_batch_at_a_time(daemon: DaemonProcess) -> None:
    """`logs -n N` over a long action log, as JSON and as text: the whole log, newest first,
    made and sent a batch at a time, so the daemon's memory does not grow with it (it took
    1.5 kB a row: a Raspberry Pi's gigabyte at 600,000 rows)."""
    rows = 100_000
    with contextlib.closing(sqlite3.connect(daemon.db, timeout=30)) as db, db:
        db.executemany(
            "INSERT INTO log (time, task_id, action, message) VALUES (?, 'tick', 'note', ?)",
            ((time.time(), f"note {i} " + "x" * 100) for i in range(rows)),
        )
    peak = proc_status(daemon.pid, "VmHWM")
    result = cli("--json", "logs", "-n", "1000000", config=daemon.config, timeout=120)
    assert result.returncode == 0, result.stderr
    notes = [e["message"].split()[1] for e in json.loads(result.stdout) if e["action"] == "note"]
    assert notes == [str(i) for i in reversed(range(rows))]
    result = cli("logs", "tick", "-n", "1000000", config=daemon.config, timeout=120)
    lines = [line for line in result.stdout.splitlines() if " note " in line]
    assert len(lines) == rows and "note 99999 " in lines[0] and "note 0 " in lines[-1]
    assert (proc_status(daemon.pid, "VmHWM") - peak) / 1024 < 40  # MB; the answers are 20


def test_hundreds_of_idle_connections_leave_runs_and_answers_alone(daemon: DaemonProcess) -> None:
    before = ticks(daemon)
    idle = []
    try:
        for _ in range(600):
            idle.append(connect(daemon))
        status_ok(daemon)  # past the cap, answered once the idle ones time out
        wait_sync(lambda: ticks(daemon) >= before + 3, 20, "ticks meanwhile")
    finally:
        for s in idle:
            s.close()
    status_ok(daemon)


def test_oversized_and_malformed_requests_get_an_error_answer(daemon: DaemonProcess) -> None:
    huge = ask(daemon, b"{" + b" " * (2 << 20) + b"}\n")
    assert huge["exit"] == 2 and huge["kind"] == "bad-request"
    for raw in [
        b"not json\n",
        b"[1, 2]\n",
        b'{"chat": 5}\n',
        b'{"command": {"verb": "chat", "text": 5}}\n',
        b'{"command": {"verb": "logs", "limit": "all"}}\n',
        b'{"command": "status"}\n',
        b'{"command": {"verb": 7}}\n',
        b'{"json": "yes", "command": {"verb": "status"}}\n',
        b"\xff\xfe\n",
        b"\n",
    ]:
        answer = ask(daemon, raw)
        assert answer["exit"] == 2, (raw, answer)
    status_ok(daemon)


def test_out_of_file_descriptors_is_logged_once_and_survived(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 10, hard))
    held = []
    try:
        for _ in range(40):  # many more than the daemon can take
            with contextlib.suppress(OSError):
                held.append(connect(daemon))
        wait_sync(lambda: "cannot accept connections" in daemon.log.read_text(), 20, "the report")
        # Two more runs come due meanwhile (they fail to start: no descriptors for their
        # pipes), and asyncio retries the accept every second.
        during = ticks(daemon)
        wait_sync(lambda: ticks(daemon) >= during + 2, 20, "time to pass")
    finally:
        for s in held:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    before = ticks(daemon)
    status_ok(daemon)
    wait_sync(lambda: ticks(daemon) >= before + 2, 20, "ticks again")
    log = daemon.log.read_text()
    assert log.count("cannot accept connections") == 1
