"""Prometheus metrics from the real daemon, scraped over HTTP."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from support.daemon import DaemonProcess
from tests.helpers import cli, query, wait_sync


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return str(resp.read().decode())


def test_runs_durations_queue_and_signal(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "ok.sh").write_text("true\n")
    (tmp_path / "tasks" / "bad.sh").write_text("exit 3\n")
    port = free_port()
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        f"metrics: {{port: {port}}}\n"
        "tasks:\n"
        "  - {id: ok, script: ok.sh, cron: '0 0 1 1 *'}\n"
        "  - {id: bad, script: bad.sh, cron: '0 0 1 1 *'}\n"
    )
    daemon = DaemonProcess(config).start()
    try:
        before = scrape(port)
        assert "moltsched_queue_length 0.0" in before
        assert "moltsched_signal_connected 0.0" in before  # not configured
        cli("run", "ok", config=config)
        cli("run", "ok", config=config)
        cli("run", "bad", config=config)
        text = scrape(port)
        assert 'moltsched_runs_total{outcome="success",task="ok"} 2.0' in text
        assert 'moltsched_runs_total{outcome="failed",task="bad"} 1.0' in text
        assert 'moltsched_run_duration_seconds_count{task="ok"} 2.0' in text
        assert "moltsched_alerts_waiting 0.0" in text and "moltsched_runs_running 0.0" in text
        with pytest.raises(urllib.error.HTTPError) as info:
            scrape(port, "/")
        assert info.value.code == 404
        info.value.close()
    finally:
        assert daemon.stop() == 0


def test_metrics_only_on_loopback(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("metrics: {host: 0.0.0.0, port: 9464}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == [
        "metrics.host: '0.0.0.0': metrics are served on a loopback address only"
    ]


def test_scrapes_held_open_trickled_or_oversized_starve_nothing(tmp_path: Path) -> None:
    """Any local process can reach the metrics port. Connections by the hundred that send
    their head a line a second, and a request line too long to read: the daemon, with few
    file descriptors to spare, still starts its runs and answers a real scrape, and nothing
    lands in its log as a traceback."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo hi\n")
    port = free_port()
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        f"metrics: {{port: {port}}}\ntasks:\n  - {{id: tick, script: a.sh, every: 1s}}\n"
    )
    daemon = DaemonProcess(config).start()
    pid = daemon.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 64, hard))
    held: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:  # one header line a second on every connection, for ever
        while not stop.wait(1):
            for s in held:
                with contextlib.suppress(OSError):
                    s.sendall(b"X-Slow: 1\r\n")

    trickler = threading.Thread(target=trickle)
    try:
        for _ in range(150):  # more than the daemon has descriptors for
            with contextlib.suppress(OSError):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
                held.append(s)
        long = socket.create_connection(("127.0.0.1", port), timeout=5)
        with long, contextlib.suppress(OSError):
            long.sendall(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n")
        trickler.start()
        db = tmp_path / "state" / "moltsched.db"
        succeeded = "SELECT COUNT(*) FROM run WHERE task_id = 'tick' AND outcome = 'success'"
        before = query(db, succeeded)[0][0]
        wait_sync(lambda: query(db, succeeded)[0][0] >= before + 3, 30, "runs to go on")
        assert "moltsched_runs_total" in scrape(port)
        for s in held:
            s.close()
        held.clear()
        # Alone, a head trickled a line a second is still cut off once its time is up.
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        with slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(slow)
            assert slow.recv(1) == b""  # closed by the daemon, nothing answered
    finally:
        stop.set()
        if trickler.is_alive():
            trickler.join()
        for s in held:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log.read_text()


def test_a_taken_port_does_not_stop_the_schedule(tmp_path: Path) -> None:
    """Another program on the metrics port at boot: before, the daemon refused to start (exit
    2, which systemd does not restart), and no task ran. Now the tasks run, the journal says
    why there are no metrics, and they are served once the port is free."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("true\n")
    config = tmp_path / "moltsched.yaml"
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = int(holder.getsockname()[1])
    config.write_text(
        f"metrics: {{port: {port}}}\ntasks:\n  - {{id: tick, script: tick.sh, every: 1s}}\n"
    )
    db = tmp_path / "state" / "moltsched.db"
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] >= 2, 20, "ticks")
        log = daemon.log.read_text()
        assert f"cannot serve metrics on 127.0.0.1:{port}" in log and "trying again" in log
        holder.close()
        wait_sync(lambda: "moltsched_runs_total" in _scraped(port), 30, "metrics served")
    finally:
        holder.close()
        assert daemon.stop() == 0
    assert daemon.log.read_text().count("cannot serve metrics") == 1  # said once


def _scraped(port: int) -> str:
    try:
        return scrape(port)
    except OSError:
        return ""
