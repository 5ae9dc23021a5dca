"""`moltsched doctor` (issue 12, point 6) against real files, a real daemon and the Signal
emulator: each check says what it found and how to fix it; exit 1 when any fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

from support.daemon import DaemonProcess
from support.signal_service import ACCOUNT, ALICE, GROUP_ID, SignalService
from tests.helpers import acli, wait_for


def checks(stdout: str) -> dict[str, dict[str, str]]:
    found = json.loads(stdout)["checks"]
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in found)
    assert all(c["status"] in ("ok", "warn", "fail") for c in found)
    return {c["name"]: c for c in found}


def write_config(root: Path, signal: str = "") -> Path:
    (root / "tasks").mkdir(exist_ok=True)
    (root / "tasks" / "t.sh").write_text("true\n")
    config = root / "moltsched.yaml"
    config.write_text(f"tasks:\n  - {{id: t, script: t.sh, every: 1h}}\n{signal}")
    return config


def failing_with_signal(root: Path, service: SignalService, more: str = "") -> Path:
    """`write_config` with Signal on `service` (ALICE the admin, `more` in the section) and
    its task failing."""
    config = write_config(
        root,
        f'signal:\n  service: {service.service}\n  account: "{ACCOUNT}"\n'
        f'  admins: ["{ALICE}"]\n{more}',
    )
    (root / "tasks" / "t.sh").write_text("exit 3\n")
    return config


async def test_a_fresh_install_with_no_daemon(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = await acli("--json", "doctor", config=config)
    assert done.returncode == 1
    found = checks(done.stdout)
    assert found["config"]["status"] == "ok" and str(config) in found["config"]["detail"]
    assert found["state_dir"]["status"] == "warn"  # made at the first start
    assert found["database"]["status"] == "warn"
    assert found["daemon"]["status"] == "fail" and "systemctl start" in found["daemon"]["fix"]
    text = await acli("doctor", config=config)
    assert text.returncode == 1 and "FAIL daemon: not running" in text.stdout
    assert "fix: systemctl start moltsched" in text.stdout


async def test_everything_in_order_then_signal_in_the_wrong_mode(tmp_path: Path) -> None:
    async with SignalService() as service:
        config = write_config(
            tmp_path,
            f'signal:\n  service: {service.service}\n  account: "{ACCOUNT}"\n'
            '  admins: ["+4917600000000"]\n',
        )
        daemon = DaemonProcess(config)
        await asyncio.to_thread(daemon.start)
        try:
            done = await acli("--json", "doctor", config=config)
            found = checks(done.stdout)
            assert done.returncode == 0, found
            for name in ("config", "state_dir", "database", "daemon", "signal", "alerts"):
                assert found[name]["status"] == "ok", found[name]
            assert "0.101" in found["signal"]["detail"]
            assert found["signal account"]["status"] == "ok"
            service.mode = "normal"
            done = await acli("--json", "doctor", config=config)
            assert done.returncode == 1
            wrong = checks(done.stdout)["signal"]
            assert wrong["status"] == "fail" and "MODE=json-rpc" in wrong["fix"]
            service.mode, service.account = "json-rpc", "+4915100000001"
            unregistered = checks((await acli("--json", "doctor", config=config)).stdout)
            assert unregistered["signal account"]["status"] == "fail"
        finally:
            await asyncio.to_thread(daemon.stop)


async def test_an_alert_the_service_refuses_says_why(tmp_path: Path) -> None:
    """signal-cli-rest-api says why it refused a send in its answer (`{"error": ...}`), which
    signalbot never reads: the log said only "400, message='Bad Request'", and doctor that
    alerts were waiting. Now the service's words are in the log, in the outbox, and in
    doctor's alerts check; for a recipient whose key changed, with what to do."""
    untrusted = "Unable to complete request due to untrusted recipient keys"
    async with SignalService() as service:
        config = failing_with_signal(tmp_path, service)
        service.send_status, service.send_error = 400, untrusted
        daemon = DaemonProcess(config)
        await asyncio.to_thread(daemon.start)
        try:
            await service.wait_connected()
            assert (await acli("run", "t", config=config)).returncode == 1
            with contextlib.closing(sqlite3.connect(daemon.db)) as db:
                query = "SELECT last_error FROM outbox WHERE last_error IS NOT NULL"
                await wait_for(lambda: db.execute(query).fetchone() is not None)
                ((stored,),) = db.execute(query).fetchall()
            assert untrusted in stored and "HTTP 400" in stored, stored
            alerts = checks((await acli("--json", "doctor", config=config)).stdout)["alerts"]
            assert untrusted in alerts["detail"], alerts
            assert "trust" in alerts["fix"] and ALICE in alerts["fix"], alerts
        finally:
            await asyncio.to_thread(daemon.stop)
        logged = daemon.log.read_text()
        assert f"alert to {ALICE} not delivered (attempt 1): " in logged
        assert untrusted in logged and "Bad Request" not in logged


