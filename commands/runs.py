"""The commands that start, plan, stop or hold runs: run (now or later), cancel, stop,
run-all, pause and resume. `commands.execute` dispatches to them."""

from __future__ import annotations

import asyncio
from datetime import datetime

from commands.context import Context
from commands.render import later_json, later_text, run_json, run_text, task_json
from commands.reply import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_STATE,
    Reply,
    iso,
    short_time,
    usage_error,
)
from commands.when import parse_when
from scheduler_core.active import Admission
from scheduler_core.errors import SchedulerError, WaitsForItselfError
from scheduler_core.model import Outcome, RunResult, Status
from scheduler_core.requests import Stopped
from scheduler_core.triggers import format_duration

_ACK = {
    Admission.STARTED: "Started {task}.",
    Admission.QUEUED: "{task} is queued; it starts when a slot frees.",
    Admission.ALREADY_RUNNING: "{task} is already running; I'll tell you how it ends.",
    Admission.ALREADY_QUEUED: "{task} is already queued; I'll tell you how it ends.",
}


async def run(ctx: Context, task_id: str) -> Reply:
    ctx.scheduler.spec(task_id)
    try:
        submission = ctx.scheduler.submit(task_id, caller=ctx.caller_pid)
    except WaitsForItselfError as exc:
        return usage_error(str(exc))
    if ctx.notify is not None:
        await ctx.notify(Reply(_ACK[submission.admission].format(task=task_id)))
    result = await submission.result
    data = run_json(result, ctx.zone) | {"admission": str(submission.admission)}
    code = EXIT_OK if result.outcome is Outcome.SUCCESS else EXIT_RUN_FAILED
    if code:  # a failure under --json always carries these two (DESIGN.md section 4)
        data |= {"error": result.message, "kind": str(result.outcome)}
    return Reply(run_text(result, ctx.zone), data, code)


async def run_later(ctx: Context, task_id: str, when: str) -> Reply:
    spec = ctx.scheduler.spec(task_id)
    try:
        due = parse_when(when, ctx.scheduler.clock.now(), ctx.zone)
        run, added = await ctx.scheduler.run_later(spec.id, due, ctx.actor)
    except (ValueError, SchedulerError) as exc:
        return usage_error(f"{spec.id}: {exc}")
    now = ctx.scheduler.clock.now()
    when = f"{short_time(run.due, ctx.zone, now)} (in {_ahead(run.due, now)})"
    if added:
        text = f"{spec.id} will run {when}."
    else:  # asked twice: see later.SAME_ONE_SHOT_S
        text = f"{spec.id} is already set to run {when}; nothing added."
    text += (
        f" cancel:{spec.id} removes it."
        if ctx.chat
        else f" `moltsched cancel {spec.id}` removes it."
    )
    # Held while paused (see Scheduler._take_later): its time alone does not start it.
    paused = any(s.paused for s in await ctx.scheduler.listing.states_of([spec.id]))
    if paused:
        resume = f"resume:{spec.id}" if ctx.chat else f"`moltsched resume {spec.id}`"
        text += f" {spec.id} is paused: it runs once resumed ({resume})."
    if not ctx.daemon:
        text += " The daemon is not running: it runs once the daemon is up."
    data = {
        "scheduled": iso(run.due, ctx.zone),
        "task": spec.id,
        "id": run.id,
        "paused": paused,
        "added": added,
    }
    return Reply(text, data)


def _ahead(when: datetime, now: datetime) -> str:
    seconds = max(0, round((when - now).total_seconds()))
    return format_duration(round(seconds / 60) * 60) if seconds >= 90 else f"{seconds}s"


async def cancel(ctx: Context, task_id: str) -> Reply:
    gone = await ctx.scheduler.cancel(task_id, ctx.actor)
    data = {"task": task_id, "cancelled": [later_json(r, ctx.zone) for r in gone]}
    if not gone:
        return Reply(f"{task_id} has no pending runs.", data)
    now = ctx.scheduler.clock.now()
    listing = ", ".join(later_text(r, ctx.zone, now) for r in gone)
    return Reply(f"Cancelled {len(gone)} pending run(s) of {task_id}: {listing}.", data)


async def stop(ctx: Context, task_id: str) -> Reply:
    found, result = await ctx.scheduler.stop(task_id, ctx.actor)
    if found is Stopped.NOTHING:
        states = await ctx.scheduler.listing.states_of([task_id])
        pid = ctx.foreground
        if pid is not None and any(s.status is Status.RUNNING for s in states):
            text = (
                f"{task_id} runs in a foreground `moltsched run` (pid {pid}), which alone can "
                f"stop it: Ctrl-C in its terminal, or kill -INT {pid} (recorded interrupted)"
            )
            return Reply(text, {"error": text, "kind": "locked"}, EXIT_STATE, error=True)
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


async def run_all(ctx: Context) -> Reply:
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


async def pause(ctx: Context, task_id: str) -> Reply:
    was_paused = ctx.scheduler.is_paused(task_id)
    state, cut = await ctx.scheduler.pause(task_id, ctx.actor)
    data = task_json(ctx.scheduler.spec(task_id), state, ctx.zone)
    if was_paused:
        return Reply(f"{task_id} was already paused.", data)
    until = f"resume:{task_id}" if ctx.chat else f"`moltsched resume {task_id}`"
    text = f"Paused {task_id}: no scheduled runs until {until}."
    if cut is not None:
        text += f"\nIts run was interrupted after {cut.duration_s:.1f}s; the checkpoint is kept."
    return Reply(text, data)


async def resume(ctx: Context, task_id: str) -> Reply:
    was_paused = ctx.scheduler.is_paused(task_id)
    state, started, released = await ctx.scheduler.resume(task_id, ctx.actor)
    spec = ctx.scheduler.spec(task_id)
    data = task_json(spec, state, ctx.zone)
    if not was_paused and not spec.enabled:
        run = f"run:{task_id}" if ctx.chat else f"`moltsched run {task_id}`"
        return Reply(
            f"{task_id} is not paused; it is disabled in the configuration (enabled: false), "
            f"so only {run} starts it",
            data,
        )
    if not was_paused:
        return Reply(f"{task_id} is not paused.", data)
    now = ctx.scheduler.clock.now()
    if started:
        return Reply(
            f"Resumed {task_id}: its interrupted run goes on now, from its checkpoint.", data
        )
    nxt = short_time(state.next_run, ctx.zone, now) if spec.enabled else "- (disabled)"
    held = " the run held while it was paused goes now;" if released else ""
    return Reply(f"Resumed {task_id}:{held} next run {nxt}.", data)
