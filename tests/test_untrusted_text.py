"""Untrusted text is made harmless wherever it reaches a person: terminal sequences, OSC 8
links, control characters and bidi overrides in task output never reach the owner's terminal
or phone; JSON output stays exact."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from scheduler_core.safe import safe_text
from support.signal_service import ACCOUNT, ALICE, SignalService, answers, text_frame
from tests.helpers import MOLTSCHED, acli, wait_for

# What a hostile or careless task prints: colours, a title change, an OSC 8 link that shows
# one address and opens another, a cursor move that overwrites the line before, a bell, a
# right-to-left override that turns "exe.txt" around, a C1 CSI.
HOSTILE = (
    "\x1b[31mred\x1b[0m \x1b]0;pwned\x07 \x1b]8;;https://evil.example/\x07https://bank.example"
    "\x1b]8;;\x07 \x1b[1A\x1b[2K \x07 invoice\u202etxt.exe \x9b31m the end"
)
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_nothing_unsafe_survives_and_safe_text_is_left_alone(text: str) -> None:
    out = safe_text(text)
    assert not UNSAFE.search(out)
    assert safe_text(out) == out
    if not UNSAFE.search(text) and "\r" not in text:
        assert out == text


def test_the_hostile_line_keeps_its_words() -> None:
    out = safe_text(HOSTILE)
    assert "\x1b" not in out and "evil.example" not in out and "\u202e" not in out
    assert out.startswith("red ") and "https://bank.example" in out and out.endswith("the end")


async def test_task_output_through_cli_and_signal(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    script = f"printf '%s\\n' {shlex.quote(HOSTILE)} >&2\nexit 3\n"
    (tmp_path / "tasks" / "evil.sh").write_text(script)
    config = tmp_path / "moltsched.yaml"
    async with SignalService() as service:
        config.write_text(
            "tasks:\n"
            "  - {id: evil, script: evil.sh, cron: '0 0 1 1 *'}\n"
            f"signal:\n  service: {service.service}\n  account: '{ACCOUNT}'\n"
            f"  admins: ['{ALICE}']\n"
        )
        with open(tmp_path / "daemon.log", "wb") as log:  # noqa: ASYNC230 - before any work
            proc = await asyncio.create_subprocess_exec(
                MOLTSCHED, "--config", str(config), "daemon", stderr=log
            )
        try:
            await service.wait_connected(20)
            # JSON is exact: the agent sees what the task printed.
            run = await acli("--json", "run", "evil", config=config)
            assert run.returncode == 1 and json.loads(run.stdout)["stderr"] == HOSTILE + "\n"
            for args in (("run", "evil"), ("status", "evil"), ("logs",), ("chat", "status:evil")):
                shown = await acli(*args, config=config)
                assert not UNSAFE.search(shown.stdout + shown.stderr), (args, shown.stdout)
                assert "bank.example" in shown.stdout + shown.stderr, (args, shown.stdout)
            # The alert and a chat answer on the phone.
            await wait_for(lambda: len(service.sent) >= 1, 20)
            replies = await answers(service, text_frame("status:evil"))
            for message in [*service.sent, *replies]:
                assert not UNSAFE.search(message["message"]), message["message"]
            assert "bank.example" in service.sent[0]["message"]
        finally:
            proc.terminate()
            assert await proc.wait() == 0