async def test_an_alert_some_group_members_missed_is_in_doctor(tmp_path: Path) -> None:
    """A group alert signal-cli took but some members missed (a 201 with `errors`) counts as
    delivered, so no alert waits and doctor said all was well; the member whose safety number
    changed went on missing every alert. doctor now says who missed the last one, and how
    to trust the new number."""
    bob = "+33612345678"
    async with SignalService() as service:
        config = failing_with_signal(tmp_path, service, f'  alert_to: ["{GROUP_ID}"]\n')
        service.undelivered = [{"number": bob, "reason": "IDENTITY_FAILURE"}]
        daemon = DaemonProcess(config)
        await asyncio.to_thread(daemon.start)
        try:
            await service.wait_connected()
            assert (await acli("run", "t", config=config)).returncode == 1
            await wait_for(lambda: any(m["recipients"] == [GROUP_ID] for m in service.sent))
            with contextlib.closing(sqlite3.connect(daemon.db)) as db:
                query = "SELECT message FROM log WHERE action = 'not_delivered'"
                await wait_for(lambda: db.execute(query).fetchone() is not None)
            alerts = checks((await acli("--json", "doctor", config=config)).stdout)["alerts"]
            assert alerts["status"] == "warn", alerts
            assert f"not to {bob} (IDENTITY_FAILURE)" in alerts["detail"], alerts
            assert f"/v1/identities/{ACCOUNT}/trust/{bob}" in alerts["fix"], alerts
        finally:
            await asyncio.to_thread(daemon.stop)


async def test_a_damaged_database_and_an_invalid_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "moltsched.db").write_bytes(b"SQLite format 3\0" + b"\xff" * 8000)
    found = checks((await acli("--json", "doctor", config=config)).stdout)
    assert found["database"]["status"] == "fail" and found["database"]["fix"]
    config.write_text("tasks: [{id: X}]\n")
    done = await acli("--json", "doctor", config=config)
    assert done.returncode == 1
    bad = checks(done.stdout)["config"]
    assert bad["status"] == "fail" and "tasks[0].id" in bad["detail"] and "validate" in bad["fix"]


async def test_alerts_that_would_reach_no_one_are_said(tmp_path: Path) -> None:
    """No `signal:` section and no `alerts.fallback_command`: a failing task alerted no one,
    and neither doctor nor the daemon said so (the daemon's one line said only that it ran
    without Signal). With a fallback command, or with no task that alerts, nothing is said."""
    config = write_config(tmp_path)
    daemon = DaemonProcess(config)
    await asyncio.to_thread(daemon.start)  # ready: its start-up lines are written
    await asyncio.to_thread(daemon.stop)
    assert "WARNING bot.daemon: no signal: section and no alerts.fallback_command" in (
        daemon.log.read_text()
    )
    found = checks((await acli("--json", "doctor", config=config)).stdout)
    assert found["alerts"]["status"] == "warn", found
    assert "fails alerts no one" in found["alerts"]["detail"]
    assert "fallback_command" in found["alerts"]["fix"]
    for heard in ("alerts: {fallback_command: [logger]}\n", ""):
        config.write_text(
            "tasks:\n  - {id: t, script: t.sh, every: 1h"
            + ("" if heard else ", alert: false")
            + "}\n"
            + heard
        )
        found = checks((await acli("--json", "doctor", config=config)).stdout)
        assert "alerts" not in found, (heard, found)
