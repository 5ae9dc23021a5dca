"""Answer one request, the same way for the control socket and for the CLI with no daemon.

A request is a `commands.command.Request`. The answer is metadata (`exit`, `err`) and the
text to print, piece by piece: one shape for every command.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.failure import EXIT_USAGE
from commands.chat import converse
from commands.command import (
    Chat,
    Command,
    Help,
    Logs,
    Output,
    Pause,
    Request,
    Resume,
    Run,
    RunAll,
    Status,
)
from commands.context import Context
from commands.execute import execute
from commands.grammar import ParseError, parse
from commands.match import find_task
from commands.reply import output, render
from config.loader import ConfigError, load_config
from scheduler_core.errors import TaskNotFoundError
from scheduler_core.reads import Reads
from scheduler_core.safe import safe_text

Answer = tuple[dict[str, Any], AsyncIterator[str]]


def runs_tasks(command: Command) -> bool:
    """Whether the command may start or stop runs (so, without a daemon, needs the lock)."""
    return isinstance(_meant(command), Run | RunAll | Pause | Resume)


def only_reads(command: Command) -> bool:
    """Whether the command only reads (so, without a daemon, needs the tasks alone: see
    scheduler_core.reads); a chat message that is not a command is answered as a read."""
    return isinstance(_meant(command), Status | Logs | Output | Help | Chat)


def unloaded_in(path: Path) -> Callable[[str], Awaitable[str]]:
    """A daemon's `Context.unloaded`: its configuration file (read again only if it changed,
    see `config.cache`) has a task the daemon does not know, added and not reloaded yet."""

    def in_file() -> dict[str, object]:
        if not path.is_file():  # a pipe (`sops exec-file`) is read once, by the daemon's load
            return {}
        return {t.id: t for t in load_config(path).tasks}

    async def unloaded(task_id: str) -> str:
        try:
            task = find_task(task_id, await asyncio.to_thread(in_file))
        except (ConfigError, OSError, TaskNotFoundError):
            return ""
        return (
            f"; {task} is in the configuration file, but the daemon has not loaded it since "
            "the file changed: `moltsched reload` loads it"
        )

    return unloaded


def _meant(command: Command) -> Command:
    """The command a chat message asks for (itself if it asks for none)."""
    if isinstance(command, Chat):
        try:
            return parse(command.text)
        except ParseError:
            return command
    return command


async def respond(
    request: Request,
    tasks: Reads,
    zone: ZoneInfo,
    *,
    daemon: bool,
    signal_connected: bool | None = None,
    holder: tuple[int, str] | None = None,
    unloaded: Callable[[str], Awaitable[str]] | None = None,
    foreground: int | None = None,
) -> Answer:
    """The answer to `request` (`holder`, `unloaded`, `foreground`: see Context)."""
    ctx = Context(
        tasks,
        zone,
        daemon,
        actor=request.actor[:100],
        caller_pid=request.pid,
        json=request.json,
        signal_connected=signal_connected,
        holder=holder,
        unloaded=unloaded,
        foreground=foreground,
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


def reloaded(code: int, message: str, warnings: list[str], *, as_json: bool) -> Answer:
    """The answer to `moltsched reload`: the daemon's verdict (exit 2: the file was
    rejected; 1: the reload failed), with what `validate` would warn of in new tasks."""
    if as_json:
        body = {"reloaded": code == 0, "daemon": True, "message": message, "warnings": warnings}
        if code:
            body |= {"error": message, "kind": "config" if code == EXIT_USAGE else "internal"}
        return {"err": message + "\n" if code else "", "exit": code}, lines(json.dumps(body))
    if code:
        return {"err": message + "\n", "exit": code}, nothing()
    return {"err": "", "exit": 0}, lines("\nwarning: ".join([message, *warnings]))


async def lines(text: str) -> AsyncIterator[str]:
    yield text + "\n"


async def nothing() -> AsyncIterator[str]:
    return
    yield
