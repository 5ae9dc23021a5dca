"""Load, at a size `make test` can afford: parallel status calls during a burst of runs, and
a burst of chat commands. Everything is answered; nothing reports "database is locked"."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tests.fakes.signal_service import ACCOUNT, ALICE, SignalService, text_frame
from tests.helpers import MOLTSCHED, acli, query, wait_for
from tests.test_e2e import Daemon

TASKS = 300
CALLERS = 50


async def status(config: Path) -> dict[str, object]:
    result = await acli("--json", "status", config=config)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


async def test_parallel_status_during_a_burst_of_runs(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "noop.sh").write_text("sleep 0.05\n")  # the burst lasts seconds
    tasks = "\n".join(f"  - {{id: t{i}, script: noop.sh, every: 1h}}" for i in range(TASKS))
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"max_concurrent: 4\ntasks:\n{tasks}\n")
    daemon = Daemon(config).start()  # all 300 are new, so all due at once: a burst
    db = tmp_path / "state" / "moltsched.db"
    try:
        answers = await asyncio.gather(*(status(config) for _ in range(CALLERS)))
        assert all(a["running"] is True and a["task_count"] == TASKS for a in answers)
        busy = {"queued", "running"}
        assert any(t["status"] in busy for a in answers for t in a["tasks"])  # type: ignore[attr-defined]
        await wait_for(
            lambda: query(db, "SELECT COUNT(*) FROM run WHERE outcome = 'success'") == [(TASKS,)],
            120,
        )
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "database is locked" not in log and "Traceback" not in log


async def test_a_burst_of_chat_commands(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("true\n")
    async with SignalService() as service:
        config = tmp_path / "moltsched.yaml"
        config.write_text(
            "tasks:\n  - {id: t, script: t.sh, every: 1h}\n"
            f'signal: {{service: "{service.service}", account: "{ACCOUNT}", '
            f'admins: ["{ALICE}"]}}\n'
        )
        daemon = await asyncio.create_subprocess_exec(
            MOLTSCHED,
            "--config",
            str(config),
            "daemon",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=os.environ,
        )
        try:
            await service.wait_connected(20)
            for n in range(200):
                await service.push(text_frame("status" if n % 2 else "logs"))
            sent = await service.wait_sent(200, timeout=60)
            assert len(sent) == 200
            assert sum(m["message"].startswith("1 task(s)") for m in sent) == 100
        finally:
            daemon.terminate()
            assert await asyncio.wait_for(daemon.wait(), 20) == 0
