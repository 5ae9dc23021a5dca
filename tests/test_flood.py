"""Signal is never flooded, on the real daemon against the emulator: identical commands get
one answer, a hundred flapping tasks fold into a few messages within the per-recipient limit,
each task is named, flapping is said once per task, and nothing is dropped uncounted."""

from __future__ import annotations

import asyncio
import getpass
import itertools
import os
import re
import time
from pathlib import Path

from scheduler_core.tally import KEPT, QUIET_S, Counted, Tally
from support.daemon import DaemonProcess
from support.signal_service import ACCOUNT, ALICE, ALICE_UUID, SignalService, text_frame
from tests.helpers import MOLTSCHED, cli, query, wait_for

# Fails and works by turns.
FLIP = 'f="$MOLTSCHED_TASK_ID.n"; n=$(cat "$f" 2>/dev/null || echo 0); echo $((n+1)) > "$f"\n'
FLIP += '[ $((n % 2)) -eq 1 ] || { echo "down again" >&2; exit 1; }\n'


async def start(
    tmp_path: Path, service: SignalService, tasks: str, limits: str = ""
) -> asyncio.subprocess.Process:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "slow.sh").write_text("sleep 2; echo done\n")
    (tmp_path / "tasks" / "flip.sh").write_text(FLIP)
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        f"max_concurrent: 4\ntasks:\n{tasks}"
        f"signal: {{service: {service.service}, account: '{ACCOUNT}', admins: ['{ALICE}']"
        f"{limits}}}\n"
    )
    with open(tmp_path / "daemon.log", "wb") as log:  # noqa: ASYNC230 - before any work
        proc = await asyncio.create_subprocess_exec(
            MOLTSCHED,
            "--config",
            str(config),
            "daemon",
            stderr=log,
            env=os.environ | {"MOLTSCHED_LOG_LEVEL": "INFO"},
        )
    await service.wait_connected(20)
    return proc


async def stop(proc: asyncio.subprocess.Process, tmp_path: Path) -> None:
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


async def test_five_hundred_identical_commands_get_one_answer(tmp_path: Path) -> None:
    async with SignalService() as service:
        proc = await start(tmp_path, service, "  - {id: x, script: slow.sh, cron: '0 0 1 1 *'}\n")
        try:
            for _ in range(500):  # a stuck client, a flaky phone, an angry thumb
                await service.push(text_frame("run:x"))
            await wait_for(lambda: any("x: success" in m["message"] for m in service.sent), 30)
            # Frames are handled in order: once `help` is answered, every run:x was handled.
            before = len(service.sent)
            await service.push(text_frame("help"))
            await service.wait_sent(before + 1, 30)
            replies = [m["message"] for m in service.sent]
            assert len(replies) == 3, replies  # the acknowledgement, the result, the help
            assert replies[0].startswith("Started x.")
            counted = sum(int(n) for n in re.findall(r"came (\d+) more time", "".join(replies)))
            assert counted == 499, replies
            db = tmp_path / "state" / "moltsched.db"
            assert query(db, "SELECT COUNT(*) FROM run") == [(1,)]
        finally:
            await stop(proc, tmp_path)


async def test_a_hundred_flapping_tasks_fold_into_a_few_messages(tmp_path: Path) -> None:
    ids = [f"flap{i:02d}" for i in range(100)]
    tasks = "".join(f"  - {{id: {t}, script: flip.sh, every: 2s}}\n" for t in ids)
    async with SignalService() as service:
        proc = await start(tmp_path, service, tasks)
        started = time.monotonic()
        try:

            def said_flapping(t: str, text: str) -> list[str]:
                # On a line that says flapping: a digest's other lines name failed tasks.
                return re.findall(rf"flapping[^\n]*\b{t}\b|\b{t}\b is flapping", text)

            def flapping_named() -> set[str]:
                text = "\n".join(m["message"] for m in service.sent)
                return {t for t in ids if said_flapping(t, text)}

            await wait_for(lambda: flapping_named() == set(ids), 120)
            elapsed = time.monotonic() - started
            sent = service.sent
            # Within the limit: a burst of 10, then 6 a minute.
            assert len(sent) <= 10 + 6 * elapsed / 60 + 1, (len(sent), elapsed)
            assert all(m["recipients"] == [ALICE_UUID] or m["recipients"] == [ALICE] for m in sent)
            # Flapping is said once per task, not on every change.
            text = "\n".join(m["message"] for m in sent)
            for t in ids:
                mentions = said_flapping(t, text)
                assert len(mentions) == 1, (t, mentions)
            # Nothing dropped uncounted: every alert queued is either sent or still waiting
            # its turn in the outbox (and will go in the next digest).
            db = tmp_path / "state" / "moltsched.db"
            (queued,) = query(db, "SELECT COUNT(*) FROM outbox")[0]
            (logged,) = query(db, "SELECT COUNT(*) FROM log WHERE action = 'alert_sent'")[0]
            (waiting,) = query(db, "SELECT COUNT(*) FROM outbox WHERE sent IS NULL")[0]
            assert logged + waiting == queued
        finally:
            await stop(proc, tmp_path)


