"""Hostile websocket frames through the real daemon's Signal bot, property-based (hypothesis).

One daemon and one emulator serve every example. Each example pushes a batch of frames
nobody should obey: random JSON, truncated frames, huge fields (past the websocket client's
1 MiB limit too, which costs the connection), wrong types, unknown envelope kinds, and
strangers dressed up as the admin in every field but the two authoritative ones. Then the
admin asks `help`: the bot must answer that, and only that. At the end no task has run, the
strangers were logged `denied`, and the daemon is alive and logged no traceback.

The emulator runs on an event loop in a thread of its own, so hypothesis can drive a plain
test function while the bot is served in the background.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.signal_service import (
    ACCOUNT,
    ALICE,
    ALICE_UUID,
    GROUP_ID,
    GROUP_INTERNAL,
    SignalService,
    text_frame,
)
from tests.helpers import MOLTSCHED, query, wait_sync

T = TypeVar("T")
STRANGER = "+33612345678"
STRANGER_UUID = "5e2a9c1f-7d3b-4e8a-b6c0-1a9f4d2e8b75"
ORDERS = ["run:victim", "pause:victim", "resume:victim", "/RUN : victim", "status"]


class Frame(str):
    """A frame's text; its repr is cut, so hypothesis can print a megabyte-sized example."""

    def __repr__(self) -> str:
        text = str(self)
        return repr(text) if len(text) <= 300 else f"{text[:300]!r}... ({len(text)} chars)"


