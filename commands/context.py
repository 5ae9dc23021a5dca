"""What a command runs against, and who asked: the context `execute` and its handlers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from commands.reply import Reply
from scheduler_core.reads import Reads
from scheduler_core.record import Record

if TYPE_CHECKING:
    from scheduler_core.scheduler import Scheduler


class Context(Record):
    """What a command runs against, and who asked."""

    # The scheduler; for a read with no daemon up, the tasks alone (see scheduler_core.reads).
    tasks: Reads
    zone: ZoneInfo
    daemon: bool
    actor: str = "cli"
    # The process that asked (over the control socket): a run's, when a task asks for a run.
    caller_pid: int | None = None
    # Whether the caller will print the JSON value (so large text need not be built) or the text.
    json: bool = False
    # A chat: answers are cut to phone size, and `run` acknowledges at once through `notify`.
    chat: bool = False
    notify: Callable[[Reply], Awaitable[None]] | None = None
    # None: no Signal configured; else whether it is connected now.
    signal_connected: bool | None = None
    # With no daemon answering, one that holds the state anyway: its pid, and "starting",
    # "stopping" or "not answering" (its control socket is gone).
    holder: tuple[int, str] | None = None
    # With no daemon: the pid of a foreground `moltsched run` that holds the state; its runs
    # are that process's alone to stop.
    foreground: int | None = None
    # A daemon's: what to add to "unknown task" when its configuration file has the task now
    # (edited, not reloaded yet); "" when it does not.
    unloaded: Callable[[str], Awaitable[str]] | None = None

    @property
    def daemon_state(self) -> str:
        """What `status` says of the daemon: running, not running, or the holder's state."""
        if self.daemon:
            return "running"
        return "not running" if self.holder is None else self.holder[1]

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler, for what starts, plans, stops or holds runs."""
        from scheduler_core.scheduler import Scheduler

        if not isinstance(self.tasks, Scheduler):
            raise TypeError("a command that changes runs was given the tasks alone")
        return self.tasks


CHAT_LINES = 25  # a phone screen or two; longer answers are cut with a note
