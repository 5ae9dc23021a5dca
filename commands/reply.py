"""Replies: text for a phone or a terminal, a JSON value for the agent, and an exit code."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler_core.checkpoint import too_deep
from scheduler_core.record import Record
from scheduler_core.safe import safe_text

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_STATE = 3  # the scheduler's state cannot be reached


_encode = json.JSONEncoder(ensure_ascii=False).encode


def encode_json(value: Any) -> str:
    """Compact JSON text (the C encoder; `indent` would fall back to pure Python)."""
    return _encode(value)


class LateFailure(Exception):
    """What a streamed answer (`Reply.chunks`) raises when the database fails after its first
    piece: its last piece has ended it in its form (a JSON document whole, with `error` and
    `kind` where it can hold them) and said what failed; the front end exits EXIT_STATE.
    A failure before the first piece is an answer of its own (see `bot.control`)."""


class Reply(Record):
    """What a command answers."""

    text: str
    data: Any = None
    exit_code: int = EXIT_OK
    error: bool = False
    # For big answers (`status --json` with 10,000 tasks, `logs -n 100000`): what to print,
    # made piece by piece in the form asked for (JSON, or text made safe for a terminal) in
    # place of `data` and `text`, so it never sits in memory whole. Front ends use `output()`.
    chunks: AsyncIterator[str] | None = None


def usage_error(message: str, data: Any = None) -> Reply:
    """A reply for a command that cannot be carried out as asked (exit 2)."""
    payload = data if data is not None else {"error": message, "kind": "usage"}
    return Reply(message, payload, EXIT_USAGE, error=True)


def iso(when: datetime | None, zone: ZoneInfo) -> str | None:
    """ISO 8601 with offset, in the configured zone."""
    return None if when is None else when.astimezone(zone).isoformat(timespec="seconds")


def short_time(when: datetime | None, zone: ZoneInfo, now: datetime) -> str:
    """`14:05` today, `Tue 14:05` within a week, else `2026-11-26 14:05`."""
    if when is None:
        return "-"
    local = when.astimezone(zone)
    today = now.astimezone(zone).date()
    if local.date() == today:
        return (
            local.strftime("%H:%M:%S")
            if abs((when - now).total_seconds()) < 600
            else local.strftime("%H:%M")
        )
    if abs((local.date() - today).days) < 7:
        return local.strftime("%a %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def next_time(when: datetime | None, zone: ZoneInfo, now: datetime, why: str = "") -> str:
    """A next run as `short_time` says it, marked when it has passed (with no daemon, or a run
    waiting for a slot): a past time read as one still to come, or as one done."""
    text = short_time(when, zone, now)
    if when is not None and (now - when).total_seconds() >= 1:
        text += f" (overdue{why})"
    return text


_UUID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_NUMBER = re.compile(r"\+\d{6,}(\d{4})\b")


def shorten_ids(text: str) -> str:
    """Signal ids cut to what a person tells apart on a phone: a UUID to its first 8
    characters, a phone number to its last four digits (`…5678`)."""
    return _NUMBER.sub(r"…\1", _UUID.sub(r"\1…", text))


def short_actor(actor: str | None) -> str:
    """`signal:+4917612345678` as `…5678`, `cli:alice` as `alice`."""
    if not actor:
        return ""
    kind, _, who = actor.partition(":")
    if kind == "cli" and who:
        return who
    return shorten_ids(who or actor)


def parse_checkpoint(text: str | None) -> Any:
    """A stored checkpoint as a JSON value (its raw text if it is somehow not JSON, or nested
    deeper than a checkpoint may be)."""
    if text is None:
        return None
    if too_deep(text):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def checkpoint_text(value: Any) -> str:
    """A checkpoint as `checkpoint show` prints it for a person."""
    return "no checkpoint" if value is None else json.dumps(value, indent=2)


def tail_lines(text: str, lines: int = 5, width: int = 200) -> list[str]:
    """The last few non-empty lines of some output, each cut to `width`."""
    kept = [ln.rstrip()[:width] for ln in text.splitlines() if ln.strip()]
    return kept[-lines:]


def render(reply: Reply, as_json: bool) -> tuple[str, str]:
    """What to print on stdout and on stderr for a reply. Text for a person is made safe for
    a terminal (`safe_text`); JSON is exact. A failure's line on stderr starts `moltsched: `,
    as every failure of the command line does (`bot.failure.fail`)."""
    text = safe_text(reply.text) + "\n" if reply.text else ""  # a save says nothing
    err = f"moltsched: {text}" if reply.error and text else ""
    if as_json:
        return encode_json(reply.data) + "\n", err
    if reply.error:
        return "", err
    return text, ""


async def output(reply: Reply, as_json: bool) -> AsyncIterator[str]:
    """What to print on stdout, piece by piece (one piece unless the reply streams)."""
    if reply.chunks is not None:
        async for chunk in reply.chunks:
            yield chunk
        yield "\n"
        return
    out, _ = render(reply, as_json)
    if out:
        yield out
