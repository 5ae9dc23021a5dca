"""Load at full size: 10,000 tasks configured and all due at once, and during that burst of
runs a hundred `moltsched --json status` calls in parallel and 300 chat commands pushed as fast
as the emulator can. Everything is answered, every run is done, nothing reports "database is
locked", and memory stays bounded. The scenario is bench/load.py's; `make load` gives figures.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.load import scenario
from scheduler_core.listing import LISTINGS
from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, cli

TASKS = 10_000


@pytest.mark.timeout(600)  # about 45 s here; a slow disk must not make it a timeout
async def test_ten_thousand_tasks_under_load(tmp_path: Path) -> None:
    load = await scenario(tmp_path, TASKS, callers=100, chats=300)
    busy = load.busy
    assert busy.status_failures == []
    assert len(busy.status_answers) == 100
    assert all(a["running"] is True and a["task_count"] == TASKS for a in busy.status_answers)
    # The calls really overlapped the burst: some saw tasks queued or running.
    seen = {t["status"] for a in busy.status_answers for t in a["tasks"]}  # type: ignore[attr-defined]
    assert seen & {"queued", "running"}, seen
    assert len(busy.answers) == 300
    kinds = [m.split("\n")[0].split(",")[0] for m in busy.answers]
    assert kinds.count(f"{TASKS} task(s)") == 60  # every fifth was `status`
    assert sum(m.startswith("Commands:") for m in busy.answers) == 60
    assert load.runs_ok == TASKS
    assert "database is locked" not in load.log and "Traceback" not in load.log
    assert load.rss_peak_mb < 200, f"peak RSS {load.rss_peak_mb:.0f} MB"
    assert load.fds_end <= load.fds_start + 3 * 4  # pipes and pidfds of runs in flight
    assert load.exit_code == 0 and load.integrity == "ok"


def test_status_readers_that_go_away_free_their_turn(tmp_path: Path) -> None:
    """Long answers are produced a couple at a time; a reader that hangs up mid-answer (an
    agent's pipe into `head`) must give its turn back, or every later `status` would wait."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    tasks = "\n".join(f'  - {{id: t{i}, script: t.sh, cron: "0 0 1 1 *"}}' for i in range(3000))
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"tasks:\n{tasks}\n")
    daemon = DaemonProcess(config).start()
    try:
        for _ in range(2 * LISTINGS + 1):
            head = subprocess.run(
                f"'{MOLTSCHED}' --config '{config}' --json status | head -c 100",
                shell=True,
                capture_output=True,
                timeout=30,
            )
            assert head.stdout.startswith(b'{"running": true')
        whole = cli("--json", "status", config=config, timeout=30)
        assert whole.returncode == 0 and json.loads(whole.stdout)["task_count"] == 3000
    finally:
        assert daemon.stop() == 0
