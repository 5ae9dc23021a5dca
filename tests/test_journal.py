"""Logs fit the journal (issue 12, point 3): syslog priorities and no timestamp of our own
when stderr is the journal's stream, signalbot's lines once and without its storage notice,
a Signal service that stays down logged once per back-off step, not once per attempt; and
a log no one reads holds nothing up."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest

import bot.signal_front as front_module
from bot.logs import Unblocked, quiet_signalbot, setup_logging
from bot.signal_client import bot_config, close_storage
from bot.signal_front import SignalFront
from config.loader import SignalConfig
from scheduler_core.store import Store
from tests.helpers import MOLTSCHED, cli, wait_for, wait_sync

CONFIG = """
tasks:
  - {id: ok, script: ok.sh, every: 1h}
  - {id: bad, script: bad.sh, every: 1h}
"""


def start(tmp_path: Path, journal: bool) -> tuple[subprocess.Popen[bytes], Path, Path]:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "ok.sh").write_text("true\n")
    (tmp_path / "tasks" / "bad.sh").write_text("exit 3\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(CONFIG)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as err:
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:  # as systemd sets it: the device and inode of our stderr
            info = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        proc = subprocess.Popen([MOLTSCHED, "--config", str(config), "daemon"], stderr=err, env=env)
    return proc, config, log


def test_under_the_journal_each_line_has_its_priority_and_no_timestamp(tmp_path: Path) -> None:
    proc, config, log = start(tmp_path, journal=True)
    try:
        wait_sync(lambda: "bad (schedule run): failed" in log.read_text(), 20, "a failed run")
        config.write_text("tasks: [{id: BAD}]\n")
        assert cli("reload", config=config).returncode == 2
        wait_sync(lambda: "reload rejected" in log.read_text(), 10, "the rejection")
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
    lines = log.read_text().splitlines()
    # Every line has its priority; a record's further lines too (each is a journal entry).
    assert lines and all(re.match(r"<[2-7]>", ln) for ln in lines), lines
    assert not any(re.search(r"\d\d:\d\d:\d\d", ln) for ln in lines)
    assert any(ln.startswith("<6>bot.daemon: moltsched ") for ln in lines)  # the start line
    assert any(ln.startswith("<4>") and "bad (schedule run): failed" in ln for ln in lines)
    assert any(ln.startswith("<3>") and "reload rejected" in ln for ln in lines)


def test_elsewhere_lines_keep_their_time_and_level(tmp_path: Path) -> None:
    proc, _, log = start(tmp_path, journal=False)
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 20, "the daemon")
    finally:
        proc.terminate()
        proc.wait(15)
    first = log.read_text().splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ", first), first


async def test_signalbot_lines_appear_once_and_its_storage_notice_not_at_all(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from signalbot import SignalBot

    setup_logging("INFO")
    try:
        config = SignalConfig("127.0.0.1:9", "+4915100000000", ("+4917600000000",), (), ())
        quiet_signalbot()
        close_storage(SignalBot(bot_config(config)))  # as SignalFront makes it
        quiet_signalbot()
        logging.getLogger("signalbot").warning("a line from signalbot")
        logging.getLogger("signalbot").warning("in-memory storage initialized")
        logging.getLogger().handlers[0].flush()  # written by a thread of its own
        err = capfd.readouterr().err
        assert err.count("a line from signalbot") == 1
        assert "storage" not in err
    finally:
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()


def test_lines_no_one_reads_wait_and_what_does_not_fit_is_counted() -> None:
    """The daemon's log, when nothing reads it: logging returns at once, the newest lines
    wait, and the reader, once back, is told how many were left out between."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)  # about 40 of these lines
    logger = logging.Logger("unread")
    with open(write, "w") as stream:
        handler = Unblocked(stream, kept=10)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        for n in range(1000):
            logger.warning("line %04d %s", n, "x" * 90)
        text = ""
        try:
            while "line 0999" not in text:
                text += os.read(read, 65536).decode()
        finally:
            os.close(read)
            handler.close()
    lines = text.splitlines()
    notes = [ln for ln in lines if "left out" in ln]  # one where each gap is
    written = [ln for ln in lines if ln.startswith("line ")]
    assert len(written) + sum(int(n.split()[0]) for n in notes) == 1000
    assert written[-10:] == [f"line {n:04d} {'x' * 90}" for n in range(990, 1000)]
    assert lines[-11] == notes[-1]  # just before the ten kept


class Refusing:
    """A port that accepts and hangs up at once, counting attempts."""

    def __init__(self) -> None:
        self.attempts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.attempts += 1
            writer.close()

        self.server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"


async def test_a_service_that_stays_down_is_logged_once_per_back_off_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Steps of 10, 20 and 40 ms, then 80 ms for ever: a line for each step and one on
    # reaching the longest, four in all, however long it lasts.
    monkeypatch.setattr(front_module, "RECONNECT_FIRST_S", 0.01)
    monkeypatch.setattr(front_module, "RECONNECT_MAX_S", 0.08)
    service = Refusing()
    address = await service.start()
    store = await Store.open(tmp_path / "db")
    config = SignalConfig(address, "+4915100000000", ("+4917600000000",), (), ())

    async def replies(text: str, actor: str):  # type: ignore[no-untyped-def]
        yield ""

    front = SignalFront(config, replies, store)
    caplog.set_level(logging.WARNING)
    task = asyncio.create_task(front.run())
    try:
        await wait_for(lambda: service.attempts >= 20, 30)
    finally:
        await front.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert service.server is not None
        service.server.close()
        await store.close()
    ours = [r.getMessage() for r in caplog.records if r.name == "bot.signal_front"]
    assert len(ours) == 4, ours
    assert ours[-1].startswith("Signal still unreachable")
    assert len(caplog.records) == len(ours), [r.getMessage() for r in caplog.records]
