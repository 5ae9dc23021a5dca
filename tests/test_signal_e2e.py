"""The Signal bot inside the real daemon, against the emulator: who may command, and answers.

After frames that must not be answered, an admin's `help` follows: frames are handled in
order, so if the only new message is the answer to `help`, nothing else was answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.signal_front import EDITED_ANSWER
from support.signal_service import (
    ACCOUNT,
    ALICE,
    ALICE_UUID,
    BOB_UUID,
    GROUP_ID,
    GROUP_INTERNAL,
    SignalService,
    answers,
    group_entry,
    sync_frame,
    text_frame,
)
from tests.helpers import MOLTSCHED, REPO, acli, query, spawn_daemon, wait_for

ENVELOPES = REPO / "support" / "envelopes"
DAVE = "+12065550188"
OTHER_GROUP = "T3RoZXJHcm91cElkMTIzNDU2Nzg5MDEyMzQ1Njc4OTA="
text = text_frame


@pytest.fixture
async def service() -> AsyncIterator[SignalService]:
    groups = [group_entry(), group_entry("Other", OTHER_GROUP)]
    async with SignalService(groups=groups) as svc:
        yield svc


async def start_daemon(
    tmp_path: Path, service: SignalService, extra: str = ""
) -> asyncio.subprocess.Process:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "ok.sh").write_text("echo all good\n")
    (tmp_path / "tasks" / "bad.sh").write_text("echo 'disk full' >&2; exit 5\n")
    (tmp_path / "tasks" / "slow.sh").write_text("while [ ! -e go ]; do sleep 0.05; done\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"""
tasks:
  - {{id: ok, script: ok.sh, cron: "0 0 1 1 *"}}
  - {{id: bad, script: bad.sh, cron: "0 0 1 1 *"}}
  - {{id: slow, script: slow.sh, cron: "0 0 1 1 *"}}
