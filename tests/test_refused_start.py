"""A configuration that stops the daemon from starting is heard of on the phone.

An edit that broke the file (never reloaded, or rejected by `reload` and forgotten) is found
at the next start, a reboot a week later: the daemon refuses to start on it, as it must, and
systemd does not restart it (exit 2). Before, nothing ran from then on, and only the journal
knew. Now the daemon tells the alert recipients of the configuration it last ran with (over
Signal, or through its fallback command), once for each broken version of the file.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from support.signal_service import ACCOUNT, ALICE, SignalService
from tests.helpers import spawn_daemon, wait_for


async def start(config: Path) -> asyncio.subprocess.Process:
    with open(config.parent / "daemon.log", "ab") as log:  # noqa: ASYNC230 - before any work
        return await spawn_daemon(config, log)


async def refused(config: Path) -> None:
    """Start the daemon on a broken file: it exits 2, as before."""
    proc = await start(config)
    assert await asyncio.wait_for(proc.wait(), 60) == 2


def write(config: Path, every: str, more: str) -> None:
    config.write_text(f"tasks:\n  - {{id: tick, script: tick.sh, every: {every}}}\n" + more)


async def test_the_phone_hears_that_the_daemon_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the last good one's place
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    config = tmp_path / "moltsched.yaml"
    async with SignalService() as service:
        section = (
            f'signal:\n  service: {service.service}\n  account: "{ACCOUNT}"\n'
            f'  admins: ["{ALICE}"]\n'
        )
        write(config, "1h", section)
        proc = await start(config)
        await service.wait_connected(20)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0

        write(config, "soon", section)  # broken while the daemon was down
        await refused(config)
        (told,) = await service.wait_sent(1, 30)
        assert told["recipients"] == [ALICE] and told["number"] == ACCOUNT
        text = str(told["message"])
        assert "cannot start" in text and "tasks[0].every" in text, text
        assert "moltsched validate" in text, text

        # Each start has told whom it tells before it exits.
        await refused(config)  # started again on the same file (a restart loop): not again
        assert len(service.sent) == 1
        write(config, "never", section)
        await refused(config)  # another broken version of the file: said again
        assert len(service.sent) == 2 and "never" in str(service.sent[1]["message"])


async def test_without_signal_the_fallback_command_hears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    heard = tmp_path / "heard"
    (tmp_path / "hook.sh").write_text(
        f'cat > "{heard}"; echo "$MOLTSCHED_ALERT_KIND" >> "{heard}"\n'
    )
    hook = f"alerts:\n  fallback_command: [bash, {tmp_path / 'hook.sh'}]\n"
    config = tmp_path / "moltsched.yaml"
    write(config, "soon", hook)
    await refused(config)  # never started on a good file: no one to tell, nothing told
    assert not heard.exists()

    write(config, "1h", hook)
    proc = await start(config)
    await wait_for(lambda: (tmp_path / "state" / "control.sock").exists(), 30)
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 30) == 0

    write(config, "soon", hook)
    await refused(config)
    said = heard.read_text()
    assert "cannot start" in said and "tasks[0].every" in said and said.endswith("config\n")


async def test_a_state_the_daemon_cannot_use_is_heard_of_once_a_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database the daemon cannot open (damaged: a bad card, a cut copy) makes it exit 3,
    which systemd restarts every 5 s, for ever, each time the same. Before, only the journal
    knew. Now the alert recipients hear it at the first failed start, and again a day later
    while it goes on, not every 5 s."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    heard = tmp_path / "heard"
    heard.mkdir()
    (tmp_path / "hook.sh").write_text(f'cat > "{heard}/$(date +%s%N)-$MOLTSCHED_ALERT_KIND"\n')
    config = tmp_path / "moltsched.yaml"
    write(config, "1h", f"alerts:\n  fallback_command: [bash, {tmp_path / 'hook.sh'}]\n")
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "moltsched.db").write_bytes(b"\x13garbage, not SQLite" * 500)
    for _ in range(3):  # a restart loop
        proc = await start(config)
        assert await asyncio.wait_for(proc.wait(), 60) == 3
    (told,) = heard.iterdir()
    text = told.read_text()
    assert "cannot start" in text and "damaged" in text and "moltsched doctor" in text, text
    assert told.name.endswith("-state")
    for marker in (tmp_path / "cache" / "moltsched" / "refused").iterdir():
        day_ago = marker.stat().st_mtime - 86_400 - 60
        os.utime(marker, (day_ago, day_ago))  # as if the loop had gone on for a day
    proc = await start(config)
    assert await asyncio.wait_for(proc.wait(), 60) == 3
    assert len(list(heard.iterdir())) == 2


@pytest.mark.parametrize(
    ("problem", "channel"), [("config", "fallback"), ("state", "fallback"), ("config", "signal")]
)
async def test_a_stop_while_it_tells_ends_the_telling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str, channel: str
) -> None:
    """systemd stops a daemon that is telling the phone it cannot start (its fallback
    command hangs, or the Signal service takes the message and never answers): it exits at
    once, and what it started with it (before: a SIGTERM waited out the command's 60 s or
    Signal's patience, or was ignored)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    began = tmp_path / "began"
    (tmp_path / "hook.sh").write_text(f"cat > /dev/null; touch {began}; sleep 600\n")

    connections: list[asyncio.StreamWriter] = []

    async def taken(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        began.touch()

    # A Signal service that takes connections and never answers.
    async with await asyncio.start_server(taken, "127.0.0.1", 0) as service:
        port = service.sockets[0].getsockname()[1]
        told = f"alerts:\n  fallback_command: [bash, {tmp_path / 'hook.sh'}]\n"
        if channel == "signal":
            told = f'signal:\n  service: 127.0.0.1:{port}\n  account: "{ACCOUNT}"\n'
            told += f'  admins: ["{ALICE}"]\n'
        config = tmp_path / "moltsched.yaml"
        write(config, "1h", told)
        proc = await start(config)
        await wait_for(lambda: (tmp_path / "state" / "control.sock").exists(), 30)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        if problem == "config":
            write(config, "soon", told)
        else:
            (tmp_path / "state" / "moltsched.db").write_bytes(b"\x13garbage, not SQLite" * 500)
        began.unlink(missing_ok=True)  # the good start's connection to the service
        proc = await start(config)
        await wait_for(began.exists, 30)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == (2 if problem == "config" else 3)
        for connection in connections:
            connection.close()
    log = (tmp_path / "daemon.log").read_text()
    assert "stopped before anyone was told" in log, log
    await wait_for(lambda: not running(str(tmp_path / "hook.sh")), 10)


def running(word: str) -> list[int]:
    """The processes whose command line has `word` (not zombies: they have none)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and word.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
