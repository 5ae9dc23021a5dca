"""The SQLite store on a real file: migrations, run bookkeeping, crash recovery, retention."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler_core.checkpoint import load_checkpoint, save_checkpoint
from scheduler_core.errors import StoreError
from scheduler_core.migrations import MIGRATIONS, objects
from scheduler_core.model import Cause, Ended, EngineSettings, Outcome, Status
from scheduler_core.store import Store
from scheduler_core.store.runs import FINISH_RUN, start_runs_sql
from scheduler_core.triggers import Every
from tests.helpers import query, spec

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


async def finish_ok(store: Store, run_id: int, task_id: str) -> None:
    await store.finish_run(run_id, task_id, Ended(Outcome.SUCCESS, "", 0, 0.0, "", ""), T0)


async def test_schema_pragmas_and_reopening(store: Store, settings: EngineSettings) -> None:
    db = settings.db_path
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    assert query(db, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    await store.close()
    again = await Store.open(db)  # migrating an up-to-date file changes nothing
    assert await again.states() == []
    await again.close()
    tables = {r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"task", "run", "log"} <= tables


async def test_a_log_entry_of_text_that_is_not_utf8_is_kept(store: Store, tasks_dir: Path) -> None:
    """A command line's byte that is not UTF-8 comes to Python as a lone surrogate, as does a
    `\\udcff` escape in JSON: SQLite refused the entry ("could not audit run:\\udcff"), and
    the command went unrecorded. It is kept, the character escaped."""
    await store.sync_tasks([spec("t", "true", tasks_dir)])
    await store.log("command", "run:\udcff", task_id="t", actor="cli:r\udcffoot")
    await store.set_paused("t", True, "cli:\udcfe")
    entries = [(e.action, e.message, e.actor) for e in await store.logs("t", 10)]
    assert entries == [
        ("paused", "paused by cli:\\udcfe", "cli:\\udcfe"),
        ("command", "run:\\udcff", "cli:r\\udcffoot"),
    ]


async def test_a_run_updates_state_counts_and_log(store: Store, tasks_dir: Path) -> None:
    a = spec("a", "true", tasks_dir)
    await store.sync_tasks([a])
    run_id, checkpoint = await store.start_run("a", Cause.SCHEDULE, T0, T0)
    assert checkpoint is None
    state = await store.state("a")
    assert state is not None and state.status is Status.RUNNING and state.last_run == T0
    state = await store.finish_run(
        run_id,
        "a",
        Ended(Outcome.FAILED, "exit 3 in 2.0s: boom", 3, 2.0, "out", "boom"),
        T0 + timedelta(seconds=2),
    )
    assert (state.status, state.run_count, state.error_count) == (Status.ERROR, 1, 1)
    assert state.last_error == "exit 3 in 2.0s: boom" and state.last_outcome is Outcome.FAILED
    run_id, _ = await store.start_run("a", Cause.ON_DEMAND, None, T0)
    state = await store.finish_run(
        run_id, "a", Ended(Outcome.SUCCESS, "exit 0", 0, 0.1, "", ""), T0
    )
    assert (state.status, state.run_count, state.error_count) == (Status.IDLE, 2, 1)
    assert state.last_error is None and state.consecutive_failures == 0
    (latest, first) = await store.runs("a")
    assert (first.exit_code, first.stderr, first.cause, first.due) == (
        3,
        "boom",
        Cause.SCHEDULE,
        T0,
    )
    assert latest.outcome is Outcome.SUCCESS
    actions = [e.action for e in await store.logs("a")]
    assert actions == ["completed", "started", "failed", "started"]


async def test_sync_keeps_history_of_removed_tasks(store: Store, tasks_dir: Path) -> None:
    a, b = spec("a", "true", tasks_dir), spec("b", "true", tasks_dir)
    await store.sync_tasks([a, b])
    await store.set_next_runs([("a", T0)])
    await store.sync_tasks([b])
    assert [s.id for s in await store.states()] == ["b"]
    await store.sync_tasks([b, a])
    states = await store.states()
    assert [s.id for s in states] == ["b", "a"]
    assert states[1].next_run == T0


async def test_crashed_runs_are_recorded_interrupted(store: Store, tasks_dir: Path) -> None:
    await store.sync_tasks([spec("a", "true", tasks_dir)])
    await store.start_run("a", Cause.SCHEDULE, T0, T0)
    (run,) = await store.runs("a")
    assert await store.recover_crashed(T0 + timedelta(seconds=5)) == [(run.run_id, "a")]
    (run,) = await store.runs("a")
    assert run.outcome is Outcome.INTERRUPTED and run.duration_s == 5
    state = await store.state("a")
    assert state is not None and state.status is Status.INTERRUPTED
    assert await store.recover_crashed(T0) == []


async def test_retention_keeps_the_last_1000_runs(store: Store, tasks_dir: Path) -> None:
    await store.sync_tasks([spec("a", "true", tasks_dir), spec("b", "true", tasks_dir)])
    await store.start_run("b", Cause.SCHEDULE, None, T0)
    for _ in range(1003):
        run_id, _ = await store.start_run("a", Cause.SCHEDULE, None, T0)
        await finish_ok(store, run_id, "a")
    db = store.path
    assert query(db, "SELECT COUNT(*) FROM run WHERE task_id = 'a'") == [(1000,)]
    assert query(db, "SELECT MAX(id) - MIN(id) FROM run WHERE task_id = 'a'") == [(999,)]
    assert query(db, "SELECT COUNT(*) FROM run WHERE task_id = 'b'") == [(1,)]


async def test_retention_keeps_90_days_of_log(settings: EngineSettings) -> None:
    store = await Store.open(settings.db_path)
    old = datetime.now(UTC) - timedelta(days=91)
    await store.log("note", "old", when=old)
    await store.log("note", "recent", when=datetime.now(UTC) - timedelta(days=89))
    await store.sync_tasks([])
    await store.sync_tasks([spec("a", "true", settings.tasks_dir)])
    run_id, _ = await store.start_run("a", Cause.SCHEDULE, None, T0)
    await finish_ok(store, run_id, "a")
    messages = [e.message for e in await store.logs(limit=100)]
    assert "old" not in messages and "recent" in messages
    await store.close()


async def test_checkpoints_from_a_task_process_reach_the_store(
    store: Store, settings: EngineSettings, tasks_dir: Path
) -> None:
    await store.sync_tasks([spec("a", "true", tasks_dir, trigger=Every(60))])
    save_checkpoint({"last_index": 10}, "a", db=settings.db_path)
    _, checkpoint = await store.start_run("a", Cause.RESUME, None, T0)
    assert checkpoint == '{"last_index":10}'
    assert load_checkpoint("a", db=settings.db_path) == {"last_index": 10}
    save_checkpoint(None, "a", db=settings.db_path)
    assert load_checkpoint("a", db=settings.db_path) is None


async def test_single_writes_asked_at_once_apply_in_the_order_asked(
    store: Store, tasks_dir: Path
) -> None:
    """A statement of its own is handed to the database thread without waiting for the one
    before it to be answered: all of them apply, in the order asked, around a transaction
    asked among them."""
    await store.sync_tasks([spec("a", "true", tasks_dir)])
    asked = []
    for i in range(40):
        asked += [store.log("note", str(i), task_id="a"), store.set_checkpoint("a", f"[{i}]")]
        if i == 20:
            asked.append(store.set_paused("a", True, "tester"))
    await asyncio.gather(*asked)
    notes = query(store.path, "SELECT message FROM log WHERE action = 'note' ORDER BY id")
    assert [int(m) for (m,) in notes] == list(range(40))
    assert query(store.path, "SELECT checkpoint, paused FROM task") == [("[39]", 1)]
    assert query(store.path, "SELECT COUNT(*) FROM log WHERE action = 'paused'") == [(1,)]


async def test_a_run_start_reads_its_task_by_key_not_by_scanning(
    store: Store, tasks_dir: Path
) -> None:
    """The checkpoint a run starts from is looked up by its task's id: correlated on the new
    row's `task_id` as it is, SQLite scanned every task for every run started (a burst of
    10,000 tasks read 10,000 rows a run)."""
    await store.sync_tasks([spec(f"t{i}", "true", tasks_dir) for i in range(50)])
    for count in (1, 3):
        sql = "EXPLAIN QUERY PLAN " + start_runs_sql(count)
        plan = query(store.path, sql, ("t1", "schedule", None, 1.0, None) * count)
        details = [row[-1] for row in plan]
        assert any(d.startswith("SEARCH task") for d in details), details
        assert not [d for d in details if d.startswith("SCAN task")], details


async def test_a_run_end_reads_its_task_by_key_not_by_scanning(
    store: Store, tasks_dir: Path
) -> None:
    """The task's columns in the RETURNING are looked up by its id: correlated on
    `run.task_id` instead, SQLite scans every task for each column of every run's end."""
    await store.sync_tasks([spec(f"t{i}", "true", tasks_dir) for i in range(50)])
    plan = query(store.path, "EXPLAIN QUERY PLAN " + FINISH_RUN, (*range(10), "t1"))
    details = [row[-1] for row in plan]
    assert any(d.startswith("SEARCH task") for d in details), details
    assert not [d for d in details if d.startswith("SCAN task")], details


async def test_the_schema_read_from_the_migrations_is_the_one_they_make(
    store: Store, settings: EngineSettings
) -> None:
    """What the store checks a file for (`objects()`) is what the migrations really made."""
    made = query(
        settings.db_path, "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
    )
    assert {f"{kind} {name}" for kind, name in made} == objects()


async def test_a_table_dropped_while_open_stops_writes_until_the_file_is_whole(
    store: Store, settings: EngineSettings
) -> None:
    """Dropped by hand while the daemon runs: a write that needs the table fails as damage (the
    daemon's alarm speaks: no run can start), and the probe, which needs no table, does not
    say that writes work again."""
    with contextlib.closing(sqlite3.connect(settings.db_path)) as other:
        other.execute("DROP TABLE log")
    with pytest.raises(StoreError) as caught:
        await store.log("paused", "by hand")
    assert caught.value.kind == "damaged" and store.health.error is not None
    with pytest.raises(StoreError, match="its table log, index log_by_task, index log_by_time"):
        await store.probe()
    assert store.health.error is not None and store.health.error.kind == "damaged"
