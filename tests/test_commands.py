"""The command layer on a real store and scheduler: replies, JSON shapes, exit codes."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from commands.command import Logs, Output, Pause, Resume, Run, RunAll, Status, from_wire, to_wire
from commands.context import Context
from commands.execute import execute
from commands.render import task_json, task_json_text
from commands.reply import EXIT_USAGE, Reply, output, render, short_actor, shorten_ids
from scheduler_core.model import EngineSettings, Outcome, TaskState
from scheduler_core.model import Status as TaskStatus
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from tests.helpers import ManualClock, spec

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


async def text_of(reply: Reply, as_json: bool) -> str:
    return "".join([chunk async for chunk in output(reply, as_json)])


@pytest.mark.parametrize(
    "state",
    [
        TaskState("a", "a", TaskStatus.IDLE, False, None, None, 0, 0, 0, None, None, None),
        TaskState(
            "a",
            'Näme "quoted"\n',
            TaskStatus.ERROR,
            False,
            T0,
            T0 + timedelta(hours=1),
            12,
            3,
            2,
            'exit 3: "boom" \\ \u202e\U0001f600',
            Outcome.FAILED,
            '{"last_index": 10, "items": ["x", null]}',
        ),
        TaskState("a", "a", TaskStatus.PAUSED, True, T0, T0, 1, 0, 0, None, Outcome.SUCCESS, "5"),
    ],
)
@pytest.mark.parametrize("enabled", [True, False])
def test_fast_task_json_equals_the_dict(tasks_dir: Path, state: TaskState, enabled: bool) -> None:
    task = spec("a", "true", tasks_dir)._replace(name=state.name, enabled=enabled)
    times: dict[datetime, str] = {}
    fast = json.loads(task_json_text(task, state, BERLIN, times))
    assert fast == task_json(task, state, BERLIN)
    assert list(fast) == list(task_json(task, state, BERLIN))  # same key order
    # Asked again (the next poll), the same values give the same text, from memory; other
    # values, or another zone, their own.
    again = task_json_text(task, state, BERLIN, {})
    assert again is task_json_text(task, state, BERLIN, {}) and json.loads(again) == fast
    ran = state._replace(run_count=state.run_count + 1)
    assert json.loads(task_json_text(task, ran, BERLIN, {})) == task_json(task, ran, BERLIN)
    utc = ZoneInfo("UTC")
    assert json.loads(task_json_text(task, state, utc, {})) == task_json(task, state, utc)
    # A process that answers once writes the same text without looking it up or keeping it.
    once = task_json_text(task, ran, BERLIN, {}, remember=False)
    assert once == task_json_text(task, ran, BERLIN, {}) and once is not task_json_text(
        task, ran, BERLIN, {}, remember=False
    )


def test_commands_round_trip_the_wire() -> None:
    from commands.command import Chat, Ping, Reload, Request

    for cmd in (Status(), Status("a"), Run("a"), RunAll(), Logs("a", 5), Logs()):
        assert from_wire(to_wire(cmd)) == cmd
    # Chat, reload and ping are commands like the others, in the one request type.
    for cmd in (Chat("run:a"), Reload(), Ping(), Output("a", 3)):
        request = Request(cmd, True, actor="cli:mallory", pid=1)
        back = Request.from_wire(request.to_wire() | {"actor": "cli:root", "pid": 1})
        assert back.command == cmd and back.json is True
        # Never taken from the wire: the receiver sets them from the kernel's word.
        assert back.actor == "cli" and back.pid is None
    with pytest.raises(ValueError, match="text must be str"):
        from_wire({"verb": "chat", "text": 5})
    with pytest.raises(ValueError, match="unknown command"):
        from_wire({"verb": "rm -rf"})
    with pytest.raises(ValueError, match="bad arguments"):
        from_wire({"verb": "run", "task": "a", "shell": True})


@pytest.fixture
async def ctx(store: Store, settings: EngineSettings, tasks_dir: Path) -> Context:
    clock = ManualClock(T0)
    specs = [
        spec("ok", "echo fine", tasks_dir),
        spec("bad", "echo 'it broke' >&2; exit 5", tasks_dir),
        spec("off", "true", tasks_dir)._replace(enabled=False),
    ]
    sched = Scheduler(store, settings, specs, clock=clock)
    return Context(sched, BERLIN, daemon=False)


async def test_status_before_anything_ran(ctx: Context) -> None:
    reply = await execute(Status(), ctx._replace(json=True))
    data = json.loads(await text_of(reply, True))
    assert data["running"] is False and data["task_count"] == 3
    assert [t["id"] for t in data["tasks"]] == ["ok", "bad", "off"]
    assert all(t["status"] == "idle" and t["run_count"] == 0 for t in data["tasks"])
    text = (await execute(Status(), ctx)).text
    assert text.splitlines() == [
        "3 task(s), daemon not running",
        "ok: idle, last never run, next -",
        "bad: idle, last never run, next -",
        "off: disabled, last never run, next -",
    ]


async def test_a_next_run_that_is_past_says_it_is_overdue(ctx: Context) -> None:
    """With no daemon, a due time passes and nothing runs: "next 10:00" at 10:30 read as
    if it were still to come, or had been done."""
    await ctx.scheduler.prepare()
    assert isinstance(ctx.tasks.clock, ManualClock)
    ctx.tasks.clock.advance(1800)
    lines = (await execute(Status(), ctx)).text.splitlines()
    assert lines[1] == "ok: idle, last never run, next 10:00 (overdue)", lines
    detail = (await execute(Status("ok"), ctx)).text.splitlines()
    assert detail[3] == "next run: 10:00 (overdue: no daemon is running)", detail


async def test_runs_and_their_replies(ctx: Context) -> None:
    await ctx.scheduler.prepare()
    loop_task = asyncio.create_task(ctx.scheduler.run(schedule=False))
    try:
        ok = await execute(Run("ok"), ctx)
        assert ok.exit_code == 0 and re.fullmatch(
            r"ok: success \(exit 0 in \d+\.\ds\)\nfine", ok.text
        )
        bad = await execute(Run("bad"), ctx._replace(json=True))
        assert bad.exit_code == 1
        assert bad.data["outcome"] == "failed" and bad.data["exit_code"] == 5
        assert bad.data["stderr"] == "it broke\n" and bad.data["admission"] == "started"
        assert bad.text.endswith("\nit broke")
        unknown = await execute(Run("bda"), ctx)
        assert unknown.exit_code == EXIT_USAGE and unknown.error
        assert unknown.data == {
            "error": "unknown task 'bda' (did you mean bad?)",
            "kind": "unknown-task",
            "nearest": ["bad"],
        }
        assert render(unknown, False) == ("", "moltsched: unknown task 'bda' (did you mean bad?)\n")

        status = json.loads(await text_of(await execute(Status(), ctx._replace(json=True)), True))
        by_id = {t["id"]: t for t in status["tasks"]}
        assert re.fullmatch(r"exit 5 in \d+\.\ds: it broke", by_id["bad"]["last_error"])
        assert by_id["ok"]["last_run"] == "2026-11-26T10:00:00+01:00"
        assert by_id["off"]["next_run"] is None

        one = await execute(Status("bad"), ctx)
        assert re.search(r"^last error: exit 5 in \d+\.\ds: it broke$", one.text, re.M)
        assert one.data["recent_runs"][0]["exit_code"] == 5

        due = await execute(RunAll(), ctx)  # ok and bad are new interval tasks, so due
        assert due.exit_code == 1 and due.text.startswith("ran 2 due task(s), 1 failed")
        ctx.scheduler.clock.advance(60)  # type: ignore[attr-defined]
        nothing = await execute(RunAll(), ctx)
        assert (nothing.exit_code, nothing.text) == (0, "Nothing is due now.")
    finally:
        ctx.scheduler.close()
        await loop_task


async def test_logs(ctx: Context) -> None:
    assert await text_of(await execute(Logs(), ctx), False) == "No log entries yet.\n"
    await ctx.scheduler.store.log("started", "schedule run", task_id="ok", when=T0)
    await ctx.scheduler.store.log(
        "completed", "exit 0 in 1.0s", task_id="ok", when=T0, duration_s=1.0
    )
    reply = await execute(Logs("ok", 1), ctx._replace(json=True))
    assert json.loads(await text_of(reply, True)) == [
        {
            "time": "2026-11-26T10:00:00+01:00",
            "task_id": "ok",
            "action": "completed",
            "message": "exit 0 in 1.0s",
            "duration_s": 1.0,
            "actor": None,
        }
    ]
    assert (await execute(Logs("ok", 0), ctx)).exit_code == EXIT_USAGE
    assert (await execute(Logs("nope"), ctx)).exit_code == EXIT_USAGE


async def test_task_ids_are_matched_whatever_their_case(ctx: Context) -> None:
    await ctx.scheduler.prepare()
    paused = await execute(Pause("Ok"), ctx._replace(actor="signal:+4917612345678"))
    assert paused.exit_code == 0 and paused.text.startswith("Paused ok")
    # Said in the words of where it was asked: the command line's, not the chat's.
    assert paused.text.endswith("no scheduled runs until `moltsched resume ok`.")
    await execute(Resume("ok"), ctx)
    chat = await execute(Pause("ok"), ctx._replace(chat=True))
    assert chat.text.endswith("no scheduled runs until resume:ok.")
    assert (await execute(Status("OK"), ctx)).text.startswith("ok (ok)")
    assert (await execute(Logs("oK"), ctx)).exit_code == 0
    # Only ASCII folds: a Kelvin sign is not a k, and gets the nearest ids.
    kelvin = await execute(Status("o\u212a"), ctx._replace(json=True))
    assert kelvin.exit_code == EXIT_USAGE and kelvin.data["kind"] == "unknown-task"
    assert kelvin.data["nearest"] == ["ok"]


async def test_resume_of_a_disabled_task_says_what_would_schedule_it(ctx: Context) -> None:
    """`resume` is how a phone asks for a task to run on its schedule again: one turned off in
    the configuration was answered "off is not paused.", which left the owner guessing."""
    await ctx.scheduler.prepare()
    chat = await execute(Resume("off"), ctx._replace(chat=True))
    assert chat.exit_code == 0 and chat.text == (
        "off is not paused; it is disabled in the configuration (enabled: false), "
        "so only run:off starts it"
    )
    cli = await execute(Resume("off"), ctx)
    assert cli.text.endswith("so only `moltsched run off` starts it")
    assert (await execute(Resume("ok"), ctx)).text == "ok is not paused."


async def test_output_of_a_run_and_how_status_points_at_it(ctx: Context) -> None:
    await ctx.scheduler.prepare()
    loop_task = asyncio.create_task(ctx.scheduler.run(schedule=False))
    try:
        first = await execute(Run("bad"), ctx)
        await execute(Run("bad"), ctx)
    finally:
        ctx.scheduler.close()
        await loop_task
    newest = await execute(Output("bad"), ctx._replace(json=True))
    assert newest.data["run_id"] > first.data["run_id"]
    assert newest.data["stderr"] == "it broke\n" and newest.data["outcome"] == "failed"
    assert newest.data["message"].startswith("exit 5 in ")
    older = await execute(Output("bad", first.data["run_id"]), ctx._replace(json=True))
    assert older.data["run_id"] == first.data["run_id"]
    text = (await execute(Output("Bad"), ctx)).text
    assert "--- stderr ---\nit broke" in text and "exit 5" in text.splitlines()[0]
    chat = (await execute(Output("bad"), ctx._replace(chat=True))).text
    assert chat.splitlines()[-2:] == ["stderr:", "it broke"]
    for run_id in (999, 10**22, -(10**22)):  # past SQLite's integers: before, a traceback
        missing = await execute(Output("bad", run_id), ctx._replace(json=True))
        assert missing.exit_code == EXIT_USAGE and missing.data["kind"] == "unknown-run"
    never = await execute(Output("ok"), ctx)
    assert never.exit_code == 0 and never.text == "ok has not run yet."
    # The agent gets the shape of every other answer (before: `null`).
    never = await execute(Output("ok"), ctx._replace(json=True))
    assert never.data == {"task_id": "ok"} | {k: None for k in newest.data if k != "task_id"}
    assert "moltsched output bad" in (await execute(Status("bad"), ctx)).text
    assert "send output:bad" in (await execute(Status("bad"), ctx._replace(chat=True))).text
    # "`status bad` lists its recent runs", says an unknown run id: the text does too, with
    # the ids that `output bad RUN_ID` takes (before: only --json had them).
    listed = [ln for ln in (await execute(Status("bad"), ctx)).text.splitlines() if "runs:" in ln]
    newer, older_id = newest.data["run_id"], first.data["run_id"]
    assert listed[-1].startswith(f"recent runs: {newer} failed "), listed
    assert f", {older_id} failed " in listed[-1], listed


async def test_logs_on_a_phone_are_one_line_per_run_with_short_names(ctx: Context) -> None:
    store = ctx.scheduler.store
    uuid = "3f9c2a7e-1b4d-4c8a-8e2f-6d5b9a0c7e14"
    await store.log("command", "run:ok", task_id="ok", actor=f"signal:{uuid}", when=T0)
    await store.log("started", "on-demand run", task_id="ok", when=T0)
    await store.log("completed", "exit 0 in 1.2s", task_id="ok", when=T0, duration_s=1.2)
    await store.log("started", "scheduled run", task_id="bad", when=T0)
    await store.log("failed", "exit 5 in 0.1s: it broke", task_id="bad", when=T0)
    await store.log("started", "scheduled run", task_id="ok", when=T0)  # still running
    await store.log("denied", "from +4915199999999 (not an admin)", when=T0)
    chat = (await execute(Logs(), ctx._replace(chat=True))).text.splitlines()
    assert [line.split(" ", 1)[1] for line in chat] == [
        "- denied: from …9999 (not an admin)",
        "ok running",
        "bad FAILED: exit 5 in 0.1s: it broke",
        "ok ok: 1.2s",
        "run:ok (3f9c2a7e…)",
    ]
    # The command line keeps every entry, with who did it.
    text = (await text_of(await execute(Logs(), ctx), False)).splitlines()
    assert len(text) == 7 and text[-1].endswith(f"command: run:ok [signal:{uuid}]")


async def test_logs_on_a_phone_fold_a_tasks_successes_in_a_row(ctx: Context) -> None:
    """A task every few seconds filled the phone's `logs` with "ok" lines, and pushed the
    failure, the pause and the commands off the screen."""
    store = ctx.scheduler.store
    at = iter(T0 + timedelta(seconds=5 * i) for i in range(100))
    await store.log("started", "scheduled run", task_id="bad", when=next(at))
    await store.log("failed", "exit 5 in 0.1s: it broke", task_id="bad", when=next(at))
    for _ in range(3):  # ok every 5 s, bad's successes between them
        for task in ("ok", "bad"):
            await store.log("started", "scheduled run", task_id=task, when=next(at))
            await store.log("completed", "exit 0", task_id=task, when=next(at), duration_s=0.1)
    await store.log("paused", "paused by cli:alice", task_id="ok", when=next(at))
    for _ in range(2):
        await store.log("started", "scheduled run", task_id="ok", when=next(at))
        await store.log("completed", "exit 0", task_id="ok", when=next(at), duration_s=0.2)
    reply = await execute(Logs(), ctx._replace(chat=True))
    assert [line.split(" ", 1)[1] for line in reply.text.splitlines()] == [
        "ok ok: 0.2s, 2 in a row since 10:01:20",
        "ok paused: paused by cli:alice",
        "bad ok: 0.1s, 3 in a row since 10:00:25",
        "ok ok: 0.1s, 3 in a row since 10:00:15",
        "bad FAILED: exit 5 in 0.1s: it broke",
    ]
    assert [d["in_a_row"] for d in reply.data] == [2, 1, 3, 3, 1]
    # The command line and its JSON keep every entry.
    assert len((await text_of(await execute(Logs(), ctx), False)).splitlines()) == 19


def test_short_names() -> None:
    assert short_actor("signal:+4917612345678") == "…5678"
    assert short_actor("cli:alice") == "alice"
    assert short_actor(None) == ""
    assert shorten_ids("from 3F9C2A7E-1b4d-4c8a-8e2f-6d5b9a0c7e14 x") == "from 3F9C2A7E… x"
