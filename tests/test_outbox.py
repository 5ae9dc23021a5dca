"""Alerts from real runs into the SQLite outbox, and their delivery with retries."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

import bot.signal_client as signal_client
import bot.signal_front as front_module
from bot.fallback import BATCH as FALLBACK_BATCH
from bot.fallback import Fallback
from bot.outbox import DIGEST_MAX, Alerter, Outbox
from bot.signal_front import SignalFront
from config.loader import SignalConfig
from scheduler_core.alerts import AlertPolicy
from scheduler_core.model import EngineSettings
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from support.signal_service import (
    ACCOUNT,
    ALICE,
    ALICE_UUID,
    BOB_UUID,
    GROUP_ID,
    SignalService,
    answers,
    text_frame,
)
from tests.helpers import ManualClock, spec, wait_for

BOB = "+33612345678"


class FlakyService:
    """Stands in for the Signal service: records what it delivered, and can be down."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.down = False
        self.gone: set[str] = set()  # recipients not on Signal (signal-cli: a 400 each time)
        self.refused = 0

    async def send(self, recipient: str, text: str) -> None:
        if self.down or recipient in self.gone:
            self.refused += 1
            raise ConnectionError("service unavailable")
        self.delivered.append((recipient, text))


async def test_policy_from_real_runs(
    store: Store, settings: EngineSettings, tasks_dir: Path
) -> None:
    clock = ManualClock()
    flag = tasks_dir / "ok"
    task = spec(
        "mail", f"echo checking; [ -e {flag} ] || {{ echo 'imap timeout' >&2; exit 3; }}", tasks_dir
    )
    alerter = Alerter(
        store,
        AlertPolicy(after_failures=2, repeat_every=3600),
        ["+4917612345678", "+33612345678"],
        None,
        clock=clock,
    )
    sched = Scheduler(store, settings, [task], clock=clock, on_finish=alerter.on_finish)
    loop = asyncio.create_task(sched.run(schedule=False))

    async def run() -> None:
        await asyncio.wait_for(sched.submit("mail").result, 10)

    try:
        await run()  # 1st failure: below after_failures
        assert await store.alerts_waiting() == 0
        await run()  # 2nd: alert, one per recipient
        await run()  # 3rd, within repeat_every: nothing more
        items = await store.pending_alerts()
        assert [(i.recipient, i.kind) for i in items] == [
            ("+4917612345678", "failure"),
            ("+33612345678", "failure"),
        ]
        pattern = r"⚠️ mail failed: exit 3 in \d+\.\ds: imap timeout"  # said once
        assert re.fullmatch(pattern, items[0].text)
        clock.advance(3601)
        await run()  # still failing after repeat_every: a reminder
        assert [i.kind for i in await store.pending_alerts()][-2:] == ["reminder", "reminder"]
        assert "4 runs in a row" in (await store.pending_alerts())[-1].text
        flag.touch()
        await run()  # recovered
        kinds = [i.kind for i in await store.pending_alerts()]
        assert kinds == ["failure"] * 2 + ["reminder"] * 2 + ["recovery"] * 2
        assert (await store.pending_alerts())[-1].text.startswith("✅ mail is working again")
        await run()  # a second success: no second recovery message
        assert await store.alerts_waiting() == 6
    finally:
        sched.close()
        await loop


async def test_delivery_retries_in_order_exactly_once(settings: EngineSettings) -> None:
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    for n in range(3):
        await store.queue_alert(
            "t", "failure", [("+1", f"alert {n}"), ("+2", f"alert {n}")], clock.now(), clock.now()
        )
    service = FlakyService()
    service.down = True
    outbox = Outbox(store, service, clock=clock)
    runner = asyncio.create_task(outbox.run())
    # One try per recipient each time: what waits for one recipient goes as one message.
    await wait_for(lambda: service.refused == 2)
    for _ in range(4):  # backoff: 2, 4, 8, 16 s
        before = service.refused
        clock.advance(20)
        await wait_for(lambda before=before: service.refused == before + 2)
    waiting = await store.pending_alerts()
    assert {w.attempts for w in waiting} == {5} and len(waiting) == 6
    service.down = False
    clock.advance(300)
    await wait_for(lambda: len(service.delivered) == 2)
    digest = "3 alerts at once:\nalert 0\nalert 1\nalert 2"
    assert service.delivered == [("+1", digest), ("+2", digest)]
    assert await store.alerts_waiting() == 0
    sent = [e for e in await store.logs("t", 20) if e.action == "alert_sent"]
    assert len(sent) == 6
    outbox.close()
    await runner
    await store.close()


