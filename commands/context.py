"""What a command runs against, and who asked: the context `execute` and its handlers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from commands.reply import Reply
from scheduler_core.scheduler import Scheduler


@dataclass(frozen=True)
class Context:
    """What a command runs against, and who asked."""

    scheduler: Scheduler
    zone: ZoneInfo
    daemon: bool
    actor: str = "cli"
    # Whether the caller will print the JSON value (so large text need not be built) or the text.
    json: bool = False
    # A chat: answers are cut to phone size, and `run` acknowledges at once through `notify`.
    chat: bool = False
    notify: Callable[[Reply], Awaitable[None]] | None = None
    # None: no Signal configured; else whether it is connected now.
    signal_connected: bool | None = None


CHAT_LINES = 25  # a phone screen or two; longer answers are cut with a note
