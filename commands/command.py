"""The commands, as small frozen records, and the one request type that carries one over
the control socket as JSON: the CLI builds a `Request` and the daemon reads it back with the
same code (`to_wire` / `from_wire`), for every command, chat, reload and ping alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, get_args

from scheduler_core.record import Record


class Status(Record):
    """Every task's state, or one task's in detail."""

    verb: ClassVar[str] = "status"
    task: str | None = None


class Run(Record):
    """Run a task now (on demand) and wait for its result."""

    verb: ClassVar[str] = "run"
    task: str


class RunLater(Record):
    """A one-shot run later: `when` is `in 20m`, `at 18:00` or `at` an ISO date-time."""

    verb: ClassVar[str] = "run-later"
    task: str
    when: str


class Cancel(Record):
    """Remove a task's pending one-shot runs and retries."""

    verb: ClassVar[str] = "cancel"
    task: str


class Stop(Record):
    """End a task's current run now; its schedule stays."""

    verb: ClassVar[str] = "stop"
    task: str


class RunAll(Record):
    """Run every task that is due now."""

    verb: ClassVar[str] = "run-all"


class Pause(Record):
    """No scheduled runs until resumed; a running run is interrupted."""

    verb: ClassVar[str] = "pause"
    task: str


class Resume(Record):
    """Scheduled again; an interrupted run goes on from its checkpoint at once."""

    verb: ClassVar[str] = "resume"
    task: str


class Help(Record):
    """The short help."""

    verb: ClassVar[str] = "help"


class Logs(Record):
    """The newest action-log entries, newest first."""

    verb: ClassVar[str] = "logs"
    task: str | None = None
    limit: int = 20


class Output(Record):
    """What a run printed: the tails of its stdout and stderr (the newest run by default)."""

    verb: ClassVar[str] = "output"
    task: str
    run_id: int | None = None


class Checkpoint(Record):
    """Read (`show`), replace (`save`, with `value` as JSON text) or clear a checkpoint."""

    verb: ClassVar[str] = "checkpoint"
    action: str
    task: str
    value: str | None = None


class Chat(Record):
    """A message as an admin would send it on Signal; answered as the bot answers."""

    verb: ClassVar[str] = "chat"
    text: str


class Reload(Record):
    """Re-read the configuration (as SIGHUP does); the answer says whether it was taken."""

    verb: ClassVar[str] = "reload"


class Ping(Record):
    """Is a daemon there? (Answered with its pid.)"""

    verb: ClassVar[str] = "ping"


Command = (
    Status
    | Run
    | RunLater
    | Cancel
    | Stop
    | RunAll
    | Pause
    | Resume
    | Logs
    | Output
    | Checkpoint
    | Help
    | Chat
    | Reload
    | Ping
)

_BY_VERB: dict[str, type[Command]] = {c.verb: c for c in get_args(Command)}


def to_wire(cmd: Command) -> dict[str, Any]:
    """The command as a JSON object: `{"verb": ..., fields...}`."""
    return {"verb": cmd.verb, **cmd._asdict()}


def from_wire(data: dict[str, Any]) -> Command:
    """The command a JSON object describes; ValueError if it describes none."""
    fields = dict(data)
    verb = fields.pop("verb", None)
    cls = _BY_VERB.get(verb) if isinstance(verb, str) else None
    if cls is None:
        raise ValueError(f"unknown command {verb!r}")
    kinds = {name: str(cls.__annotations__[name]) for name in cls._fields}
    for name, value in fields.items():
        kind = kinds.get(name, "")
        fits = (
            (value is None and "None" in kind)
            or (isinstance(value, str) and "str" in kind)
            or (isinstance(value, int) and not isinstance(value, bool) and "int" in kind)
        )
        if name in kinds and not fits:
            raise ValueError(f"bad arguments for {verb}: {name} must be {kind}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {verb}: {exc}") from None


def command_from(verb: str, values: Mapping[str, object]) -> Command:
    """The command `verb` names, each field taken from `values` by its name (the command
    line's arguments are named after the fields they fill); ValueError as `from_wire`."""
    cls = _BY_VERB.get(verb)
    names = cls._fields if cls is not None else ()
    return from_wire({"verb": verb} | {name: values[name] for name in names if name in values})


class Request(Record):
    """One command, how to answer it (`json`), and who asked. The receiver sets `actor` and
    `pid` from what the kernel says about the caller (`bot.access`), never from the wire."""

    command: Command
    json: bool = False
    actor: str = "cli"
    pid: int | None = None  # the process that asked, over the control socket

    def to_wire(self) -> dict[str, Any]:
        return {"command": to_wire(self.command), "json": self.json}

    @classmethod
    def from_wire(cls, data: object) -> Request:
        """The request a JSON value describes; ValueError if it describes none."""
        if not isinstance(data, dict) or not isinstance(data.get("command"), dict):
            raise ValueError('a request is {"command": {...}, "json": bool}')
        as_json = data.get("json", False)
        if not isinstance(as_json, bool):
            raise ValueError("json must be true or false")
        return cls(from_wire(data["command"]), as_json)
