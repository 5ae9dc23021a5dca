"""Carry out a Command against the scheduler and build its Reply.

Front ends (the control socket, the CLI in the foreground, later the chat) stay thin: they
parse, call `execute`, and print or send the Reply. Unexpected errors are logged with their
traceback and answered with a short message, never the traceback itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from commands.command import (
    Cancel,
    Command,
    Help,
    Logs,
    Output,
    Pause,
    Resume,
    Run,
    RunAll,
    RunLater,
    Status,
    Stop,
)
from commands.grammar import VERBS, help_text
from commands.match import find_task
from commands.render import (
    RECENT_FIELDS,
    log_json,
    log_line,
    one_line_per_run,
    phone_line,
    record_json,
    run_json,
    run_text,
    task_json,
    task_json_text,
)
from commands.reply import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_STATE,
    Reply,
    encode_json,
    iso,
    short_time,
    tail_lines,
    usage_error,
)
from commands.when import parse_when
from scheduler_core import __version__
from scheduler_core.active import Admission
from scheduler_core.errors import SchedulerError, StoreError, TaskNotFoundError, log_failure
from scheduler_core.model import LaterRun, Outcome, RunResult, TaskState
from scheduler_core.requests import Stopped
from scheduler_core.scheduler import Scheduler
from scheduler_core.triggers import format_duration

log = logging.getLogger(__name__)


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


def describe(cmd: Command) -> str:
    """The command as its chat form: `run:scraper`, `status`, `logs:x` (for the audit log)."""
    if isinstance(cmd, RunLater):
        return f"run:{cmd.task} {cmd.when}"
    task = getattr(cmd, "task", None)
    return f"{cmd.verb}:{task}" if task else cmd.verb


async def _audit(cmd: Command, ctx: Context) -> None:
    """Every command goes to the action log with who sent it; reads as `query` entries."""
    task = getattr(cmd, "task", None)
    known = task if task in {s.id for s in ctx.scheduler.specs} else None
    store = ctx.scheduler.store
    if isinstance(cmd, Status | Logs | Output | Help):
        # A read is answered at once, even while another process holds the write lock.
        store.log_later("query", describe(cmd)[:200], task_id=known, actor=ctx.actor)
        return
    try:
        await store.log("command", describe(cmd)[:200], task_id=known, actor=ctx.actor)
    except Exception:  # an audit write must not stop the command (e.g. the disk is full)
        log_failure(log, "could not audit %s from %s", describe(cmd), ctx.actor)


async def execute(cmd: Command, ctx: Context) -> Reply:
    """Carry out `cmd`; never raises for anything but cancellation."""
    try:
        cmd = _resolved(cmd, ctx)
        await _audit(cmd, ctx)
        match cmd:
            case Status(task=None):
                return await _status_all(ctx)
            case Status(task=str(task_id)):
                return await _status_one(ctx, task_id)
            case Run(task=task_id):
                return await _run(ctx, task_id)
            case RunLater(task=task_id, when=when):
                return await _run_later(ctx, task_id, when)
            case Cancel(task=task_id):
                return await _cancel(ctx, task_id)
            case Stop(task=task_id):
                return await _stop(ctx, task_id)
            case RunAll():
                return await _run_all(ctx)
            case Pause(task=task_id):
                return await _pause(ctx, task_id)
            case Resume(task=task_id):
                return await _resume(ctx, task_id)
            case Logs(task=task_id, limit=limit):
                return await _logs(ctx, task_id, limit)
            case Output(task=task_id, run_id=run_id):
                return await _output(ctx, task_id, run_id)
            case Help():
                return Reply(help_text(), {"commands": [v.usage for v in VERBS]})
    except TaskNotFoundError as exc:
        return usage_error(
            str(exc), {"error": str(exc), "kind": "unknown-task", "nearest": exc.nearest}
        )
    except StoreError as exc:  # the database cannot be reached: one line, exit 3
        return Reply(str(exc), {"error": str(exc), "kind": exc.kind}, EXIT_STATE, error=True)
    except SchedulerError as exc:
        return Reply(
            str(exc), {"error": str(exc), "kind": "scheduler"}, EXIT_RUN_FAILED, error=True
        )
    except Exception:
        log.exception("command %r failed", cmd)
        return Reply(
            "Something went wrong; the daemon log has the details.",
            {"error": "internal error", "kind": "internal"},
            EXIT_RUN_FAILED,
            error=True,
        )
    raise AssertionError(f"unhandled command {cmd!r}")


def _resolved(cmd: Command, ctx: Context) -> Command:
    """`cmd` with its task id as configured (`Flaky` is `flaky`); TaskNotFoundError if the
    id names no task. The audit below records what was meant."""
    task = getattr(cmd, "task", None)
    if not isinstance(task, str):
        return cmd
    try:
        found = find_task(task, ctx.scheduler.task_ids)
    except TaskNotFoundError:
        return cmd  # audited as asked, then refused with the nearest ids
    return cmd if found == task else type(cmd)(**{**dataclasses.asdict(cmd), "task": found})


_MARK = {
    Outcome.SUCCESS: "ok",
    Outcome.FAILED: "FAILED",
    Outcome.TIMEOUT: "TIMEOUT",
    Outcome.INTERRUPTED: "cut",
    Outcome.STOPPED: "stopped",
}


async def _status_all(ctx: Context) -> Reply:
    if ctx.json:
        return Reply("", json_chunks=_status_json(ctx))
    specs = ctx.scheduler.specs
    # A chat shows a phone screen: only the states of the tasks on it are read, so sixty
    # `status` messages at once on 10,000 tasks cost what sixty screens cost.
    shown = specs[: CHAT_LINES - 2] if ctx.chat and len(specs) >= CHAT_LINES else specs
    found = await (
        ctx.scheduler.listing.states()
        if shown is specs
        else ctx.scheduler.listing.states_of([s.id for s in shown])
    )
    states = {s.id: s for s in found}
    rows = [(spec, states.get(spec.id) or TaskState.blank(spec)) for spec in shown]
    now = ctx.scheduler.clock.now()
    head = f"{len(specs)} task(s), daemon {'running' if ctx.daemon else 'not running'}"
    if ctx.signal_connected is not None:
        head += ", Signal " + ("connected" if ctx.signal_connected else "NOT connected")
    waiting = await ctx.scheduler.store.alerts_waiting()
    if waiting:
        head += f", {waiting} alert(s) waiting"
    lines = [head]
    for spec, st in rows:
        last = _MARK.get(st.last_outcome, "-") if st.last_outcome else "never run"
        status = str(st.status) if spec.enabled else "disabled"
        nxt = short_time(st.next_run, ctx.zone, now) if spec.enabled and not st.paused else "-"
        lines.append(f"{spec.id}: {status}, last {last}, next {nxt}")
    if shown is not specs:  # cut as `_cut` cuts, but without reading the rest
        lines.append(f"… {len(specs) - len(shown)} more; send status:TASK for one task")
    return Reply("\n".join(lines))


async def _status_json(ctx: Context) -> AsyncIterator[str]:
    """`status --json`, a batch of tasks at a time (DESIGN.md section 4 shape)."""
    specs = {spec.id: spec for spec in ctx.scheduler.specs}
    running = "true" if ctx.daemon else "false"
    signal = encode_json(ctx.signal_connected)
    waiting = await ctx.scheduler.store.alerts_waiting()
    yield (
        f'{{"running": {running}, "version": "{__version__}", '
        f'"signal_connected": {signal}, "alerts_waiting": {waiting}, '
        f'"task_count": {len(specs)}, "tasks": ['
    )
    sep = ""
    seen: set[str] = set()
    times: dict[datetime, str] = {}
    listing = ctx.scheduler.listing.iter_states()
    async with contextlib.aclosing(listing):
        async for states in listing:
            parts = []
            for state in states:
                spec = specs.get(state.id)
                if spec is not None:
                    seen.add(state.id)
                    parts.append(task_json_text(spec, state, ctx.zone, times))
            if parts:
                yield sep + ", ".join(parts)
                sep = ", "
    # Tasks the database has not seen yet (no daemon has run since they were added).
    blank, zone = TaskState.blank, ctx.zone
    missing = [task_json_text(s, blank(s), zone, times) for s in specs.values() if s.id not in seen]
    if missing:
        yield sep + ", ".join(missing)
    yield "]}"


async def _status_one(ctx: Context, task_id: str) -> Reply:
    spec = ctx.scheduler.spec(task_id)
    state = next(iter(await ctx.scheduler.listing.states_of([task_id])), None) or TaskState.blank(
        spec
    )
    runs = await ctx.scheduler.store.runs(task_id, 5)
    pending = await ctx.scheduler.pending(task_id)
    ((_, last_success, _, stale_alerted),) = await ctx.scheduler.store.staleness([task_id]) or [
        (task_id, None, None, None)
    ]
    data = task_json(spec, state, ctx.zone) | {
        "running_daemon": ctx.daemon,
        "schedule": spec.trigger.describe(),
        "priority": spec.priority,
        "retries": spec.retries,
        "retry_delay_s": spec.retry_delay,
        "max_age_s": spec.max_age,
        "last_success": iso(last_success, ctx.zone),
        "stale": stale_alerted is not None,
        "pending": [_later_json(r, ctx) for r in pending],
        "recent_runs": [
            {k: v for k, v in record_json(r, ctx.zone).items() if k in RECENT_FIELDS} for r in runs
        ],
    }
    now = ctx.scheduler.clock.now()
    lines = [
        f"{spec.name} ({spec.id}): {state.status if spec.enabled else 'disabled'}",
        f"schedule: {spec.trigger.describe()}, priority {spec.priority}",
        f"last run: {short_time(state.last_run, ctx.zone, now)}"
        + (f" ({state.last_outcome})" if state.last_outcome else ""),
        f"next run: {short_time(state.next_run, ctx.zone, now) if data['next_run'] else '-'}",
        f"runs: {state.run_count}, errors: {state.error_count}",
    ]
    if spec.retries:
        lines.append(
            f"retries: {spec.retries}, first after {format_duration(spec.retry_delay)}, doubling"
        )
    if spec.max_age is not None:
        since = short_time(last_success, ctx.zone, now) if last_success else "never"
        stale = "; NOT succeeded within it (alerted)" if stale_alerted else ""
        lines.append(f"max_age: {format_duration(spec.max_age)}, last success {since}{stale}")
    if pending:
        lines.append("pending: " + ", ".join(_later_text(r, ctx) for r in pending))
    if state.last_error:
        lines.append(f"last error: {state.last_error}")
    if state.checkpoint:
        lines.append(f"checkpoint: {state.checkpoint[:200]}")
    if runs:
        lines.append(
            f"what it printed: send output:{spec.id}"
            if ctx.chat
            else f"what it printed: moltsched output {spec.id} [RUN_ID]"
        )
    return Reply("\n".join(lines), data)


_ACK = {
    Admission.STARTED: "Started {task}.",
    Admission.QUEUED: "{task} is queued; it starts when a slot frees.",
    Admission.ALREADY_RUNNING: "{task} is already running; I'll tell you how it ends.",
    Admission.ALREADY_QUEUED: "{task} is already queued; I'll tell you how it ends.",
}


async def _run(ctx: Context, task_id: str) -> Reply:
    ctx.scheduler.spec(task_id)
    submission = ctx.scheduler.submit(task_id)
    if ctx.notify is not None:
        await ctx.notify(Reply(_ACK[submission.admission].format(task=task_id)))
    result = await submission.result
    data = run_json(result, ctx.zone) | {"admission": str(submission.admission)}
    code = EXIT_OK if result.outcome is Outcome.SUCCESS else EXIT_RUN_FAILED
    if code:  # a failure under --json always carries these two (DESIGN.md section 4)
        data |= {"error": result.message, "kind": str(result.outcome)}
    return Reply(run_text(result, ctx.zone), data, code)


def _later_json(run: LaterRun, ctx: Context) -> dict[str, object]:
    return {"cause": str(run.cause), "due": iso(run.due, ctx.zone), "attempt": run.attempt}


def _later_text(run: LaterRun, ctx: Context) -> str:
    what = f"retry {run.attempt}" if run.attempt else str(run.cause)
    return f"{what} {short_time(run.due, ctx.zone, ctx.scheduler.clock.now())}"


async def _run_later(ctx: Context, task_id: str, when: str) -> Reply:
    spec = ctx.scheduler.spec(task_id)
    try:
        due = parse_when(when, ctx.scheduler.clock.now(), ctx.zone)
        run = await ctx.scheduler.run_later(spec.id, due, ctx.actor)
    except (ValueError, SchedulerError) as exc:
        return usage_error(f"{spec.id}: {exc}")
    now = ctx.scheduler.clock.now()
    text = f"{spec.id} will run {short_time(run.due, ctx.zone, now)} (in {_ahead(run.due, now)})."
    text += (
        f" cancel:{spec.id} removes it."
        if ctx.chat
        else f" `moltsched cancel {spec.id}` removes it."
    )
    if not ctx.daemon:
        text += " The daemon is not running: it runs once the daemon is up."
    data = {"scheduled": iso(run.due, ctx.zone), "task": spec.id, "id": run.id}
    return Reply(text, data)


def _ahead(when: datetime, now: datetime) -> str:
    seconds = max(0, round((when - now).total_seconds()))
    return format_duration(round(seconds / 60) * 60) if seconds >= 90 else f"{seconds}s"


async def _cancel(ctx: Context, task_id: str) -> Reply:
    gone = await ctx.scheduler.cancel(task_id, ctx.actor)
    data = {"task": task_id, "cancelled": [_later_json(r, ctx) for r in gone]}
    if not gone:
        return Reply(f"{task_id} has no pending runs.", data)
    listing = ", ".join(_later_text(r, ctx) for r in gone)
    return Reply(f"Cancelled {len(gone)} pending run(s) of {task_id}: {listing}.", data)


async def _stop(ctx: Context, task_id: str) -> Reply:
    found, result = await ctx.scheduler.stop(task_id, ctx.actor)
    if found is Stopped.NOTHING:
        text = f"{task_id} is not running."
        if not ctx.daemon:
            text += " (No daemon is up; a foreground `moltsched run` stops with Ctrl-C.)"
        return Reply(text, {"task": task_id, "stopped": False})
    if found is Stopped.WAITING:
        text = f"{task_id} had not started yet; it no longer waits for a slot."
        return Reply(text, {"task": task_id, "stopped": True, "was": "waiting"})
    if result is None:
        text = f"Stopping {task_id}; it has not ended yet (logs:{task_id} will say)."
        return Reply(text, {"task": task_id, "stopped": True, "was": "running"})
    data = run_json(result, ctx.zone) | {"stopped": True, "was": "running"}
    text = f"Stopped {task_id} ({result.message}); its checkpoint is kept and its schedule stands."
    return Reply(text, data)


async def _run_all(ctx: Context) -> Reply:
    futures = await ctx.scheduler.run_due()
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    results = [r for r in outcomes if isinstance(r, RunResult)]
    failed = [r for r in results if r.outcome is not Outcome.SUCCESS]
    errors = [str(r) for r in outcomes if isinstance(r, BaseException)]
    data = {"ran": [run_json(r, ctx.zone) for r in results], "errors": errors}
    if not results and not errors:
        return Reply("Nothing is due now.", data)
    lines = [f"ran {len(results)} due task(s), {len(failed)} failed"]
    lines += [f"{r.task_id}: {r.outcome} ({r.message})" for r in results]
    lines += errors
    code = EXIT_RUN_FAILED if failed or errors else EXIT_OK
    if code:
        data |= {"error": f"{len(failed) + len(errors)} run(s) did not succeed", "kind": "failed"}
    return Reply("\n".join(lines), data, code)


async def _pause(ctx: Context, task_id: str) -> Reply:
    was_paused = ctx.scheduler.is_paused(task_id)
    state, cut = await ctx.scheduler.pause(task_id, ctx.actor)
    data = task_json(ctx.scheduler.spec(task_id), state, ctx.zone)
    if was_paused:
        return Reply(f"{task_id} was already paused.", data)
    text = f"Paused {task_id}: no scheduled runs until resume:{task_id}."
    if cut is not None:
        text += f"\nIts run was interrupted after {cut.duration_s:.1f}s; the checkpoint is kept."
    return Reply(text, data)


async def _resume(ctx: Context, task_id: str) -> Reply:
    was_paused = ctx.scheduler.is_paused(task_id)
    state, started = await ctx.scheduler.resume(task_id, ctx.actor)
    spec = ctx.scheduler.spec(task_id)
    data = task_json(spec, state, ctx.zone)
    if not was_paused:
        return Reply(f"{task_id} is not paused.", data)
    now = ctx.scheduler.clock.now()
    if started:
        return Reply(
            f"Resumed {task_id}: its interrupted run goes on now, from its checkpoint.", data
        )
    nxt = short_time(state.next_run, ctx.zone, now) if spec.enabled else "- (disabled)"
    return Reply(f"Resumed {task_id}: next run {nxt}.", data)


def _cut(lines: list[str], ctx: Context, hint: str) -> str:
    """Lines for the answer; in a chat, cut to a phone screen with a note on what was left."""
    if not ctx.chat or len(lines) <= CHAT_LINES:
        return "\n".join(lines)
    rest = len(lines) - (CHAT_LINES - 1)
    return "\n".join([*lines[: CHAT_LINES - 1], f"… {rest} more; {hint}"])


async def _logs(ctx: Context, task_id: str | None, limit: int) -> Reply:
    if task_id is not None:
        ctx.scheduler.spec(task_id)
    if limit < 1:
        return usage_error("-n must be at least 1")
    # A phone shows one line per run: `started` goes when the run's end is in view, so read
    # enough to fill the screen anyway.
    entries = await ctx.scheduler.store.logs(task_id, limit * 2 if ctx.chat else limit)
    if ctx.chat:
        entries = one_line_per_run(entries)[:limit]
    data = [log_json(e, ctx.zone) for e in entries]
    if not entries:
        return Reply("No log entries yet.", data)
    now: datetime = ctx.scheduler.clock.now()
    if ctx.chat:
        lines = [phone_line(e, ctx.zone, now) for e in entries]
    else:
        lines = [log_line(e, ctx.zone, now) for e in entries]
    return Reply(_cut(lines, ctx, "moltsched logs -n N shows more"), data)


OUTPUT_CHAT_LINES = 12  # of stdout; stderr gets a few more under it


async def _output(ctx: Context, task_id: str, run_id: int | None) -> Reply:
    spec = ctx.scheduler.spec(task_id)
    record = await ctx.scheduler.store.run(spec.id, run_id)
    if record is None:
        if run_id is not None:
            message = f"{spec.id} has no run {run_id}; `status {spec.id}` lists its recent runs"
            return usage_error(message, {"error": message, "kind": "unknown-run"})
        return Reply(f"{spec.id} has not finished a run yet.", None)
    data = record_json(record, ctx.zone)
    now = ctx.scheduler.clock.now()
    head = (
        f"{spec.id} run {record.run_id} ({record.cause}), "
        f"{short_time(record.started, ctx.zone, now)}: {record.outcome or 'running'}"
        + (f" ({record.message})" if record.message else "")
    )
    if ctx.chat:
        out = tail_lines(record.stdout, OUTPUT_CHAT_LINES)
        err = tail_lines(record.stderr, 5)
        lines = [head, *(out or ["(no output)"])]
        if err:
            lines += ["stderr:", *err]
        return Reply("\n".join(lines), data)
    parts = [head, "--- stdout ---", record.stdout.rstrip("\n") or "(nothing)"]
    parts += ["--- stderr ---", record.stderr.rstrip("\n") or "(nothing)"]
    return Reply("\n".join(parts), data)
