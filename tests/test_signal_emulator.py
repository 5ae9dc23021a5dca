"""The signal-cli-rest-api emulator, driven by a real SignalBot (signalbot 2.2.1).

This proves the emulator speaks the protocol well enough for the bot tests that build on it:
start-up (health, about, groups, the websocket), a received frame reaching a handler, and the
reply arriving at `/v2/send` with the fields signalbot sends. The bot is stopped through its
pipeline and session, never `SignalBot.stop()`, which stops the event loop (STYLE.md 2.4).
"""

from __future__ import annotations

import json

import aiohttp
from signalbot import DataMessageContext, DataMessageHandler, SendMessage, SignalBot

from bot.signal_client import close_storage
from support.signal_service import ACCOUNT, ALICE_UUID, GROUP_ID, SignalService
from tests.helpers import REPO, wait_for

ENVELOPES = REPO / "support" / "envelopes"


class Echo(DataMessageHandler):
    async def handle_data_message(self, context: DataMessageContext) -> None:
        await context.reply(SendMessage(text=f"echo: {context.message.text}"))


async def start_bot(service: SignalService) -> SignalBot:
    bot = SignalBot(
        {
            "phone_number": ACCOUNT,
            "signal_service": service.service,
            "download_attachments": False,
            "retry_interval": 1,
        }
    )
    bot.register(Echo())
    bot.start(run_forever=False)
    await service.wait_connected()
    return bot


async def stop_bot(bot: SignalBot) -> None:
    await bot._pipeline.stop()
    await bot.close()
    close_storage(bot)


async def test_a_real_signalbot_talks_to_the_emulator() -> None:
    async with SignalService() as service:
        bot = await start_bot(service)
        try:
            assert ("GET", "/v1/health") in service.requests
            assert ("GET", f"/v1/groups/{ACCOUNT}") in service.requests
            await service.push((ENVELOPES / "01_private_text.json").read_text())
            (private,) = await service.wait_sent(1)
            assert private["recipients"] == [ALICE_UUID] and private["number"] == ACCOUNT
            assert private["message"].startswith("echo: ")
            assert private["quote_author"] == ALICE_UUID
            await service.push((ENVELOPES / "03_group_text.json").read_text())
            sent = await service.wait_sent(2)
            assert sent[1]["recipients"] == [GROUP_ID]
        finally:
            await stop_bot(bot)


async def test_errors_outages_and_recovery() -> None:
    service = SignalService()
    await service.start()
    url = f"http://{service.service}"
    body = json.dumps({"number": ACCOUNT, "recipients": [ALICE_UUID], "message": "hi"})
    async with aiohttp.ClientSession() as http:
        service.send_status = 503
        async with http.post(f"{url}/v2/send", data=body) as resp:
            assert resp.status == 503 and service.refused_sends == 1
        service.send_status = None
        async with http.post(f"{url}/v2/send", data=body) as resp:
            assert resp.status == 201
            assert resp.content_type == "application/json"
            assert "timestamp" in (await resp.json())[0]
        port = service.port
        await service.stop()
        try:
            async with http.get(f"{url}/v1/health") as resp:
                raise AssertionError("the emulator should be down")
        except aiohttp.ClientConnectionError:
            pass
        await service.start()  # back on the same port
        assert service.port == port
        async with http.get(f"{url}/v1/health") as resp:
            assert resp.status == 204
    await service.stop()
    assert len(service.sent) == 1


async def test_signalbot_does_not_reconnect_after_a_clean_close() -> None:
    """What DESIGN.md section 7 warns about, shown against the emulator: after the service
    closes the receive websocket cleanly, signalbot 2.2.1's one producer ends, and nothing
    of it listens or connects again. This is why the daemon reads the websocket itself
    (bot/signal_front.py)."""
    async with SignalService() as service:
        bot = await start_bot(service)
        receive = ("GET", f"/v1/receive/{ACCOUNT}")
        try:
            assert service.requests.count(receive) == 1 and len(bot._pipeline._produce_tasks) == 1
            await service.close_receive()
            await wait_for(lambda: not bot._pipeline._produce_tasks, 10)  # ended, not retrying
            assert service.requests.count(receive) == 1
        finally:
            await stop_bot(bot)
