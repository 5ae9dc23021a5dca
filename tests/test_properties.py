"""Hostile input, property-based (hypothesis): no crash, nothing runs that an admin did not ask.

The chat grammar on any text; the Signal gate on any JSON and on envelopes with spoofed
fields; the configuration loader on any file. Each may answer "no" in its own way (ParseError,
IGNORE/DENIED, ConfigError), never with anything else.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.envelope import Gate, Verdict
from commands.command import Help, Logs, Pause, Resume, Run, Status
from commands.grammar import ParseError, parse
from config.loader import AppConfig, ConfigError, load_config
from tests.helpers import MOLTSCHED

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


def _bomb() -> str:
    """A billion laughs: nine aliases of nine aliases of ..., tiny on disk, huge expanded."""
    text, prev = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n', "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
        prev = name
    return text


HOSTILE_FILES: dict[str, str | bytes] = {
    "deep.json": "[" * 100_000 + "]" * 100_000,
    "deep.yaml": "tasks: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "bomb.yaml": _bomb() + "tasks: *i\n",
    "bomb-env.yaml": _bomb() + "tasks: [{id: x, command: [true], every: 1m, env: *i}]\n",
    "binary.yaml": bytes(range(256)) * 16,
    "latin1.yaml": 'tasks: []\nstate_dir: "caf\xe9"\n'.encode("latin-1"),
    "nul.json": '{"tasks": [\x00]}',
    "huge-key.yaml": "x" * 1_000_000 + ": 1\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_moltsched_validate_answers_hostile_files_with_their_problems(
    tmp_path: Path, name: str
) -> None:
    """The real CLI, as a user would run it: exit 2, the problems, never a traceback, and
    soon (a billion laughs is not expanded)."""
    path = tmp_path / name
    content = HOSTILE_FILES[name]
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = subprocess.run(
        [MOLTSCHED, "--config", str(path), "validate"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "problem" in result.stderr
    assert len(result.stderr) < 20_000  # the problems, not the file echoed back
