"""Hostile input, property-based (hypothesis): no crash, nothing runs that an admin did not ask.

The chat grammar on any text; the Signal gate on any JSON and on envelopes with spoofed
fields; the configuration loader on any file. Each may answer "no" in its own way (ParseError,
IGNORE/DENIED, ConfigError), never with anything else.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.envelope import Gate, Verdict
from commands.command import Help, Logs, Pause, Resume, Run, Status
from commands.grammar import ParseError, parse
from config.loader import AppConfig, ConfigError, load_config

ACCOUNT = "+4915123456789"
ADMIN = "+4917612345678"
ADMIN_UUID = "3f9c2a7e-1b4d-4c8a-8e2f-6d5b9a0c7e14"
GROUP = "Wf9rb83WjcHkMvBfww+0wYQILHLZDEcOAShE6aK3RwM="
GATE = Gate(ACCOUNT, [ADMIN, ADMIN_UUID], [GROUP])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_the_grammar_answers_anything_with_a_command_or_a_short_no(text: str) -> None:
    try:
        cmd = parse(text)
    except ParseError as exc:
        assert 0 < len(str(exc)) < 700
        return
    assert isinstance(cmd, Status | Run | Pause | Resume | Logs | Help)
    task = getattr(cmd, "task", None)
    if task is not None:
        assert 0 < len(task) <= 200
        assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in task)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_gate_survives_any_json(value: Any) -> None:
    decision = GATE.decide(json.dumps(value))
    assert decision.verdict in (Verdict.IGNORE, Verdict.DENIED)  # no envelope, no command


senders = st.sampled_from([None, "", "+33612345678", "+12065550188", "not a number", ACCOUNT])
uuids = st.sampled_from([None, "", "9d4f1b7a-2c8e-4a6d-b3f9-7e1c5a0d2b86", "x"])


@settings(max_examples=500, deadline=None)
@given(
    number=senders,
    uuid=uuids,
    source=st.sampled_from([None, ADMIN, ADMIN_UUID, "+33612345678"]),
    name=st.sampled_from([None, ADMIN, "Alice"]),
    kind=st.sampled_from(
        [
            "dataMessage",
            "editMessage",
            "syncMessage",
            "typingMessage",
            "receiptMessage",
            "storyMessage",
            "callMessage",
        ]
    ),
    group=st.sampled_from([None, GROUP, "other"]),
    destination=st.sampled_from([None, ADMIN, "+33612345678", ADMIN_UUID, ACCOUNT]),
    text=st.sampled_from(["run:x", "status", "", None, 5]),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_spoofed_envelopes_never_command(
    number: str | None,
    uuid: str | None,
    source: str | None,
    name: str | None,
    kind: str,
    group: str | None,
    destination: str | None,
    text: Any,
    extra: dict[str, Any],
) -> None:
    """A stranger (by number and UUID) cannot become an admin by any other field: `source`,
    `sourceName`, the group, a sync transcript's destination, or extra keys."""
    content: dict[str, Any] = {"message": text, **extra}
    if group:
        content["groupInfo"] = {"groupId": group, "type": "DELIVER"}
    if kind == "syncMessage":
        body: Any = {"sentMessage": {**content, "destination": destination}}
    else:
        body = content
    envelope = {
        "source": source,
        "sourceNumber": number,
        "sourceUuid": uuid,
        "sourceName": name,
        "timestamp": 1,
        kind: body,
    }
    decision = GATE.decide(json.dumps({"envelope": envelope, "account": ACCOUNT}))
    if decision.verdict is Verdict.COMMAND:
        # Only one way for a non-admin frame to command: the owner's own Note to Self, a sync
        # transcript from the bot's own account addressed to that account.
        assert kind == "syncMessage" and number == ACCOUNT and destination == ACCOUNT, decision


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=400), json_values.map(json.dumps)))
def test_the_config_loader_answers_any_file_with_a_config_or_its_problems(text: str) -> None:
    with tempfile.TemporaryDirectory() as td:
        for name in ("c.yaml", "c.json"):
            path = Path(td) / name
            path.write_text(text, encoding="utf-8")
            try:
                assert isinstance(load_config(path), AppConfig)
            except ConfigError as exc:
                assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