class Bot:
    """The real daemon with Signal, talking to an emulator served from a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = SignalService()
        self.call(self.service.start())
        (root / "tasks").mkdir()
        (root / "tasks" / "victim.sh").write_text("echo ran\n")
        self.config = root / "moltsched.yaml"
        self.config.write_text(
            "tasks:\n"
            '  - {id: victim, script: victim.sh, cron: "0 0 1 1 *"}\n'
            f"signal: {{service: {self.service.service}, account: '{ACCOUNT}', "
            f"admins: ['{ALICE}'], groups: ['{GROUP_ID}'], "
            # About the gate, not the sending rate (tests/test_flood.py is about that).
            "send_per_minute: 600, send_burst: 1000}\n"
        )
        self.log = root / "daemon.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [MOLTSCHED, "--config", str(self.config), "daemon"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=os.environ | {"MOLTSCHED_LOG_LEVEL": "INFO"},
            )
        self.call(self.service.wait_connected(20), timeout=30)
        self.db = root / "state" / "moltsched.db"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def push(self, raw: str) -> None:
        self.call(self.service.push(raw))

    def answers_help(self) -> list[dict[str, Any]]:
        """The admin asks `help`; returns what the bot sent since. The ask is repeated (same
        timestamp, so it counts once) while the bot reconnects after a frame that cost it the
        connection: the service drops what it pushes to nobody."""
        before = len(self.service.sent)
        ask = text_frame("help")
        for _ in range(40):
            self.push(json.dumps(ask))
            try:
                self.call(self.service.wait_sent(before + 1, timeout=0.5), timeout=5)
                break
            except TimeoutError:
                continue
        self.call(asyncio.sleep(0.05))  # anything answered after the help would show here
        return self.service.sent[before:]

    def close(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(20)
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        return code


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    bot = Bot(tmp_path_factory.mktemp("hostile"))
    try:
        yield bot
    finally:
        code = bot.close()
    assert code == 0
    log = bot.log.read_text()
    assert "Traceback" not in log, log[-3000:]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
huge = st.integers(1_000, 1_300_000).map(lambda n: "x" * n)  # the client's limit is 1 MiB
wrong = json_values | huge | st.sampled_from([[ALICE], {"id": ALICE_UUID}, 4917612345678])
orders = st.sampled_from(ORDERS)
stamps = st.integers(0, 10**6)  # far from the live timestamps of the admin's `help`


@st.composite
def stranger_dressed_as_admin(draw: st.DrawFn) -> str:
    """Any stranger's message, with the admin's identity in every field but the two that
    say who sent it; those hold a stranger, nothing, or the wrong type."""
    frame = text_frame(
        draw(orders),
        number=STRANGER,
        uuid=STRANGER_UUID,
        group=draw(st.sampled_from([None, GROUP_INTERNAL])),
        ts=draw(stamps),
    )
    env = frame["envelope"]
    env["sourceNumber"] = draw(st.sampled_from([STRANGER, None, ""]) | wrong)
    env["sourceUuid"] = draw(st.sampled_from([STRANGER_UUID, None, ""]) | wrong)
    for key in ("source", "sourceName", "sourceDevice"):
        env[key] = draw(st.sampled_from([ALICE, ALICE_UUID]) | wrong)
    for key in draw(st.sets(st.sampled_from(["timestamp", "expiresInSeconds", "viewOnce"]))):
        env["dataMessage"][key] = draw(wrong)
    env.update(draw(st.dictionaries(st.text(max_size=12), wrong, max_size=2)))
    return json.dumps(frame, ensure_ascii=False)


@st.composite
def admin_but_not_a_message(draw: st.DrawFn) -> str:
    """From the admin, but a reaction, receipt, typing, story, call, an unknown kind, a
    transcript of what the owner wrote to someone else, or for another account. (An edit of
    an admin's command is answered with a word to send it anew: tests/test_signal_e2e.)"""
    order = draw(orders)
    kind = draw(
        st.sampled_from(
            [
                "receiptMessage",
                "typingMessage",
                "storyMessage",
                "callMessage",
                "syncMessage",
            ]
        )
        | st.text(min_size=1, max_size=20).filter(lambda k: k not in ("dataMessage", "editMessage"))
    )
    frame = text_frame(order, ts=draw(stamps))
    env = frame["envelope"]
    body = env.pop("dataMessage")
    if kind == "syncMessage":
        env[kind] = {"sentMessage": {**body, "destination": ALICE, "destinationNumber": ALICE}}
    else:
        env[kind] = draw(st.just(body) | wrong)
    if draw(st.booleans()):
        env["dataMessage"] = draw(
            st.sampled_from(
                [
                    {"reaction": {"emoji": "👍", "targetAuthor": ACCOUNT}, "message": order},
                    {"remoteDelete": {"timestamp": 1}, "message": order},
                    {"message": order, "groupInfo": {"groupId": GROUP_INTERNAL, "type": "UPDATE"}},
                    {"message": [order]},
                    {"message": {"text": order}},
                ]
            )
        )
    if draw(st.booleans()):  # for another account (a frame with none is for this one)
        other = st.sampled_from(["+4915100000000", ""]) | wrong
        frame["account"] = draw(other.filter(lambda a: a not in (None, ACCOUNT)))
        env["dataMessage"] = {"message": order}
    return json.dumps(frame, ensure_ascii=False)


@st.composite
def truncated(draw: st.DrawFn) -> str:
    """An admin's order, cut off anywhere before its end: never valid JSON."""
    text = json.dumps(text_frame(draw(orders), ts=draw(stamps)))
    return text[: draw(st.integers(0, len(text) - 1))]


frames = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=200),
    truncated(),
    stranger_dressed_as_admin(),
    admin_but_not_a_message(),
).map(Frame)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(frames, min_size=1, max_size=8))
def test_hostile_frames_run_nothing_and_the_bot_keeps_answering(
    bot: Bot, batch: list[Frame]
) -> None:
    changes = "SELECT COUNT(*) FROM log WHERE action IN ('command', 'started', 'paused')"
    (before,) = query(bot.db, changes)
    for raw in batch:
        bot.push(raw)
    answered = bot.answers_help()
    assert [m["message"].split("\n")[0] for m in answered] == ["Commands:"], answered
    assert answered[0]["recipients"] == [ALICE_UUID]
    assert query(bot.db, changes) == [before]  # no order was taken, nothing started
    assert bot.proc.poll() is None


def test_after_the_barrage_nothing_ran_and_strangers_were_logged(bot: Bot) -> None:
    """Runs after the property test (same module, same daemon)."""
    bot.push(json.dumps(text_frame("run:victim", number=STRANGER, uuid=STRANGER_UUID)))
    assert bot.answers_help()[0]["message"].startswith("Commands:")
    wait_sync(lambda: query(bot.db, "SELECT COUNT(*) FROM log WHERE action = 'denied'")[0][0] > 0)
    assert query(bot.db, "SELECT run_count, status FROM task WHERE id = 'victim'") == [(0, "idle")]
    assert query(bot.db, "SELECT COUNT(*) FROM run") == [(0,)]
    # Megabytes of junk in the sender's fields do not flood the log or the audit trail.
    longest = query(bot.db, "SELECT MAX(LENGTH(message)), MAX(LENGTH(actor)) FROM log")[0]
    assert max(longest) < 300, longest
    assert bot.log.stat().st_size < 200_000