async def test_a_recipient_who_never_takes_an_alert_holds_up_no_one_else(
    settings: EngineSettings,
) -> None:
    """`alert_to` with a number that is not on Signal (a typo, a phone given up): its alerts
    wait, retried, and those to everyone else go as ever. Before, once it had DIGEST_MAX of
    them waiting, only its own were read, and the owner's alerts stopped without a word."""
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    service = FlakyService()
    service.gone = {"+2"}
    outbox = Outbox(store, service, clock=clock)

    async def deliver() -> None:  # as Outbox.run() would, without the wait
        while (again := await outbox.deliver_due()) is not None and again <= clock.now():
            pass

    alerts = [(to, f"alert {n}") for n in range(DIGEST_MAX) for to in ("+1", "+2")]
    await store.queue_alert("t", "failure", alerts, clock.now(), clock.now())
    await deliver()
    assert {to for to, _ in service.delivered} == {"+1"} and service.refused >= 1
    assert await store.alerts_waiting() == DIGEST_MAX
    for n in range(DIGEST_MAX, DIGEST_MAX + 3):
        clock.advance(60)
        await store.queue_alert(
            "t", "failure", [("+1", f"alert {n}"), ("+2", f"alert {n}")], clock.now(), clock.now()
        )
        await deliver()
        assert service.delivered[-1] == ("+1", f"alert {n}")
    assert await store.alerts_waiting() == DIGEST_MAX + 3  # all of them +2's, still tried
    assert service.refused > 1
    await store.close()


async def test_alerts_to_a_recipient_a_reload_removed_are_given_up_and_logged(
    settings: EngineSettings,
) -> None:
    """The owner's number changed, and a reload put the new one in `alert_to`: the alerts
    still waiting for the old one (a number no longer on Signal) were tried for ever, every
    few minutes, with nothing the owner could do but edit the database. They are given up,
    each in the action log, and no longer count as waiting; the new number's go as ever."""
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    service = FlakyService()
    service.gone = {"+old"}
    now = clock.now()
    await store.queue_alert("t", "failure", [("+old", "t failed"), ("+new", "t failed")], now, now)
    recipients: tuple[str, ...] = ("+old", "+new")
    outbox = Outbox(store, service, clock=clock, recipients=lambda: recipients)
    assert await outbox.deliver_due() is not None  # +old refused: tried again later
    assert service.delivered == [("+new", "t failed")] and service.refused == 1
    recipients = ("+new",)  # the reload
    clock.advance(60)
    while (again := await outbox.deliver_due()) is not None:  # as Outbox.run() would
        assert again <= clock.now()
    assert service.refused == 1 and await store.alerts_waiting() == 0
    dropped = [e for e in await store.logs("t", 20) if e.action == "alert_dropped"]
    assert [e.message for e in dropped] == ["failure to +old: no longer in signal.alert_to"]
    await store.close()


async def test_alerts_waiting_for_the_fallback_are_waited_for_not_polled(
    settings: EngineSettings,
) -> None:
    """Signal down with a full batch of alerts not yet due for the fallback command: the
    fallback looks again when the first is due. Before, a full batch meant "look again now",
    and the daemon read those rows again and again at full speed until then."""
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    alerts = [("+1", f"alert {n}") for n in range(FALLBACK_BATCH + 1)]
    await store.queue_alert("t", "failure", alerts, clock.now(), clock.now())
    fallback = Fallback(store, ["true"], 900, signal_configured=True, clock=clock)
    again = await fallback.step()
    assert again is not None and again >= clock.now() + timedelta(seconds=900)
    await store.close()


async def test_an_alert_the_fallback_delivers_goes_once_though_a_batch_ends_inside_it(
    settings: EngineSettings, tmp_path: Path
) -> None:
    """An alert is one row per recipient; when the fallback's batch ended between two rows of
    one alert, it delivered the alert, then delivered it again for the rows left over."""
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    for n in range(FALLBACK_BATCH - 1):
        await store.queue_alert("t", "failure", [("+1", f"alert {n}")], clock.now(), clock.now())
    split = [("+1", "the split one"), ("+2", "the split one")]  # rows BATCH and BATCH + 1
    await store.queue_alert("t", "failure", split, clock.now(), clock.now())
    got = tmp_path / "delivered"
    command = ["sh", "-c", f"cat >> {got}; echo >> {got}"]
    fallback = Fallback(store, command, 60, signal_configured=True, clock=clock)
    clock.advance(61)
    while await store.alerts_waiting():
        await fallback.step()
    lines = got.read_text().splitlines()
    assert len(lines) == FALLBACK_BATCH and lines.count("the split one") == 1
    await store.close()