async def test_a_flood_of_different_commands_waits_its_turn_and_is_counted(
    tmp_path: Path,
) -> None:
    """A hundred different commands at once: a burst is answered, then one a second (the
    configured limit); what cannot wait is dropped, and the next answer says how many."""
    async with SignalService() as service:
        limits = ", send_per_minute: 60, send_burst: 10"
        proc = await start(
            tmp_path, service, "  - {id: x, script: slow.sh, cron: '0 0 1 1 *'}\n", limits
        )
        try:
            for i in range(100):
                await service.push(text_frame(f"status:nope{i}"))

            def accounted() -> int:
                dropped = re.findall(
                    r"\((\d+) earlier repl", "".join(m["message"] for m in service.sent)
                )
                return len(service.sent) + sum(int(n) for n in dropped)

            await wait_for(lambda: accounted() == 100, 60)
            first = service.sent_at[0]
            gaps = [b - a for a, b in itertools.pairwise(service.sent_at[10:])]
            assert all(gap > 0.9 for gap in gaps), gaps  # one a second after the burst
            assert len(service.sent) < 100 and service.sent_at[9] - first < 1
        finally:
            await stop(proc, tmp_path)


async def test_a_stranger_who_floods_the_number_writes_a_line_not_one_a_message(
    tmp_path: Path,
) -> None:
    """Two hundred messages from a stranger, then twenty from another: neither gets an answer,
    and each is logged once (in the action log and the journal), not once a message, so
    nobody who knows the bot's number can fill its disk or its journal."""
    stranger, other = "b1e3c5a7-0000-4000-8000-000000000001", "b1e3c5a7-0000-4000-8000-000000000002"
    db = tmp_path / "state" / "moltsched.db"
    async with SignalService() as service:
        proc = await start(tmp_path, service, "  - {id: x, script: slow.sh, cron: '0 0 1 1 *'}\n")
        try:
            for i in range(200):
                await service.push(text_frame(f"run:x {i}", number=None, uuid=stranger))
            for _ in range(20):
                await service.push(text_frame("status", number=None, uuid=other))
            # Frames are handled in order: once `help` is answered, the others were handled.
            await service.push(text_frame("help"))
            await service.wait_sent(1, 30)
            denied = query(db, "SELECT message FROM log WHERE action = 'denied' ORDER BY id")
            assert [m.split(" (")[0] for (m,) in denied] == [f"from {stranger}", f"from {other}"]
            journal = (tmp_path / "daemon.log").read_text()
            assert journal.count("denied a message") == 2
            assert len(service.sent) == 1  # the help, to the admin
        finally:
            await stop(proc, tmp_path)
        # What was counted and not logged yet is logged as the daemon stops.
        counts = query(db, "SELECT message FROM log WHERE action = 'denied' ORDER BY id")[2:]
        assert sorted(m for (m,) in counts) == [
            f"from {stranger}: 199 more, not logged one by one",
            f"from {other}: 19 more, not logged one by one",
        ]


def test_refusals_are_counted_between_lines_and_none_is_lost() -> None:
    """A first refusal is logged; the next within QUIET_S are counted, and the count comes
    with the next line after it; a party forgotten to make room for others has its count
    logged then; what is still counted is given when the daemon stops."""
    denials: Tally[str] = Tally()
    assert denials.note("s", 0) == [Counted("s", 0)]
    assert all(denials.note("s", t) == [] for t in (1, 2, QUIET_S - 1))
    assert denials.note("s", QUIET_S) == [Counted("s", 3)]
    assert Counted("s", 3).before() == "; 3 more before it, not logged one by one"
    assert denials.note("s", QUIET_S + 1) == []
    for i in range(KEPT - 1):  # room for these and s
        assert denials.note(f"n{i}", QUIET_S + 2) == [Counted(f"n{i}", 0)]
    assert denials.note("late", QUIET_S + 3) == [
        Counted("late", 0),
        Counted("s", 1, this=False),  # the oldest, forgotten: its count now
    ]
    assert denials.note("n0", QUIET_S + 4) == []
    assert denials.counted() == [Counted("n0", 1, this=False)] and denials.counted() == []


def test_an_agent_polling_status_writes_a_line_an_hour_not_one_a_call(tmp_path: Path) -> None:
    """Reads are audited as `query` entries: the first of each read by each caller at once,
    the same read again within the hour counted, and the count written with its next entry
    or when the daemon stops. Before, every call wrote an entry (and a commit): an agent
    polling `status` every 10 s wrote 8,640 a day, kept for `log_days`."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "x.sh").write_text("echo x\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: x, script: x.sh, cron: '0 0 1 1 *'}\n")
    db = tmp_path / "state" / "moltsched.db"
    daemon = DaemonProcess(config).start()
    try:
        for args in [("--json", "status")] * 12 + [("status", "x")] * 3 + [("chat", "status")]:
            assert cli(*args, config=config).returncode == 0
        assert cli("pause", "x", config=config).returncode == 0  # a change: each one logged
        assert cli("resume", "x", config=config).returncode == 0
    finally:
        assert daemon.stop() == 0
    audit = query(db, "SELECT action, message, actor FROM log WHERE actor IS NOT NULL ORDER BY id")
    me = f"cli:{getpass.getuser()}"
    assert [(a, m) for a, m, _ in audit[:6]] == [
        ("query", "status"),
        ("query", "status:x"),
        ("command", "pause:x"),
        ("paused", "paused by " + me),
        ("command", "resume:x"),
        ("resumed", "resumed by " + me),
    ]
    assert {(a, m) for a, m, _ in audit[6:]} == {  # as the daemon stopped
        ("query", "status; 12 more, not logged one by one"),
        ("query", "status:x; 2 more, not logged one by one"),
    }
    assert len(audit) == 8
    assert {actor for _, _, actor in audit} == {me}
