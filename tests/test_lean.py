"""What a process loads: OpenSSL (libssl, libcrypto) is about 4.5 MB of an idle daemon's RSS
and 7 ms of each start, and only the Signal front end may speak TLS (bot.lean). Whether it
still can is shown by tests/test_signal_e2e.py, whose services are written without a scheme:
signalbot tries HTTPS first there, and without TLS in asyncio it never connects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.daemon import DaemonProcess
from tests.helpers import cli, ticking, wait_sync


def _openssl(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted(
        {
            line.rsplit("/", 1)[-1]
            for line in maps.splitlines()
            if "/libssl" in line or "/libcrypto" in line
        }
    )


def test_a_daemon_without_signal_loads_no_openssl(tmp_path: Path) -> None:
    config, db = ticking(tmp_path)
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(
            lambda: (
                db.exists()
                and '"outcome": "success"' in cli("--json", "status", "tick", config=config).stdout
            ),
            what="a run of tick",
        )
        assert _openssl(daemon.pid) == []
    finally:
        assert daemon.stop() == 0


def test_commands_that_answer_without_a_daemon_load_no_openssl(tmp_path: Path) -> None:
    config, _ = ticking(tmp_path)
    code = (
        "import sys; from bot.cli import main; code = main(sys.argv[1:]); "
        "print(sorted(m for m in ('_ssl', '_hashlib') if m in sys.modules), file=sys.stderr); "
        "sys.exit(code)"
    )
    for args in (
        ["run", "tick"],
        ["--json", "status"],
        ["logs"],
        ["checkpoint", "save", "tick", "{}"],
        ["chat", "status:tick"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr.splitlines()[-1] == "[]", (args, done.stderr)
    status = json.loads(cli("--json", "status", "tick", config=config).stdout)
    assert status["run_count"] == 1 and status["checkpoint"] == {}