async def test_undelivered_alerts_survive_a_restart(settings: EngineSettings) -> None:
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    await store.queue_alert(
        "t", "failure", [("+1", "one"), ("+1", "two")], clock.now(), clock.now()
    )
    service = FlakyService()
    first = Outbox(store, service, clock=clock)
    service.down = True
    await first.deliver_due()
    await store.close()  # the daemon stops with both undelivered

    store = await Store.open(settings.db_path)
    service.down = False
    clock.advance(60)
    second = Outbox(store, service, clock=clock)
    assert await second.deliver_due() is None
    assert service.delivered == [("+1", "2 alerts at once:\none\ntwo")]
    assert await second.deliver_due() is None and len(service.delivered) == 1
    await store.close()


@contextlib.asynccontextmanager
async def front_on(
    service: SignalService, store: Store, admins: tuple[str, ...] = (ALICE,)
) -> AsyncIterator[SignalFront]:
    """The real Signal front end on the emulator, its connection supervised as the daemon's
    is; each message is answered "answer to TEXT". Closed with the store at the end."""

    async def replies(text: str, actor: str) -> AsyncIterator[str]:
        yield f"answer to {text}"

    front = SignalFront(SignalConfig(service.service, ACCOUNT, admins, (), ()), replies, store)
    listening = asyncio.create_task(front.run())
    try:
        yield front
    finally:
        await front.close()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await store.close()


async def test_alerts_waiting_for_a_retry_go_as_soon_as_signal_is_back(
    settings: EngineSettings,
) -> None:
    """After a long outage an alert's next try can be minutes away (its back-off doubles up
    to BACKOFF_MAX_S). When the bot connects again, what waits goes at once, without the
    clock moving on; before, it waited out the back-off."""
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    await store.queue_alert("t", "failure", [(ALICE, "t failed")], clock.now(), clock.now())
    async with SignalService() as service:
        await service.stop()  # away before the bot ever connects
        async with front_on(service, store) as front:
            outbox = Outbox(store, front, clock=clock, limiter=front.limiter)
            front.on_connect = outbox.connected  # as the daemon wires them
            later = await outbox.deliver_due()
            assert later is not None and later > clock.now() and service.sent == []
            await service.start()  # back, same port
            await wait_for(lambda: front.connected, 20)
            assert await outbox.deliver_due() is None
            (alert,) = service.sent
            assert alert["message"] == "t failed" and alert["recipients"] == [ALICE]


async def test_an_alert_some_members_of_a_group_missed_says_who(settings: EngineSettings) -> None:
    """signal-cli takes a send to a group and reports the members it could not reach (a 201
    with `errors`: one whose safety number changed, say). It was taken as delivered with
    nothing said, and those members missed the alert without a trace. It stays delivered (a
    second send would reach the others twice); who missed it, and why, is in the action log."""
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    await store.queue_alert("t", "failure", [(GROUP_ID, "t failed")], clock.now(), clock.now())
    async with SignalService() as service, front_on(service, store) as front:
        await wait_for(lambda: front.connected, 10)
        service.undelivered = [{"number": BOB, "uuid": BOB_UUID, "reason": "IDENTITY_FAILURE"}]
        outbox = Outbox(store, front, clock=clock)
        assert await outbox.deliver_due() is None
        assert [m["message"] for m in service.sent] == ["t failed"]
        assert await store.pending_alerts() == []
        (entry,) = [e for e in await store.logs(limit=50) if e.action == "not_delivered"]
        assert GROUP_ID in entry.message and f"not to {BOB} (IDENTITY_FAILURE" in entry.message
        assert "safety number changed" in entry.message, entry.message


