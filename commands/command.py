"""The commands, as small frozen dataclasses that travel over the control socket as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Status:
    """Every task's state, or one task's in detail."""

    verb: ClassVar[str] = "status"
    task: str | None = None


@dataclass(frozen=True)
class Run:
    """Run a task now (on demand) and wait for its result."""

    verb: ClassVar[str] = "run"
    task: str


@dataclass(frozen=True)
class RunAll:
    """Run every task that is due now."""

    verb: ClassVar[str] = "run-all"


@dataclass(frozen=True)
class Pause:
    """No scheduled runs until resumed; a running run is interrupted."""

    verb: ClassVar[str] = "pause"
    task: str


@dataclass(frozen=True)
class Resume:
    """Scheduled again; an interrupted run goes on from its checkpoint at once."""

    verb: ClassVar[str] = "resume"
    task: str


@dataclass(frozen=True)
class Help:
    """The short help."""

    verb: ClassVar[str] = "help"


@dataclass(frozen=True)
class Logs:
    """The newest action-log entries, newest first."""

    verb: ClassVar[str] = "logs"
    task: str | None = None
    limit: int = 20


@dataclass(frozen=True)
class Output:
    """What a run printed: the tails of its stdout and stderr (the newest run by default)."""

    verb: ClassVar[str] = "output"
    task: str
    run_id: int | None = None


Command = Status | Run | RunAll | Pause | Resume | Logs | Output | Help

_BY_VERB: dict[str, type[Command]] = {
    c.verb: c for c in (Status, Run, RunAll, Pause, Resume, Logs, Output, Help)
}


def to_wire(cmd: Command) -> dict[str, Any]:
    """The command as a JSON object: `{"verb": ..., fields...}`."""
    return {"verb": cmd.verb, **asdict(cmd)}


def from_wire(data: dict[str, Any]) -> Command:
    """The command a JSON object describes; ValueError if it describes none."""
    fields = dict(data)
    verb = fields.pop("verb", None)
    cls = _BY_VERB.get(verb) if isinstance(verb, str) else None
    if cls is None:
        raise ValueError(f"unknown command {verb!r}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {verb}: {exc}") from None
