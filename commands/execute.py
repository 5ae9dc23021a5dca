"""Carry out a Command against the scheduler and build its Reply.

Front ends (the control socket, the CLI with no daemon, the chat) stay thin: they parse, call
`execute`, and print or send the Reply. The reads (status, logs, output) are answered here;
what starts, plans, stops or holds runs is `commands.runs`. Unexpected errors are logged with
their traceback and answered with a short message, never the traceback itself.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime

from commands.command import (
    Cancel,
    Checkpoint,
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
from commands.context import CHAT_LINES, Context
from commands.grammar import VERBS, help_text
from commands.match import find_task, words_after
from commands.render import (
    RECENT_FIELDS,
    fold_successes,
    later_json,
    later_text,
    log_json,
    no_run_json,
    one_line_per_run,
    phone_line,
    record_json,
    task_json,
)
from commands.reply import (
    EXIT_RUN_FAILED,
    EXIT_STATE,
    Reply,
    checkpoint_text,
    iso,
    next_time,
    parse_checkpoint,
    short_time,
    tail_lines,
    usage_error,
)
from commands.streams import log_chunks, status_chunks
from scheduler_core.errors import SchedulerError, StoreError, TaskNotFoundError, log_failure
from scheduler_core.model import LogEntry, Outcome, TaskSpec
from scheduler_core.model import Status as TaskStatus
from scheduler_core.triggers import format_duration

log = logging.getLogger(__name__)


def describe(cmd: Command) -> str:
    """The command as its chat form: `run:scraper`, `status`, `logs:x` (for the audit log)."""
    if isinstance(cmd, RunLater):
        return f"run:{cmd.task} {cmd.when}"
    if isinstance(cmd, Checkpoint):
        return f"checkpoint {cmd.action}:{cmd.task}"
    task = getattr(cmd, "task", None)
    return f"{cmd.verb}:{task}" if task else cmd.verb


async def _audit(cmd: Command, ctx: Context) -> None:
    """Every command goes to the action log with who sent it; reads as `query` entries."""
    task = getattr(cmd, "task", None)
    known = task if task is not None and task in ctx.tasks.by_id else None
    store = ctx.tasks.store
    if isinstance(cmd, Status | Logs | Output | Help) or (
        isinstance(cmd, Checkpoint) and cmd.action == "show"
    ):
        # A read is answered at once, even while another process holds the write lock.
        store.log_query(describe(cmd)[:200], task_id=known, actor=ctx.actor)
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
            case Logs(task=task_id, limit=limit):
                return await _logs(ctx, task_id, limit)
            case Output(task=task_id, run_id=run_id):
                return await _output(ctx, task_id, run_id)
            case Help():
                return Reply(help_text(), {"commands": [v.usage for v in VERBS]})
            case Checkpoint():
                return await _checkpoint(ctx, cmd)
            case _:
                return await _change(cmd, ctx)
    except TaskNotFoundError as exc:
        text = (ctx.chat and words_after(exc.task_id, ctx.tasks.by_id, cmd.verb)) or (
            str(exc) + (await ctx.unloaded(exc.task_id) if ctx.unloaded else "")
        )
        return usage_error(text, {"error": text, "kind": "unknown-task", "nearest": exc.nearest})
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


async def _checkpoint(ctx: Context, cmd: Checkpoint) -> Reply:
    """`checkpoint show|save|clear` answered by the daemon, whose user owns the database (the
    agent's may not write it). Printed as `bot.direct` prints it with no daemon."""
    from scheduler_core.checkpoint import CheckpointError, encode, parse

    task_id = find_task(cmd.task, ctx.tasks.by_id)
    if cmd.action == "show":
        state = await ctx.tasks.store.state(task_id)
        value = parse_checkpoint(state.checkpoint if state is not None else None)
        return Reply(checkpoint_text(value), value)
    if cmd.action not in ("save", "clear") or (cmd.action == "save") != (cmd.value is not None):
        return usage_error("checkpoint show|save|clear TASK, and a JSON value to save")
    try:
        value = None if cmd.value is None else parse(cmd.value)
        await ctx.tasks.store.set_checkpoint(task_id, None if value is None else encode(value))
    except CheckpointError as exc:
        return usage_error(str(exc))
    return Reply("", value)


async def _change(cmd: Command, ctx: Context) -> Reply:
    """What starts, plans, stops or holds runs: `commands.runs`, on the scheduler (imported
    here, so that a read answered with no daemon does not load the scheduler)."""
    from commands import runs

    match cmd:
        case Run(task=task_id):
            return await runs.run(ctx, task_id)
        case RunLater(task=task_id, when=when):
            return await runs.run_later(ctx, task_id, when)
        case Cancel(task=task_id):
            return await runs.cancel(ctx, task_id)
        case Stop(task=task_id):
            return await runs.stop(ctx, task_id)
        case RunAll():
            return await runs.run_all(ctx)
        case Pause(task=task_id):
            return await runs.pause(ctx, task_id)
        case Resume(task=task_id):
            return await runs.resume(ctx, task_id)
    raise AssertionError(f"unhandled command {cmd!r}")


def _resolved(cmd: Command, ctx: Context) -> Command:
    """`cmd` with its task id as configured (`Flaky` is `flaky`); TaskNotFoundError if the
    id names no task. The audit below records what was meant."""
    task = getattr(cmd, "task", None)
    if not isinstance(task, str):
        return cmd
    try:
        found = find_task(task, ctx.tasks.by_id)
    except TaskNotFoundError:
        if isinstance(cmd, Status | Logs) and task.strip().lower() == "all":
            return cmd._replace(task=None)  # `status all`: every task, unless one is `all`
        return cmd  # audited as asked, then refused with the nearest ids
    return cmd if found == task else cmd._replace(task=found)


_MARK = {
    Outcome.SUCCESS: "ok",
    Outcome.FAILED: "FAILED",
    Outcome.TIMEOUT: "TIMEOUT",
    Outcome.INTERRUPTED: "cut",
    Outcome.STOPPED: "stopped",
}
_NOT_COUNTED = (None, Outcome.INTERRUPTED)  # a run under way, or one that resumes later


async def _status_all(ctx: Context) -> Reply:
    if ctx.json:
        return Reply("", chunks=status_chunks(ctx))
    specs = ctx.tasks.specs
    # A chat shows a phone screen: only the states of the tasks on it are read, so sixty
    # `status` messages at once on 10,000 tasks cost what sixty screens cost. The tasks that
    # are not idle come first: on a phone, the one that failed is what the owner looks for.
    shown, unsettled = specs, set[str]()
    if ctx.chat and len(specs) >= CHAT_LINES:
        listed = await ctx.tasks.listing.unsettled()  # a disabled task's old error: not news
        unsettled = {spec.id for spec in specs if spec.id in listed and spec.enabled}
        shown = _screen(specs, unsettled, CHAT_LINES - 2)
    found = await (
        ctx.tasks.listing.states()
        if shown is specs
        else ctx.tasks.listing.states_of([s.id for s in shown])
    )
    states = {s.id: s for s in found}
    rows = [(spec, states.get(spec.id) or ctx.tasks.listing.blank(spec)) for spec in shown]
    now = ctx.tasks.clock.now()
    head = f"{len(specs)} task(s), daemon {ctx.daemon_state}"
    if ctx.holder is not None:
        head += f" (pid {ctx.holder[0]})"
    if ctx.signal_connected is not None:
        head += ", Signal " + ("connected" if ctx.signal_connected else "NOT connected")
    waiting = await ctx.tasks.store.alerts_waiting()
    if waiting:
        head += f", {waiting} alert(s) waiting"
    lines = [head]
    if (trouble := ctx.tasks.store.health.error) is not None:
        lines.append(f"⚠️ The database cannot be written ({trouble.reason}): no run can start.")
    for spec, st in rows:
        last = _MARK.get(st.last_outcome, "-") if st.last_outcome else "never run"
        status = str(st.status) if spec.enabled else "disabled"
        nxt = next_time(st.next_run, ctx.zone, now) if spec.enabled and not st.paused else "-"
        lines.append(f"{spec.id}: {status}, last {last}, next {nxt}")
    if shown is not specs:  # cut as `_cut` cuts, but without reading the rest
        left = len(unsettled) - sum(spec.id in unsettled for spec in shown)
        kind = f"{left} not idle" if left else "all idle"
        lines.append(f"… {len(specs) - len(shown)} more, {kind}; send status:TASK for one task")
    return Reply("\n".join(lines))


def _screen(specs: list[TaskSpec], first: set[str], lines: int) -> list[TaskSpec]:
    """The `lines` tasks a cut status shows: those in `first`, then the others, each in
    configuration order."""
    shown = [spec for spec in specs if spec.id in first][:lines]
    rest = (spec for spec in specs if spec.id not in first)
    return shown + list(itertools.islice(rest, lines - len(shown)))


async def _status_one(ctx: Context, task_id: str) -> Reply:
    spec = ctx.tasks.spec(task_id)
    listed = await ctx.tasks.listing.states_of([task_id])
    state = listed[0] if listed else ctx.tasks.listing.blank(spec)
    recent = await ctx.tasks.store.runs(task_id, 5)
    pending = await ctx.tasks.pending(task_id)
    found = await ctx.tasks.store.staleness([task_id])  # none: never seen by a daemon
    _, last_success, _, stale_alerted = found[0] if found else (task_id, None, None, None)
    data = task_json(spec, state, ctx.zone) | {
        "running_daemon": ctx.daemon,
        "schedule": spec.trigger.describe(),
        "priority": spec.priority,
        "retries": spec.retries,
        "retry_delay_s": spec.retry_delay,
        "max_age_s": spec.max_age,
        "last_success": iso(last_success, ctx.zone),
        "stale": stale_alerted is not None,
        "pending": [later_json(r, ctx.zone) for r in pending],
        "recent_runs": [
            {k: v for k, v in record_json(r, ctx.zone).items() if k in RECENT_FIELDS}
            for r in recent
        ],
    }
    now = ctx.tasks.clock.now()
    last = f" ({state.last_outcome})" if state.last_outcome else ""
    if recent and recent[0].started == state.last_run and recent[0].outcome in _NOT_COUNTED:
        # The outcome is the previous run's (an interrupted run does not replace it): say so.
        before = f"; the one before: {state.last_outcome}" if state.last_outcome else ""
        going = "under way" if state.status is TaskStatus.RUNNING else str(state.status)
        if recent[0].outcome is Outcome.INTERRUPTED:
            going = f"interrupted: {recent[0].message}"
        last = f" ({going}{before})"
    why = "" if ctx.daemon else ": no daemon is running"
    lines = [
        f"{spec.name} ({spec.id}): {state.status if spec.enabled else 'disabled'}",
        f"schedule: {spec.trigger.describe()}, priority {spec.priority}",
        f"last run: {short_time(state.last_run, ctx.zone, now)}{last}",
        f"next run: {next_time(state.next_run, ctx.zone, now, why) if data['next_run'] else '-'}",
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
        lines.append("pending: " + ", ".join(later_text(r, ctx.zone, now) for r in pending))
    if state.last_error:
        lines.append(f"last error: {state.last_error}")
    if recent and recent[0].outcome is None and state.status is TaskStatus.INTERRUPTED:
        cut = "its run was cut short (the moltsched running it was killed):"
        lines.append(f"{cut} the next start stops what it left and resumes it")
    if state.checkpoint:
        lines.append(f"checkpoint: {state.checkpoint[:200]}")
    if recent:
        runs = (
            f"{r.run_id} {r.outcome or 'running'} {short_time(r.started, ctx.zone, now)}"
            for r in recent
        )
        lines.append("recent runs: " + ", ".join(runs))
        lines.append(
            f"what it printed: send output:{spec.id}"
            if ctx.chat
            else f"what it printed: moltsched output {spec.id} [RUN_ID]"
        )
    return Reply("\n".join(lines), data)


def _cut(lines: list[str], ctx: Context, hint: str) -> str:
    """Lines for the answer; in a chat, cut to a phone screen with a note on what was left."""
    if not ctx.chat or len(lines) <= CHAT_LINES:
        return "\n".join(lines)
    rest = len(lines) - (CHAT_LINES - 1)
    return "\n".join([*lines[: CHAT_LINES - 1], f"… {rest} more; {hint}"])


_ENTRIES_PER_PHONE_LINE = 10  # log entries read for each line of `logs` on a phone


async def _logs(ctx: Context, task_id: str | None, limit: int) -> Reply:
    if task_id is not None:
        ctx.tasks.spec(task_id)
    if limit < 1:
        return usage_error("-n must be at least 1")
    now: datetime = ctx.tasks.clock.now()
    if not ctx.chat:  # as many as asked for, read, written and sent a batch at a time
        batches = ctx.tasks.store.iter_logs(task_id, limit)
        first: list[LogEntry] = await anext(batches, [])  # an unreadable database: a reply
        return Reply("", chunks=log_chunks(first, batches, ctx.zone, now, as_json=ctx.json))
    # A phone shows one line per run (`started` goes when the run's end is in view), and a
    # task's successes in a row as one: read enough to fill the screen anyway.
    read = await ctx.tasks.store.logs(task_id, limit * _ENTRIES_PER_PHONE_LINE)
    folded = fold_successes(one_line_per_run(read))[:limit]
    data = [log_json(f.entry, ctx.zone) | {"in_a_row": f.in_a_row} for f in folded]
    if not folded:
        return Reply("No log entries yet.", data)
    lines = [phone_line(f, ctx.zone, now) for f in folded]
    return Reply(_cut(lines, ctx, "moltsched logs -n N shows more"), data)


OUTPUT_CHAT_LINES = 12  # of stdout; stderr gets a few more under it


async def _output(ctx: Context, task_id: str, run_id: int | None) -> Reply:
    spec = ctx.tasks.spec(task_id)
    record = ctx.tasks.under_way(spec.id)  # what a run that goes on has printed so far
    if record is None or run_id not in (None, record.run_id):
        record = await ctx.tasks.store.run(spec.id, run_id)
    if record is None:
        if run_id is not None:
            message = f"{spec.id} has no run {run_id}; `status {spec.id}` lists its recent runs"
            return usage_error(message, {"error": message, "kind": "unknown-run"})
        (state,) = await ctx.tasks.listing.states_of([spec.id]) or [ctx.tasks.listing.blank(spec)]
        if state.status is TaskStatus.RUNNING and state.last_run is not None:
            # A run no daemon here is following (it is starting, or died): nothing to show.
            since = short_time(state.last_run, ctx.zone, ctx.tasks.clock.now())
            text = f"{spec.id} has a run under way since {since}, and none finished yet."
            return Reply(text, no_run_json(spec.id))
        return Reply(f"{spec.id} has not run yet.", no_run_json(spec.id))
    data = record_json(record, ctx.zone)
    now = ctx.tasks.clock.now()
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
