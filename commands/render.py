"""How answers look: the fields of a task, a run and a log entry, for JSON and for text.

Each shape is read from one place, so what `status --json` says and what the text shows
come from the same values (`task_values`; a run's `run_json`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from commands.reply import (
    encode_json,
    iso,
    parse_checkpoint,
    short_actor,
    short_time,
    shorten_ids,
    tail_lines,
)
from scheduler_core.model import (
    LaterRun,
    LogEntry,
    Outcome,
    RunRecord,
    RunResult,
    TaskSpec,
    TaskState,
)

# A task in `status --json` (DESIGN.md section 4): one table of fields, read by both the dict
# (`task_json`) and the text written directly (`task_json_text`), so the two cannot differ.
# Each field has a kind that says how its value becomes JSON.
TASK_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("name", "text"),
    ("status", "text"),
    ("enabled", "bool"),
    ("last_run", "time"),
    ("next_run", "time"),
    ("run_count", "int"),
    ("error_count", "int"),
    ("last_error", "text"),
    ("last_outcome", "text"),
    ("checkpoint", "checkpoint"),
)


def task_values(spec: TaskSpec, state: TaskState) -> tuple[Any, ...]:
    """The values of `TASK_FIELDS`, in order, before they become JSON."""
    scheduled = spec.enabled and not state.paused
    return (
        spec.id,
        spec.name,
        str(state.status),
        spec.enabled,
        state.last_run,
        state.next_run if scheduled else None,
        state.run_count,
        state.error_count,
        state.last_error,
        str(state.last_outcome) if state.last_outcome else None,
        state.checkpoint,
    )


def task_json(spec: TaskSpec, state: TaskState, zone: ZoneInfo) -> dict[str, Any]:
    """One task as a JSON-ready dict."""
    out: dict[str, Any] = {}
    for (name, kind), value in zip(TASK_FIELDS, task_values(spec, state), strict=True):
        if kind == "time":
            value = iso(value, zone)
        elif kind == "checkpoint":
            value = parse_checkpoint(value)
        out[name] = value
    return out


_quote = json.encoder.encode_basestring  # C-accelerated: a str as a JSON string literal
_TEMPLATE = "{" + ", ".join(f'"{name}": %s' for name, _ in TASK_FIELDS) + "}"
_KINDS = tuple(kind for _, kind in TASK_FIELDS)


def task_json_text(
    spec: TaskSpec,
    state: TaskState,
    zone: ZoneInfo,
    times: dict[datetime, str],
    *,
    remember: bool = True,
) -> str:
    """`task_json` as JSON text, written out directly from the same table.

    The hot path of `status --json` (the agent polls it with 10,000 tasks): building the
    dict and encoding it takes twice as long. `times` memoises ISO texts within one answer;
    tasks added together share their slot times. With `remember` (the daemon, which answers
    poll after poll), a task whose values are the same as at the last answer gets the same
    text back (`_TEXTS`): between two polls, most have not run. A process that answers once
    would only pay for looking.
    """
    values = task_values(spec, state)
    key = (zone, values)
    text = _TEXTS.get(key) if remember else None
    if text is not None:
        return text
    parts = []
    for kind, value in zip(_KINDS, values, strict=True):
        if value is None:
            parts.append("null")
        elif kind == "text":
            parts.append(_quote(value))
        elif kind == "time":
            iso_text = times.get(value)
            if iso_text is None:
                iso_text = f'"{value.astimezone(zone).isoformat(timespec="seconds")}"'
                times[value] = iso_text
            parts.append(iso_text)
        elif kind == "bool":
            parts.append("true" if value else "false")
        elif kind == "int":
            parts.append(str(value))
        else:  # a checkpoint: the stored JSON text, normalised
            parts.append(encode_json(parse_checkpoint(value)))
    text = _TEMPLATE % tuple(parts)
    if not remember:
        return text
    if len(_TEXTS) >= _TEXTS_MAX:
        _TEXTS.clear()  # tasks removed or changed since: start again rather than grow
    _TEXTS[key] = text
    return text


# The texts of the last answers, by their values (see task_json_text); a bound on memory.
_TEXTS: dict[tuple[ZoneInfo, tuple[Any, ...]], str] = {}
_TEXTS_MAX = 50_000


def later_json(run: LaterRun, zone: ZoneInfo) -> dict[str, object]:
    """A run kept for later (a one-shot or a retry), for `status TASK --json` and `cancel`."""
    return {"cause": str(run.cause), "due": iso(run.due, zone), "attempt": run.attempt}


def later_text(run: LaterRun, zone: ZoneInfo, now: datetime) -> str:
    what = f"retry {run.attempt}" if run.attempt else str(run.cause)
    return f"{what} {short_time(run.due, zone, now)}"


def run_json(result: RunResult, zone: ZoneInfo) -> dict[str, Any]:
    """A finished run for `run --json`: RunResult's fields, by their names."""
    data = result._asdict()
    data.update(
        cause=str(result.cause),
        outcome=str(result.outcome),
        duration_s=round(result.duration_s, 3),
        started=iso(result.started, zone),
        retry_at=iso(result.retry_at, zone),
    )
    return data


