"""The database cannot be written (the disk of the state directory is full), on the real
daemon: runs cannot start, and the owner hears so on the phone, or through the fallback
command with no Signal, once; `status` says so; and once space is back, the phone hears
that too, with how many runs could not start meanwhile, and the schedule goes on. The same
for a daemon started on a disk that filled while it was down."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from support.signal_service import ACCOUNT, ALICE, SignalService
from tests.helpers import acli, fill, query, small_disk, spawn_daemon, wait_for


@contextlib.asynccontextmanager
async def daemon(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    log = open(config.parent / "daemon.log", "wb")  # noqa: SIM115, ASYNC230
    proc = await spawn_daemon(config, log)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        log.close()


def ticks(db: Path) -> int:
    rows = query(db, "SELECT run_count FROM task WHERE id = 'tick'")
    return int(rows[0][0]) if rows else 0  # no row yet: the daemon is still starting


async def status(config: Path) -> dict[str, object]:
    done = await acli("--json", "status", config=config)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def write_tasks(root: Path, more: str) -> Path:
    (root / "tasks").mkdir()
    (root / "tasks" / "tick.sh").write_text("echo tick\n")
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1s}\n" + more)
    return config


def signal_section(service: SignalService) -> str:
    return f'signal:\n  service: {service.service}\n  account: "{ACCOUNT}"\n  admins: ["{ALICE}"]\n'


async def test_the_phone_hears_when_the_database_cannot_be_written(tmp_path: Path) -> None:
    async with SignalService() as service:
        config = write_tasks(tmp_path, signal_section(service))
        db = tmp_path / "state" / "moltsched.db"
        with small_disk(tmp_path / "state") as filler:
            async with daemon(config):
                await service.wait_connected(20)
                await wait_for(lambda: ticks(db) >= 2, 20)
                assert (await status(config))["database_error"] is None

                fill(filler)
                (alarm,) = await service.wait_sent(1, 30)
                assert alarm["recipients"] == [ALICE]
                text = str(alarm["message"])
                assert "cannot write its database" in text and "disk is full" in text, text
                answer = await status(config)
                assert "disk is full" in str(answer["database_error"])
                shown = await acli("status", config=config)
                assert "database cannot be written" in shown.stdout, shown.stdout

                filler.unlink()  # space again
                sent = await service.wait_sent(2, 30)
                again = str(sent[1]["message"])
                assert "can write its database again" in again, again
                assert "could not start" in again, again
                assert (await status(config))["database_error"] is None
                before = ticks(db)
                await wait_for(lambda: ticks(db) >= before + 2, 20)
                # One message each way, however many writes failed meanwhile; and in the
                # journal one line, not one per refused write.
                assert len(service.sent) == 2, service.sent
        log = (tmp_path / "daemon.log").read_text()
        assert log.count("cannot be written") == 1, log
        assert not any(f"could not {w}" in log for w in ("record", "save", "write", "log")), log


async def test_with_no_signal_the_fallback_command_hears_it(tmp_path: Path) -> None:
    heard = tmp_path / "heard"
    heard.mkdir()
    hook = tmp_path / "hook.sh"
    # Whole or not at all: the test reads the folder while the hook writes.
    hook.write_text(
        f'f="{heard}/$(date +%s%N)-$MOLTSCHED_ALERT_KIND"; cat > "$f.part" && mv "$f.part" "$f"\n'
    )
    config = write_tasks(tmp_path, f'alerts:\n  fallback_command: [bash, "{hook}"]\n')
    db = tmp_path / "state" / "moltsched.db"

    def messages() -> list[str]:
        return [p.read_text() for p in sorted(heard.iterdir()) if p.suffix != ".part"]

    with small_disk(tmp_path / "state") as filler:
        async with daemon(config):
            await wait_for(lambda: ticks(db) >= 2, 20)
            fill(filler)
            await wait_for(lambda: len(messages()) >= 1, 30)
            assert "cannot write its database" in messages()[0], messages()
            assert [p.name.split("-", 1)[1] for p in heard.iterdir()] == ["database"]
            filler.unlink()
            await wait_for(lambda: len(messages()) >= 2, 30)
            assert "can write its database again" in messages()[1], messages()


async def test_a_daemon_started_on_a_full_disk_waits_and_says_so(tmp_path: Path) -> None:
    """A daemon killed (the OOM killer, say) and started again on a disk that filled
    meanwhile, with a task changed in the file: it runs and answers, the phone hears why
    nothing runs, and the schedule goes on once a write works (the daemon tries one every
    10 s). Whether SQLite refuses the start's own writes or only the first run's depends on
    the room it kept; `test_write_alarm` has the first case alone."""
    async with SignalService() as service:
        config = write_tasks(tmp_path, signal_section(service))
        db = tmp_path / "state" / "moltsched.db"
        with small_disk(tmp_path / "state") as filler:
            with open(tmp_path / "first.log", "wb") as log:  # noqa: ASYNC230
                first = await spawn_daemon(config, log)
                await wait_for(lambda: ticks(db) >= 1, 20)
                first.kill()  # its -wal and -shm files stay: the next start can open the file
                await first.wait()
            config.write_text(config.read_text().replace("every: 1s", "every: 2s"))
            fill(filler)
            async with daemon(config):
                (alarm,) = await service.wait_sent(1, 30)
                assert "cannot write its database" in str(alarm["message"])
                answer = await status(config)
                assert answer["running"] is True and "disk is full" in str(answer["database_error"])
                count = ticks(db)
                filler.unlink()
                sent = await service.wait_sent(2, 30)
                assert "can write its database again" in str(sent[1]["message"])
                await wait_for(lambda: ticks(db) >= count + 1, 20)
                assert (await status(config))["database_error"] is None
