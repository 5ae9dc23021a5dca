"""The command layer on a real store and scheduler: replies, JSON shapes, exit codes."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from commands.command import Logs, Run, RunAll, Status, from_wire, to_wire
from commands.execute import Context, execute, task_json, task_json_text
from commands.reply import EXIT_USAGE, Reply, output, render
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
    task = replace(spec("a", "true", tasks_dir), name=state.name, enabled=enabled)
    times: dict[datetime, str] = {}
    fast = json.loads(task_json_text(task, state, BERLIN, times))
    assert fast == task_json(task, state, BERLIN)
    assert list(fast) == list(task_json(task, state, BERLIN))  # same key order


def test_commands_round_trip_the_wire() -> None:
    for cmd in (Status(), Status("a"), Run("a"), RunAll(), Logs("a", 5), Logs()):
        assert from_wire(to_wire(cmd)) == cmd
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
        replace(spec("off", "true", tasks_dir), enabled=False),
    ]
    sched = Scheduler(store, settings, specs, clock=clock)
    return Context(sched, BERLIN, daemon=False)


async def test_status_before_anything_ran(ctx: Context) -> None:
    reply = await execute(Status(), replace(ctx, json=True))
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


async def test_runs_and_their_replies(ctx: Context) -> None:
    await ctx.scheduler.prepare()
    loop_task = asyncio.create_task(ctx.scheduler.run(schedule=False))
    try:
        ok = await execute(Run("ok"), ctx)
        assert ok.exit_code == 0 and re.fullmatch(
            r"ok: success \(exit 0 in \d+\.\ds\)\nfine", ok.text
        )
        bad = await execute(Run("bad"), replace(ctx, json=True))
        assert bad.exit_code == 1
        assert bad.data["outcome"] == "failed" and bad.data["exit_code"] == 5
        assert bad.data["stderr"] == "it broke\n" and bad.data["admission"] == "started"
        assert bad.text.endswith("\nit broke")
        unknown = await execute(Run("bda"), ctx)
        assert unknown.exit_code == EXIT_USAGE and unknown.error
        assert unknown.data == {
            "error": "unknown task 'bda' (did you mean bad?)",
            "nearest": ["bad"],
        }
        assert render(unknown, False) == ("", "unknown task 'bda' (did you mean bad?)\n")

        status = json.loads(await text_of(await execute(Status(), replace(ctx, json=True)), True))
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
    assert (await execute(Logs(), ctx)).text == "No log entries yet."
    await ctx.scheduler.store.log("started", "schedule run", task_id="ok", when=T0)
    await ctx.scheduler.store.log(
        "completed", "exit 0 in 1.0s", task_id="ok", when=T0, duration_s=1.0
    )
    reply = await execute(Logs("ok", 1), replace(ctx, json=True))
    assert reply.data == [
        {
            "time": "2026-11-26T10:00:00+01:00",
            "task_id": "ok",
            "action": "completed",
            "message": "exit 0 in 1.0s",
            "duration_s": 1.0,
        }
    ]
    assert (await execute(Logs("ok", 0), ctx)).exit_code == EXIT_USAGE
    assert (await execute(Logs("nope"), ctx)).exit_code == EXIT_USAGE
