"""Answer one request, the same way for the control socket and for the CLI with no daemon.

A request is `{"command": {...}}` (from the CLI's arguments) or `{"chat": TEXT}`, with `json`
and `actor`. The answer is metadata (`exit`, `err`) and the text to print, piece by piece.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

from commands.chat import converse
from commands.command import Pause, Resume, Run, RunAll, from_wire
from commands.execute import Context, execute
from commands.grammar import ParseError, parse
from commands.reply import EXIT_USAGE, output, render
from scheduler_core.safe import safe_text
from scheduler_core.scheduler import Scheduler

Answer = tuple[dict[str, Any], AsyncIterator[str]]


def runs_tasks(request: dict[str, Any]) -> bool:
    """Whether the request may start or stop runs (so, without a daemon, needs the lock)."""
    if "chat" in request:
        try:
            cmd = parse(str(request["chat"]))
        except ParseError:
            return False
    else:
        try:
            cmd = from_wire(request["command"])
        except (KeyError, TypeError, ValueError):
            return False
    return isinstance(cmd, Run | RunAll | Pause | Resume)


async def respond(
    request: dict[str, Any],
    scheduler: Scheduler,
    zone: ZoneInfo,
    *,
    daemon: bool,
    signal_connected: bool | None = None,
) -> Answer:
    """The answer to `request`."""
    actor = str(request.get("actor") or "cli")[:100]
    as_json = bool(request.get("json"))
    ctx = Context(
        scheduler, zone, daemon, actor=actor, json=as_json, signal_connected=signal_connected
    )
    if "chat" in request:
        return {"err": "", "exit": 0}, _chat(str(request["chat"]), ctx, as_json)
    try:
        cmd = from_wire(request["command"])
    except (KeyError, TypeError, ValueError) as exc:
        return {"err": f"bad request: {exc}\n", "exit": EXIT_USAGE}, _nothing()
    reply = await execute(cmd, ctx)
    _, err = render(reply, as_json)
    return {"err": err, "exit": reply.exit_code}, output(reply, as_json)


async def _chat(text: str, ctx: Context, as_json: bool) -> AsyncIterator[str]:
    if as_json:
        replies = [reply.text async for reply in converse(text, ctx)]
        yield json.dumps({"replies": replies}, ensure_ascii=False) + "\n"
        return
    async for reply in converse(text, ctx):
        yield safe_text(reply.text) + "\n"


async def _nothing() -> AsyncIterator[str]:
    return
    yield
