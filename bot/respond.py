"""Answer one request, the same way for the control socket and for the CLI with no daemon.

A request is a `commands.command.Request`. The answer is metadata (`exit`, `err`) and the
text to print, piece by piece: one shape for every command.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

from commands.chat import converse
from commands.command import Chat, Command, Pause, Request, Resume, Run, RunAll
from commands.context import Context
from commands.execute import execute
from commands.grammar import ParseError, parse
from commands.reply import output, render
from scheduler_core.safe import safe_text
from scheduler_core.scheduler import Scheduler

Answer = tuple[dict[str, Any], AsyncIterator[str]]


def runs_tasks(command: Command) -> bool:
    """Whether the command may start or stop runs (so, without a daemon, needs the lock)."""
    if isinstance(command, Chat):
        try:
            command = parse(command.text)
        except ParseError:
            return False
    return isinstance(command, Run | RunAll | Pause | Resume)


async def respond(
    request: Request,
    scheduler: Scheduler,
    zone: ZoneInfo,
    *,
    daemon: bool,
    signal_connected: bool | None = None,
) -> Answer:
    """The answer to `request`."""
    ctx = Context(
        scheduler,
        zone,
        daemon,
        actor=request.actor[:100],
        json=request.json,
        signal_connected=signal_connected,
    )
    if isinstance(request.command, Chat):
        return {"err": "", "exit": 0}, _chat(request.command.text, ctx, request.json)
    reply = await execute(request.command, ctx)
    _, err = render(reply, request.json)
    return {"err": err, "exit": reply.exit_code}, output(reply, request.json)


async def _chat(text: str, ctx: Context, as_json: bool) -> AsyncIterator[str]:
    if as_json:
        replies = [reply.text async for reply in converse(text, ctx)]
        yield json.dumps({"replies": replies}, ensure_ascii=False) + "\n"
        return
    async for reply in converse(text, ctx):
        yield safe_text(reply.text) + "\n"