signal:
  service: {service.service}
  account: "{ACCOUNT}"
  admins: ["{ALICE}", "{BOB_UUID}"]
  groups: ["{GROUP_ID}"]
{extra}""")
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115, ASYNC230 - closed in stop_daemon
    proc = await spawn_daemon(config, log)
    proc.log = log  # type: ignore[attr-defined]
    try:
        await service.wait_connected(20)
    except BaseException:  # a daemon that never connected is not left running
        proc.kill()
        await proc.wait()
        log.close()
        raise
    return proc


async def stop_daemon(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.terminate()
    code = await asyncio.wait_for(proc.wait(), 20)
    proc.log.close()  # type: ignore[attr-defined]
    return code


async def only_help_answered(service: SignalService) -> None:
    (reply,) = await answers(service, text("help"))
    assert reply["message"].startswith("Commands:") and reply["recipients"] == [ALICE_UUID]


async def test_who_may_command_and_how_they_are_answered(
    tmp_path: Path, service: SignalService
) -> None:
    proc = await start_daemon(tmp_path, service)
    try:
        (reply,) = await answers(service, text("  Status "))
        assert reply["recipients"] == [ALICE_UUID] and reply["number"] == ACCOUNT
        assert reply["message"].startswith("3 task(s), daemon running, Signal connected")

        ack, result = await answers(service, text("run:ok"), 2)
        assert ack["message"] == "Started ok."
        assert result["message"].startswith("ok: success") and "all good" in result["message"]

        # By UUID only (a sender who hides their number), in a private chat.
        (reply,) = await answers(service, text("status:ok", number=None, uuid=BOB_UUID))
        assert reply["recipients"] == [BOB_UUID]

        # Note to Self: the owner; the answer goes to Note to Self.
        note = json.loads((ENVELOPES / "04_sync_note_to_self.json").read_text())
        (reply,) = await answers(service, note)
        assert reply["recipients"] == [ACCOUNT] and "task(s)" in reply["message"]

        # An admin in a listed group: answered in the group.
        (reply,) = await answers(service, text("status", group=GROUP_INTERNAL))
        assert reply["recipients"] == [GROUP_ID]
        # "@Moltbot run:ok" there: the mention is U+FFFC in the text (before: "I don't know").
        ack, result = await answers(service, text("\ufffc run:ok", group=GROUP_INTERNAL), 2)
        assert ack["message"] == "Started ok." and result["message"].startswith("ok: success")

        # Nothing for any of these.
        for frame in [
            text("run:bad", number=DAVE, uuid="9d4f1b7a-2c8e-4a6d-b3f9-7e1c5a0d2b86"),
            text("run:bad", group=OTHER_GROUP),  # admin, but a group not listed
            text(
                "run:bad",
                group=GROUP_INTERNAL,
                number="+33612345678",
                uuid="5e2a9c1f-7d3b-4e8a-b6c0-1a9f4d2e8b75",
            ),  # listed group, not admin
            sync_frame("run:bad", ALICE),  # the owner wrote to Alice
            sync_frame("run:bad", None, group=GROUP_INTERNAL),  # the owner wrote to a group
            *(
                json.loads((ENVELOPES / name).read_text())
                for name in (
                    "09_reaction_private.json",
                    "11_typing_started_private.json",
                    "13_receipt_delivery.json",
                    "19_group_update.json",
                    "24_untrusted_identity.json",
                )
            ),
        ]:
            await service.push(frame)
        await only_help_answered(service)

        # An edit of a command (a typo fixed in place) is answered, in its chat, and never run
        # (it may be of one that ran); a stranger's edit gets nothing. Before, an admin's edit
        # got nothing either, and the fixed command seemed ignored.
        private = json.loads((ENVELOPES / "07_edit_private.json").read_text())
        private["envelope"]["editMessage"]["dataMessage"]["message"] = "run:bad"
        group = text("run:bad", group=GROUP_INTERNAL)
        group["envelope"]["editMessage"] = {
            "targetSentTimestamp": 1,
            "dataMessage": group["envelope"].pop("dataMessage"),
        }
        note = json.loads((ENVELOPES / "04_sync_note_to_self.json").read_text())
        note["envelope"]["timestamp"] += 1  # an edit comes in an envelope of its own
        sent = note["envelope"]["syncMessage"]["sentMessage"]
        sent["editMessage"] = {"targetSentTimestamp": 1, "dataMessage": {"message": "run:bad"}}
        del sent["message"]
        for frame, chat in ((private, ALICE_UUID), (group, GROUP_ID), (note, ACCOUNT)):
            (reply,) = await answers(service, frame)
            assert reply["message"] == EDITED_ANSWER and reply["recipients"] == [chat], reply
        stranger = text("run:bad", number=DAVE, uuid="9d4f1b7a-2c8e-4a6d-b3f9-7e1c5a0d2b86")
        stranger["envelope"]["editMessage"] = {
            "targetSentTimestamp": 1,
            "dataMessage": stranger["envelope"].pop("dataMessage"),
        }
        await service.push(stranger)
        await only_help_answered(service)
        db = tmp_path / "state" / "moltsched.db"
        assert query(db, "SELECT COUNT(*) FROM run WHERE task_id = 'bad'") == [(0,)]
        denied = query(db, "SELECT actor FROM log WHERE action = 'denied' ORDER BY id")
        assert [a for (a,) in denied] == [
            "9d4f1b7a-2c8e-4a6d-b3f9-7e1c5a0d2b86",
            ALICE_UUID,
            "5e2a9c1f-7d3b-4e8a-b6c0-1a9f4d2e8b75",
        ]

        # The same message delivered twice runs once.
        frame = text("run:ok")
        await answers(service, frame, 2)
        await service.push(frame)
        await only_help_answered(service)

        # Unparseable frames do not stop the bot listening.
        for junk in ["{not json", '{"envelope": 5}', '{"envelope": {"dataMessage": []}}', "[]"]:
            await service.push(junk)
        await only_help_answered(service)
        audit = query(db, "SELECT actor FROM log WHERE action = 'command' ORDER BY id")
        assert audit[0] == (f"signal:{ALICE_UUID}",)
    finally:
        assert await stop_daemon(proc) == 0


async def test_an_admins_message_signal_cannot_read_is_said_in_the_log(
    tmp_path: Path, service: SignalService
) -> None:
    """The owner's phone replaced or Signal reinstalled: signal-cli cannot read their
    messages (an untrusted identity) and hands the bot an exception frame without content.
    Before, it was dropped without a word: commands went unanswered and nothing said why."""
    proc = await start_daemon(tmp_path, service)
    try:
        frame = json.loads((ENVELOPES / "24_untrusted_identity.json").read_text())
        frame["envelope"] |= {"source": ALICE, "sourceNumber": ALICE, "sourceUuid": ALICE_UUID}
        frame["exception"]["message"] = f"Untrusted identity: {ALICE_UUID}"
        for n in range(3):  # said once, not once a message
            frame["envelope"]["timestamp"] += n
            await service.push(frame)
        stranger = json.loads((ENVELOPES / "24_untrusted_identity.json").read_text())
        await service.push(stranger)  # a stranger's: nothing, as before
        await only_help_answered(service)
    finally:
        assert await stop_daemon(proc) == 0  # its log is complete once it has stopped
    log = (tmp_path / "daemon.log").read_text()
    said = [ln for ln in log.splitlines() if "could not read a message from" in ln]
    assert len(said) == 1, log
    assert ALICE_UUID in said[0] and "UntrustedIdentityException" in said[0]
    assert "trust" in said[0] and "README" in said[0]
    assert "+12065550188" not in log and "9d4f1b7a" not in log


async def test_the_bot_reconnects_and_alerts_arrive_once(
    tmp_path: Path, service: SignalService
) -> None:
    proc = await start_daemon(tmp_path, service, "alerts: {after_failures: 1}")
    try:
        await service.close_receive()  # a restarting service closes the websocket cleanly
        await service.wait_connected(10)
        await only_help_answered(service)

        await service.stop()  # the service goes away while a task fails
        config = str(tmp_path / "moltsched.yaml")
        assert (await acli("run", "bad", config=config)).returncode == 1
        # The alerts were queued before the run's answer: one per recipient, waiting.
        data = json.loads((await acli("--json", "status", config=config)).stdout)
        assert data["signal_connected"] is False and data["alerts_waiting"] == 2
        await service.start()  # back, same port
        alerts = await service.wait_sent(len(service.sent) + 2, timeout=30)
        sent = [m for m in alerts if m["message"].startswith("⚠️ bad failed")]
        assert sorted(m["recipients"][0] for m in sent) == sorted([ALICE, BOB_UUID])
        assert "disk full" in sent[0]["message"]
        await only_help_answered(service)
        assert len([m for m in service.sent if m["message"].startswith("⚠️")]) == 2
    finally:
        assert await stop_daemon(proc) == 0


async def test_the_result_of_a_run_waits_out_a_restart_of_the_service(
    tmp_path: Path, service: SignalService
) -> None:
    """`run:x` is acknowledged at once and answered again when the run ends. When the
    service is away at that moment (a restart, an image update), the answer waits for it to
    come back, and goes once. Before, it was dropped with a line in the log, and the owner
    never heard how the run ended."""
    proc = await start_daemon(tmp_path, service)
    try:
        (ack,) = await answers(service, text("run:slow"))
        assert ack["message"] == "Started slow.", ack
        await service.stop()
        (tmp_path / "tasks" / "go").touch()  # the run ends while the service is away
        log = tmp_path / "daemon.log"
        await wait_for(lambda: "could not answer in" in log.read_text(), 20)
        sent = len(service.sent)
        await service.start()  # back, same port
        (result,) = (await service.wait_sent(sent + 1, timeout=20))[sent:]
        assert result["message"].startswith("slow: success"), result
        assert result["recipients"] == [ALICE_UUID]
        await only_help_answered(service)  # and nothing else was sent meanwhile
    finally:
        assert await stop_daemon(proc) == 0


async def test_the_service_down_at_start(tmp_path: Path) -> None:
    """The scheduler runs without Signal; the bot connects when the service appears."""
    service = SignalService()
    await service.start()
    await service.stop()  # a port that nobody answers on, for now
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tick.sh").write_text("echo tick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        f"tasks:\n  - {{id: tick, script: tick.sh, every: 1h}}\n"
        f'signal:\n  service: {service.service}\n  account: "{ACCOUNT}"\n'
        f'  admins: ["{ALICE}"]\n'
    )
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115, ASYNC230 - closed in stop_daemon
    proc = await asyncio.create_subprocess_exec(
        MOLTSCHED,
        "--config",
        str(config),
        "daemon",
        stderr=log,
        stdout=asyncio.subprocess.DEVNULL,
    )
    proc.log = log  # type: ignore[attr-defined]
    try:
        db = tmp_path / "state" / "moltsched.db"

        # The new hourly task runs, Signal or not.
        await wait_for(lambda: query(db, "SELECT run_count FROM task") == [(1,)], 20)
        status = await acli("--json", "status", config=config)
        assert json.loads(status.stdout)["signal_connected"] is False
        await service.start()  # same port
        await service.wait_connected(20)
        await only_help_answered(service)
    finally:
        assert await stop_daemon(proc) == 0
        await service.stop()


async def test_a_reload_changes_who_may_command(tmp_path: Path, service: SignalService) -> None:
    proc = await start_daemon(tmp_path, service)
    try:
        await only_help_answered(service)
        config = tmp_path / "moltsched.yaml"
        config.write_text(config.read_text().replace(f'"{ALICE}", ', ""))
        assert (await acli("reload", config=config)).returncode == 0
        await service.push(text("help"))  # Alice is no longer an admin
        (reply,) = await answers(service, text("help", number=None, uuid=BOB_UUID))
        assert reply["recipients"] == [BOB_UUID]
        db = tmp_path / "state" / "moltsched.db"
        assert query(db, "SELECT actor FROM log WHERE action = 'denied'") == [(ALICE_UUID,)]
    finally:
        assert await stop_daemon(proc) == 0


async def test_alerts_arrive_exactly_once_while_the_service_flaps(
    tmp_path: Path, service: SignalService
) -> None:
    from collections import Counter

    proc = await start_daemon(tmp_path, service, "alerts: {after_failures: 1, repeat_every: 1s}")
    config = str(tmp_path / "moltsched.yaml")
    db = tmp_path / "state" / "moltsched.db"
    try:
        for _ in range(4):  # down a second, up a second, while the task keeps failing
            await service.stop()
            await acli("run", "bad", config=config)
            await asyncio.sleep(1)
            await service.start()
            await asyncio.sleep(1)
        # Steady again: everything queued goes out (after the backoff), and nothing twice.
        await wait_for(
            lambda: query(db, "SELECT COUNT(*) FROM outbox WHERE sent IS NULL") == [(0,)], 60
        )
        queued = query(db, "SELECT recipient, text FROM outbox")
        assert len(queued) >= 2 * 2  # at least a failure and a reminder, per recipient
        # Each alert went out once: in a message of its own, or as a line of a digest (alerts
        # that piled up for a recipient while the service was down go as one message).
        delivered = []
        for m in service.sent:
            to, message = m["recipients"][0], m["message"]
            if message.startswith(("⚠️", "✅")):
                delivered.append((to, message.splitlines()[0][:120]))
            elif " alerts at once:" in message.splitlines()[0]:
                delivered += [(to, line) for line in message.splitlines()[1:]]
        assert Counter(delivered) == Counter(
            (to, text.splitlines()[0][:120]) for to, text in queued
        )
    finally:
        assert await stop_daemon(proc) == 0


async def test_a_service_written_with_https_is_never_spoken_to_without_tls(
    tmp_path: Path, service: SignalService
) -> None:
    """The scheme written before `service` was dropped, and signalbot tried HTTPS and then
    plain HTTP whatever it was: whoever could make TLS fail (anyone between the daemon and a
    service on another host) got every command and alert in plain text, though the owner had
    written `https://`. Now `https://` is TLS or nothing, `http://` plain HTTP only, and
    an address without a scheme is signalbot's way (HTTPS, then HTTP). Against the emulator,
    which speaks plain HTTP: a real SignalBot made as the daemon makes it, and doctor."""
    from signalbot import SignalBot

    from bot.signal_client import bot_config, close_storage
    from config.loader import load_config

    config = tmp_path / "moltsched.yaml"
    for written, reached in (
        (f"https://{service.service}", False),
        (f"wss://{service.service}/", False),
        (f"http://{service.service}", True),
        (service.service, True),
    ):
        config.write_text(
            f"tasks: []\nsignal: {{service: '{written}', account: '{ACCOUNT}', "
            f"admins: ['{ALICE}']}}\n"
        )
        signal = load_config(config).signal
        assert signal is not None
        before = len(service.requests)
        bot = SignalBot(bot_config(signal))
        try:
            try:
                answered = await bot._signal.check_signal_service()
            except aiohttp.ClientError:  # TLS against plain HTTP, as signalbot lets it out
                answered = False
        finally:
            await bot._signal.close()
            close_storage(bot)
        assert answered is reached, written
        assert (service.requests[before:] != []) is reached, (written, service.requests[before:])
        doctor = json.loads((await acli("--json", "doctor", config=config)).stdout)
        found = next(c for c in doctor["checks"] if c["name"] == "signal")
        assert (found["status"] == "ok") is reached, (written, found)
