"""Carry out a Command against the scheduler and build its Reply.

Front ends (the control socket, the CLI in the foreground, later the chat) stay thin: they
parse, call `execute`, and print or send the Reply. Unexpected errors are logged with their
traceback and answered with a short message, never the traceback itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from commands.command import Command, Logs, Run, RunAll, Status
from commands.reply import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    RawJSON,
    Reply,
    encode_json,
    iso,
    parse_checkpoint,
    short_time,
    tail_lines,
    usage_error,
)
from scheduler_core.errors import SchedulerError, TaskNotFoundError
from scheduler_core.model import Outcome, TaskSpec, TaskState
from scheduler_core.model import Status as TaskStatus
from scheduler_core.scheduler import RunResult, Scheduler

log = logging.getLogger(__name__)


class StatusCache:
    """Each task's `status --json` text, kept with the state and spec it was made from.

    The agent polls `status --json`; between two polls most of 10,000 tasks have not changed,
    and encoding them again was most of the answer's cost. An entry is reused only while the
    task's state compares equal and its spec (replaced on reload) and the zone are the same.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[TaskState, TaskSpec, ZoneInfo, str]] = {}

    def texts(self, rows: list[tuple[TaskSpec, TaskState]], zone: ZoneInfo) -> list[str]:
        """The JSON text of each task, reusing what has not changed."""
        entries = self._entries
        out = []
        for spec, state in rows:
            hit = entries.get(spec.id)
            if hit is not None and hit[1] is spec and hit[2] is zone and hit[0] == state:
                out.append(hit[3])
                continue
            text = encode_json(task_json(spec, state, zone))
            entries[spec.id] = (state, spec, zone, text)
            out.append(text)
        if len(entries) > len(rows):  # tasks were removed by a reload
            for task_id in entries.keys() - {spec.id for spec, _ in rows}:
                del entries[task_id]
        return out


@dataclass(frozen=True)
class Context:
    """What a command runs against, and who asked."""

    scheduler: Scheduler
    zone: ZoneInfo
    daemon: bool
    actor: str = "cli"
    # Whether the caller will print the JSON value (so large text need not be built) or the text.
    json: bool = False
    status_cache: StatusCache | None = None


async def execute(cmd: Command, ctx: Context) -> Reply:
    """Carry out `cmd`; never raises for anything but cancellation."""
    try:
        match cmd:
            case Status(task=None):
                return await _status_all(ctx)
            case Status(task=str(task_id)):
                return await _status_one(ctx, task_id)
            case Run(task=task_id):
                return await _run(ctx, task_id)
            case RunAll():
                return await _run_all(ctx)
            case Logs(task=task_id, limit=limit):
                return await _logs(ctx, task_id, limit)
    except TaskNotFoundError as exc:
        return usage_error(str(exc), {"error": str(exc), "nearest": exc.nearest})
    except SchedulerError as exc:
        return Reply(str(exc), {"error": str(exc)}, EXIT_RUN_FAILED, error=True)
    except Exception:
        log.exception("command %r failed", cmd)
        return Reply(
            "Something went wrong; the daemon log has the details.",
            {"error": "internal error"},
            EXIT_RUN_FAILED,
            error=True,
        )
    raise AssertionError(f"unhandled command {cmd!r}")


def _blank(spec: TaskSpec) -> TaskState:
    return TaskState(
        spec.id, spec.name, TaskStatus.IDLE, False, None, None, 0, 0, 0, None, None, None
    )


def task_json(spec: TaskSpec, state: TaskState, zone: ZoneInfo) -> dict[str, Any]:
    """One task in the shape of `status --json` (DESIGN.md section 4)."""
    return {
        "id": spec.id,
        "name": spec.name,
        "status": str(state.status),
        "enabled": spec.enabled,
        "last_run": iso(state.last_run, zone),
        "next_run": iso(state.next_run, zone) if spec.enabled and not state.paused else None,
        "run_count": state.run_count,
        "error_count": state.error_count,
        "last_error": state.last_error,
        "last_outcome": str(state.last_outcome) if state.last_outcome else None,
        "checkpoint": parse_checkpoint(state.checkpoint),
    }


async def _joined(ctx: Context) -> list[tuple[TaskSpec, TaskState]]:
    states = {s.id: s for s in await ctx.scheduler.states()}
    return [(spec, states.get(spec.id) or _blank(spec)) for spec in ctx.scheduler.specs]