async def test_a_send_the_service_takes_and_never_answers_is_given_up(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """signal-cli-rest-api takes the request and never answers (aiohttp's own limit is five
    minutes): the send is given up after SERVICE_TIMEOUT_S, recorded as a failed attempt with
    its retry, and the alert goes once the service answers again."""
    monkeypatch.setattr(front_module, "SERVICE_TIMEOUT_S", 0.5)
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    await store.queue_alert("t", "failure", [(ALICE, "t failed")], clock.now(), clock.now())

    async with SignalService() as service, front_on(service, store) as front:
        await wait_for(lambda: front.connected, 10)
        service.hanging.add("/v2/send")
        outbox = Outbox(store, front, clock=clock)
        retry = await asyncio.wait_for(outbox.deliver_due(), 10)
        assert retry is not None and retry > clock.now()
        (item,) = await store.pending_alerts()
        assert item.attempts == 1 and service.sent == []
        service.hanging.clear()
        clock.advance((retry - clock.now()).total_seconds())
        assert await outbox.deliver_due() is None
        assert [m["message"] for m in service.sent] == ["t failed"]


async def test_a_service_that_takes_sends_and_never_answers_is_not_called_connected(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen signal-cli-rest-api (`docker pause`, a stuck JVM) keeps its connections open:
    the receive websocket says nothing, and sends get no answer. `status` said "Signal
    connected" all the while; it says NOT connected from the first send given up until one
    goes through."""
    monkeypatch.setattr(front_module, "SERVICE_TIMEOUT_S", 0.5)
    store = await Store.open(settings.db_path)
    async with SignalService() as service, front_on(service, store) as front:
        await wait_for(lambda: front.working, 10)
        service.hanging.add("/v2/send")
        with pytest.raises(TimeoutError):
            await front.send(ALICE, "anyone there?")
        assert front.connected and not front.working
        service.hanging.clear()
        await front.send(ALICE, "back")
        assert front.working and [m["message"] for m in service.sent] == ["back"]


async def test_a_service_that_takes_the_start_up_checks_and_never_answers_is_tried_again(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its health check taken and never answered: the connection is given up after
    SERVICE_TIMEOUT_S and tried again, and made once the service answers."""
    monkeypatch.setattr(front_module, "SERVICE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(front_module, "RECONNECT_FIRST_S", 0.05)
    store = await Store.open(settings.db_path)

    async with SignalService() as service:
        service.hanging.add("/v1/health")
        async with front_on(service, store) as front:
            await wait_for(lambda: service.requests.count(("GET", "/v1/health")) >= 2, 10)
            assert not front.connected
            service.hanging.clear()
            await wait_for(lambda: front.connected, 10)


async def test_a_receive_connection_that_answers_no_pings_is_made_anew(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen service, or a connection that died without a word (the service's host gone,
    a NAT that forgot it), sends nothing and says nothing: only a ping tells it from a quiet
    one. The websocket is pinged every HEARTBEAT_S; one that is not answered within as long
    is given up, called NOT connected, and made anew; commands are heard again once the
    service answers."""
    monkeypatch.setattr(signal_client, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(front_module, "RECONNECT_FIRST_S", 0.05)
    store = await Store.open(settings.db_path)
    receive = ("GET", f"/v1/receive/{ACCOUNT}")
    async with SignalService() as service, front_on(service, store) as front:
        await wait_for(lambda: front.connected, 10)
        service.answers_pings = False
        await wait_for(lambda: not front.connected, 10)
        await wait_for(lambda: service.requests.count(receive) >= 2, 10)
        service.answers_pings = True
        (reply,) = await answers(service, text_frame("status"))
        assert reply["message"] == "answer to status" and front.connected


async def test_a_rate_limit_holds_every_send_for_a_while_and_loses_nothing(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """signal-cli-rest-api answers 429: Signal says the account sends too much, and sending
    on keeps it limited. One 429 holds every send, to every recipient, replies and alerts
    alike, for RATE_LIMIT_HOLD_S; then the reply it refused and the alerts go, once each.
    (Before: each recipient was tried on its own, and the refused reply was lost.)"""
    monkeypatch.setattr(front_module, "RATE_LIMIT_HOLD_S", 1.0)
    store = await Store.open(settings.db_path)
    clock = ManualClock()
    texts = [(ALICE, "t failed"), (BOB_UUID, "t failed")]
    await store.queue_alert("t", "failure", texts, clock.now(), clock.now())

    async with SignalService() as service, front_on(service, store, (ALICE, BOB_UUID)) as front:
        await wait_for(lambda: front.connected, 10)
        service.send_status = 429
        await service.push(text_frame("help"))
        # The answer, refused: once the front has read the 429 too, it holds every send.
        await wait_for(lambda: service.refused_sends == 1 and front.limiter.held_for() > 0, 10)
        limited = time.monotonic()
        outbox = Outbox(store, front, clock=clock, limiter=front.limiter)
        later = await outbox.deliver_due()
        assert later is not None and later > clock.now()
        assert service.refused_sends == 1 and service.sent == []  # nobody else was tried
        # After the hold the answer is tried again: still limited, so twice as long.
        await wait_for(lambda: service.refused_sends == 2 and front.limiter.held_for() > 1.5, 10)
        assert time.monotonic() - limited >= 0.9
        service.send_status = None  # the limit is lifted; the hold still stands
        (answer,) = await service.wait_sent(1)
        assert answer["message"] == "answer to help" and answer["recipients"] == [ALICE_UUID]
        assert service.sent_at[0] - limited >= 2.9  # both holds, less the answer's wait
        clock.advance((later - clock.now()).total_seconds())
        assert await outbox.deliver_due() is None
        assert sorted(m["recipients"][0] for m in service.sent[1:]) == sorted([ALICE, BOB_UUID])
        assert service.refused_sends == 2