def record_json(r: RunRecord, zone: ZoneInfo) -> dict[str, Any]:
    """A stored run for `output --json`: RunRecord's fields, by their names."""
    return r._asdict() | {
        "cause": str(r.cause),
        "due": iso(r.due, zone),
        "started": iso(r.started, zone),
        "ended": iso(r.ended, zone),
        "outcome": str(r.outcome) if r.outcome else None,
    }


def no_run_json(task_id: str) -> dict[str, Any]:
    """`output --json` for a task that has not run: `record_json`'s fields, all null."""
    return dict.fromkeys(RunRecord._fields) | {"task_id": task_id}


# A run among a task's recent runs (`status TASK`): the first fields of `record_json`.
RECENT_FIELDS = ("run_id", "cause", "started", "outcome", "exit_code", "duration_s")


def run_text(result: RunResult, zone: ZoneInfo) -> str:
    """A finished run in a few lines: the verdict, then the last lines of output."""
    head = f"{result.task_id}: {result.outcome} ({result.message})"
    if result.retry_at is not None:
        head += f"; retrying at {short_time(result.retry_at, zone, result.started)}"
    out = tail_lines(result.stderr if result.outcome is not Outcome.SUCCESS else "", 3)
    out = out or tail_lines(result.stdout, 5)
    return "\n".join([head, *out])


def log_json(entry: LogEntry, zone: ZoneInfo) -> dict[str, Any]:
    """An action-log entry for `logs --json`: LogEntry's fields, by their names."""
    return entry._asdict() | {"time": iso(entry.time, zone)}


def log_line(entry: LogEntry, zone: ZoneInfo, now: datetime) -> str:
    """The same entry as a line for a terminal, with who did it."""
    e = entry
    return (
        f"{short_time(e.time, zone, now)} {e.task_id or '-'} {e.action}"
        + (f": {e.message[:120]}" if e.message else "")
        + (f" [{e.actor}]" if e.actor and e.actor not in e.message else "")
    )


_ENDS = {"completed", "failed", "timeout", "interrupted", "stopped"}


def one_line_per_run(entries: list[LogEntry]) -> list[LogEntry]:
    """Newest first; a run's `started` entry is left out once its end is listed (a task never
    overlaps itself, so the newer end of the same task is that run's)."""
    ended: set[str | None] = set()
    kept = []
    for e in entries:
        if e.action in _ENDS:
            ended.add(e.task_id)
        elif e.action == "started" and e.task_id in ended:
            ended.discard(e.task_id)
            continue
        kept.append(e)
    return kept


class Folded(NamedTuple):
    """A line of `logs` on a phone: an entry, and for a success, how many of its task's runs
    in a row succeeded (this one and those before it), the oldest of them at `since`."""

    entry: LogEntry
    in_a_row: int = 1
    since: datetime | None = None


def fold_successes(entries: list[LogEntry]) -> list[Folded]:
    """Newest first (after `one_line_per_run`); a task's successes in a row, with nothing
    else of that task between them, are one line, at the newest. A task every few seconds
    would otherwise fill the screen with "ok" and push everything else off it."""
    lines: list[Folded] = []
    streaks: dict[str | None, int] = {}  # task -> index of the line its successes fold into
    for e in entries:
        at = streaks.get(e.task_id) if e.action == "completed" else None
        if at is not None:
            lines[at] = lines[at]._replace(in_a_row=lines[at].in_a_row + 1, since=e.time)
            continue
        if e.action == "completed":
            streaks[e.task_id] = len(lines)
        else:
            streaks.pop(e.task_id, None)
        lines.append(Folded(e))
    return lines


_PHONE_ACTION = {"completed": "ok", "failed": "FAILED", "timeout": "TIMEOUT", "started": "running"}


def phone_line(line: Folded, zone: ZoneInfo, now: datetime) -> str:
    e = line.entry
    when = short_time(e.time, zone, now)
    action = _PHONE_ACTION.get(e.action, e.action)
    message = shorten_ids(e.message)
    if e.action == "completed" and e.duration_s is not None:
        message = f"{e.duration_s:.1f}s"
    elif e.action == "started":
        message = message.removesuffix(" run").replace("scheduled", "")
    who = f" ({short_actor(e.actor)})" if e.actor and e.action in ("command", "reload") else ""
    if e.action == "command":  # "run:tick by alice" reads better as what was asked
        return f"{when} {message}{who}"
    text = f"{when} {e.task_id or '-'} {action}" + (f": {message[:80]}" if message else "")
    if line.in_a_row > 1 and line.since is not None:
        text += f", {line.in_a_row} in a row since {short_time(line.since, zone, now)}"
    return text + who