_MARK = {
    Outcome.SUCCESS: "ok",
    Outcome.FAILED: "FAILED",
    Outcome.TIMEOUT: "TIMEOUT",
    Outcome.INTERRUPTED: "cut",
}


async def _status_all(ctx: Context) -> Reply:
    rows = await _joined(ctx)
    if ctx.json:
        tasks = ", ".join((ctx.status_cache or StatusCache()).texts(rows, ctx.zone))
        running = "true" if ctx.daemon else "false"
        text = f'{{"running": {running}, "task_count": {len(rows)}, "tasks": [{tasks}]}}'
        return Reply("", RawJSON(text))
    now = ctx.scheduler.clock.now()
    lines = [f"{len(rows)} task(s), daemon {'running' if ctx.daemon else 'not running'}"]
    for spec, st in rows:
        last = _MARK.get(st.last_outcome, "-") if st.last_outcome else "never run"
        status = str(st.status) if spec.enabled else "disabled"
        nxt = short_time(st.next_run, ctx.zone, now) if spec.enabled and not st.paused else "-"
        lines.append(f"{spec.id}: {status}, last {last}, next {nxt}")
    return Reply("\n".join(lines))


async def _status_one(ctx: Context, task_id: str) -> Reply:
    spec = ctx.scheduler.spec(task_id)
    state = next((s for s in await ctx.scheduler.states() if s.id == task_id), None) or _blank(spec)
    runs = await ctx.scheduler.store.runs(task_id, 5)
    data = task_json(spec, state, ctx.zone) | {
        "running_daemon": ctx.daemon,
        "schedule": spec.trigger.describe(),
        "priority": spec.priority,
        "recent_runs": [
            {
                "run_id": r.run_id,
                "cause": str(r.cause),
                "started": iso(r.started, ctx.zone),
                "outcome": str(r.outcome) if r.outcome else None,
                "exit_code": r.exit_code,
                "duration_s": r.duration_s,
            }
            for r in runs
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
    if state.last_error:
        lines.append(f"last error: {state.last_error}")
    if state.checkpoint:
        lines.append(f"checkpoint: {state.checkpoint[:200]}")
    return Reply("\n".join(lines), data)


def run_json(result: RunResult, zone: ZoneInfo) -> dict[str, Any]:
    """A finished run for `run --json`."""
    return {
        "task_id": result.task_id,
        "run_id": result.run_id,
        "cause": str(result.cause),
        "outcome": str(result.outcome),
        "exit_code": result.exit_code,
        "duration_s": round(result.duration_s, 3),
        "started": iso(result.started, zone),
        "message": result.message,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


def run_text(result: RunResult) -> str:
    """A finished run in a few lines: the verdict, then the last lines of output."""
    head = f"{result.task_id}: {result.outcome} ({result.message})"
    out = tail_lines(result.stderr if result.outcome is not Outcome.SUCCESS else "", 3)
    out = out or tail_lines(result.stdout, 5)
    return "\n".join([head, *out])


async def _run(ctx: Context, task_id: str) -> Reply:
    ctx.scheduler.spec(task_id)
    await ctx.scheduler.store.log("command", f"run {task_id}", task_id=task_id, actor=ctx.actor)
    submission = ctx.scheduler.submit(task_id)
    result = await submission.result
    data = run_json(result, ctx.zone) | {"admission": str(submission.admission)}
    code = EXIT_OK if result.outcome is Outcome.SUCCESS else EXIT_RUN_FAILED
    return Reply(run_text(result), data, code)


async def _run_all(ctx: Context) -> Reply:
    await ctx.scheduler.store.log("command", "run-all", actor=ctx.actor)
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
    return Reply("\n".join(lines), data, code)


async def _logs(ctx: Context, task_id: str | None, limit: int) -> Reply:
    if task_id is not None:
        ctx.scheduler.spec(task_id)
    if limit < 1:
        return usage_error("-n must be at least 1")
    entries = await ctx.scheduler.store.logs(task_id, limit)
    data = [
        {
            "time": iso(e.time, ctx.zone),
            "task_id": e.task_id,
            "action": e.action,
            "message": e.message,
            "duration_s": e.duration_s,
        }
        for e in entries
    ]
    if not entries:
        return Reply("No log entries yet.", data)
    now: datetime = ctx.scheduler.clock.now()
    lines = [
        f"{short_time(e.time, ctx.zone, now)} {e.task_id or '-'} {e.action}"
        + (f": {e.message}" if e.message else "")
        for e in entries
    ]
    return Reply("\n".join(lines), data)
