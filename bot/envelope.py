"""Who may command, decided on the raw websocket frame (DESIGN.md section 7). Pure.

signalbot reports a sync transcript of a message the owner sent to Alice as a message *from
Alice*, so the decision is made here, on the envelope itself, before signalbot sees it:

- a data message with text from an admin (number or UUID) in a private chat: a command;
- the same in a group listed in `signal.groups` (by `group.…` id or internal id): a command;
- a sync transcript whose destination is the bot's own account (Note to Self): the owner, a
  command, answered in Note to Self;
- a sync transcript of what the owner sent to someone else or to a group: never a command;
- an edit of a message that would be a command: `edited`, answered with a word to send it
  again (an edit is never run: it may be of a command that ran);
- reactions, remote deletes, group updates, receipts, typing, stories, calls and exception
  frames: nothing at all; but an exception frame of an admin's message (signal-cli could not
  read it: a new phone, an untrusted identity) is `unreadable`, to be logged;
- anyone else: `denied` (no answer; the attempt is logged).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from scheduler_core.record import Record


class Verdict(StrEnum):
    COMMAND = "command"
    DENIED = "denied"
    IGNORE = "ignore"
    UNREADABLE = "unreadable"  # an admin's message signal-cli could not read
    EDITED = "edited"  # an edit of what would be a command: answered, never run


class Decision(Record):
    verdict: Verdict
    text: str = ""
    reply_to: str = ""  # a number, a UUID, or a `group.…` id
    sender: str = ""
    key: tuple[str, int] = ("", 0)  # (sender, timestamp): the same message twice runs once
    why: str = ""


IGNORE = Decision(Verdict.IGNORE)


def group_rest_id(internal_id: str) -> str:
    """`group.` + base64 of the internal id, as signal-cli-rest-api names groups."""
    return "group." + base64.b64encode(internal_id.encode()).decode()


def group_internal_id(group: str) -> str:
    """The internal id of a group given either way."""
    if group.startswith("group."):
        try:
            return base64.b64decode(group[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return group
    return group


class Gate:
    """Applies the rules for one account, its admins and its groups."""

    def __init__(self, account: str, admins: Iterable[str], groups: Iterable[str]) -> None:
        self.account = account
        self.admins = frozenset(admins)
        self.groups = frozenset(group_internal_id(g) for g in groups)

    def decide(self, raw: str) -> Decision:
        try:
            frame = json.loads(raw)
        except ValueError:
            return Decision(Verdict.IGNORE, why="not JSON")
        if not isinstance(frame, dict) or not isinstance(frame.get("envelope"), dict):
            return Decision(Verdict.IGNORE, why="no envelope")
        if frame.get("account") not in (None, self.account):
            return Decision(Verdict.IGNORE, why="another account")
        env: dict[str, Any] = frame["envelope"]
        # Only the two authoritative fields say who sent it; `source` and the rest are not
        # trusted for that (a property test spoofs every other field).
        number = _str(env.get("sourceNumber"))
        uuid = _str(env.get("sourceUuid"))
        # Shown in the log and the audit trail: a stranger's junk must not flood them.
        sender = _short(uuid or number or _str(env.get("source")))
        raw_stamp = env.get("timestamp")
        stamp = raw_stamp if isinstance(raw_stamp, int) else 0
        failed = frame.get("exception")
        if isinstance(failed, dict):
            if not self._is_admin(number, uuid):
                return Decision(Verdict.IGNORE, why="unreadable, not from an admin")
            what = f"{_short(_str(failed.get('type')))}: {_short(_str(failed.get('message')))}"
            return Decision(Verdict.UNREADABLE, sender=sender, why=what)
        data = env.get("dataMessage")
        sync = env.get("syncMessage")
        if isinstance(data, dict):
            return self._data(data, number, uuid, sender, stamp)
        if isinstance(sync, dict) and isinstance(sync.get("sentMessage"), dict):
            return self._note_to_self(sync["sentMessage"], number, uuid, stamp)
        edit = env.get("editMessage")
        if isinstance(edit, dict) and isinstance(edit.get("dataMessage"), dict):
            return _edited(self._data(edit["dataMessage"], number, uuid, sender, stamp))
        return Decision(Verdict.IGNORE, why="not a text message")

    def _is_admin(self, number: str, uuid: str) -> bool:
        return bool((number and number in self.admins) or (uuid and uuid in self.admins))

    def _data(
        self, data: dict[str, Any], number: str, uuid: str, sender: str, stamp: int
    ) -> Decision:
        text = data.get("message")
        if any(data.get(k) for k in ("reaction", "remoteDelete")) or not isinstance(text, str):
            return Decision(Verdict.IGNORE, why="no text")
        group = data.get("groupInfo")
        key = (sender, stamp)
        if isinstance(group, dict):
            if group.get("type") == "UPDATE":
                return Decision(Verdict.IGNORE, why="group update")
            gid = _str(group.get("groupId"))
            if gid in self.groups and self._is_admin(number, uuid):
                return Decision(Verdict.COMMAND, text, group_rest_id(gid), sender, key)
            return Decision(Verdict.DENIED, text, "", sender, key, f"in group {_short(gid)}")
        if self._is_admin(number, uuid):
            return Decision(Verdict.COMMAND, text, uuid or number, sender, key)
        return Decision(Verdict.DENIED, text, "", sender, key, "private")

    def _note_to_self(self, sent: dict[str, Any], number: str, uuid: str, stamp: int) -> Decision:
        if sent.get("reaction") or sent.get("remoteDelete"):
            return Decision(Verdict.IGNORE, why="sync of a reaction or a deletion")
        edit = sent.get("editMessage")
        if edit:  # its text is in the edit, beside the transcript's destination
            inner = edit.get("dataMessage") if isinstance(edit, dict) else None
            if not isinstance(inner, dict):
                return Decision(Verdict.IGNORE, why="sync of an edit without its message")
            sent = {k: v for k, v in sent.items() if k != "editMessage"} | inner
            return _edited(self._note_to_self(sent, number, uuid, stamp))
        if sent.get("groupInfo"):
            return Decision(Verdict.IGNORE, why="the owner wrote to a group")
        destination = {_str(sent.get(k)) for k in ("destination", "destinationNumber")}
        if self.account not in destination:
            return Decision(Verdict.IGNORE, why="the owner wrote to someone else")
        if number != self.account:
            return Decision(Verdict.IGNORE, why="a sync not from the bot's own account")
        text = sent.get("message")
        if not isinstance(text, str):
            return Decision(Verdict.IGNORE, why="no text")
        owner = uuid or self.account
        return Decision(Verdict.COMMAND, text, self.account, owner, (owner, stamp), "note to self")


def _edited(decision: Decision) -> Decision:
    """What an edit is, given what its message would have been: a command's edit is answered
    (an admin who fixed a typo in place hears why nothing happens); anyone else's, nothing."""
    if decision.verdict is Verdict.COMMAND:
        return decision._replace(verdict=Verdict.EDITED)
    return Decision(Verdict.IGNORE, why="an edit")


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _short(text: str, limit: int = 80) -> str:
    """At most `limit` characters of `text`, marked when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
