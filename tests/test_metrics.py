"""Prometheus metrics from the real daemon, scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from support.daemon import DaemonProcess
from tests.helpers import cli


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
