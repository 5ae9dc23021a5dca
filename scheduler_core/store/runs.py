"""The run table's rows: a run starting and ending (one statement each, see migration 4),
crash recovery, retention of runs and their output."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler_core.errors import lost_schema
from scheduler_core.model import Cause, Ended, LaterRun, Outcome, RunRecord, TaskState
from scheduler_core.store.core import (
    _BATCH,
    SCHEMA_NAMES,
    StoreCore,
    _Tx,
    from_epoch,
    lost,
    to_epoch,
)
from scheduler_core.store.later import insert_later
from scheduler_core.store.tasks import _state, _task_of

_LOG_PRUNE_EVERY_S = 3600.0  # the action log is pruned with a run's end at most this often
_CLEAR_BATCH = 500  # runs whose output is cleared in one transaction, at most


# A run's end: its row, and (RETURNING, after the `run_ended` trigger) its task as left and
# the output kept in all. Parameters: the run's columns, its id, then the task's id (?11).
FINISH_RUN = (
    "UPDATE run SET ended = ?, outcome = ?, exit_code = ?, duration_s = ?, stdout = ?, "
    "stderr = ?, output_bytes = ?, message = ?, retried = ? WHERE id = ? RETURNING "
    + _task_of("?11")
    + ", (SELECT output_bytes FROM usage) AS output_total"
)


def start_runs_sql(count: int) -> str:
    """The statement that records `count` runs starting, returning (id, task, checkpoint).

    The CAST lets SQLite find the task by its key: compared as it stands, the new row's
    `task_id` made it scan every task for every run started (EXPLAIN QUERY PLAN: SCAN task)."""
    return (
        "INSERT INTO run (task_id, cause, due, started, next_due) VALUES "
        + ", ".join("(?, ?, ?, ?, ?)" for _ in range(count))
        + " RETURNING id, task_id, (SELECT checkpoint FROM task WHERE id = CAST(task_id AS TEXT))"
    )


class RunRows(StoreCore):
    async def start_run(
        self, task_id: str, cause: Cause, due: datetime | None, started: datetime
    ) -> tuple[int, str | None]:
        """Record that a run started; returns its run id and the task's checkpoint."""
        (record,) = await self.start_runs([(task_id, cause, due)], started)
        return record

    async def start_runs(
        self,
        runs: Sequence[tuple[str, Cause, datetime | None]],
        started: datetime,
        kept: Sequence[int] = (),
        next_due: Mapping[str, datetime] | None = None,
    ) -> list[tuple[int, str | None]]:
        """Record runs that start together; (run id, checkpoint) each. One statement per
        batch of runs (the `run_started` trigger updates the task and the log), which also
        records `next_due`, the next slots of the tasks whose slot's run this is. `kept`: the
        ids of the runs kept for later (one-shots, retries) that these are, which leave the
        `later` table in the same transaction: a crash between the two would lose them."""
        at = started.timestamp()
        nxt = next_due or {}
        inserts = [
            (
                start_runs_sql(len(batch)),
                [
                    v
                    for t, cause, due in batch
                    for v in (t, str(cause), to_epoch(due), at, to_epoch(nxt.get(t)))
                ],
            )
            for batch in (runs[i : i + _BATCH] for i in range(0, len(runs), _BATCH))
        ]

        async def step(tx: _Tx) -> list[Any]:
            await tx.many("DELETE FROM later WHERE id = ?", [(i,) for i in kept])
            return [row for sql, params in inserts for row in await tx.rows(sql, params)]

        if kept:
            rows = await self._write(step)
        else:  # each batch its own transaction, in one trip
            rows = [row for sql, params in inserts for row in await self._write_one(sql, params)]
        records = {task_id: (run_id, checkpoint) for run_id, task_id, checkpoint in rows}
        return [records[t] for t, _, _ in runs]

    async def probe(self) -> None:
        """A write that changes nothing, to learn whether writes work again (`health`): the
        schema version set to itself, which writes a page (an UPDATE to the same value
        writes none, so it would work on a full disk). Not while part of the schema is gone
        (dropped by hand): the writes that need it would fail again."""

        async def same_version(tx: _Tx) -> None:
            missing = lost(await tx.rows(SCHEMA_NAMES))
            if missing:
                raise lost_schema(self.path, missing)
            (version,) = await tx.row("PRAGMA user_version")
            await tx.run(f"PRAGMA user_version = {int(version)}")

        await self._write(same_version, proof=True)

    async def finish_run(self, run_id: int, task_id: str, end: Ended, when: datetime) -> TaskState:
        """Record how a run ended, update the task's counters, and apply retention."""
        state, _ = await self._record_end(run_id, task_id, end, when, None)
        return state

    async def finish_and_retry(
        self, run_id: int, task_id: str, end: Ended, when: datetime, retry: LaterRun, note: str
    ) -> tuple[TaskState, LaterRun]:
        """`finish_run` for a failed run that a retry follows, and the retry kept (as
        `retry`, with the id the table gives it), in the same transaction: the run's row
        says a retry follows (its alert waits for the retry), so the retry must never be
        lost without it."""
        state, kept = await self._record_end(run_id, task_id, end, when, (retry, note))
        assert kept is not None
        return state, kept

    async def _record_end(
        self,
        run_id: int,
        task_id: str,
        end: Ended,
        when: datetime,
        retry: tuple[LaterRun, str] | None,
    ) -> tuple[TaskState, LaterRun | None]:
        keep = self.retention
        if keep.runs_per_task != self._runs_per_task:  # at the first run, and after a reload
            await self._write_one("UPDATE retention SET runs_per_task = ?", (keep.runs_per_task,))
            self._runs_per_task = keep.runs_per_task
        size = len(end.stdout.encode()) + len(end.stderr.encode())
        params = (
            when.timestamp(),
            str(end.outcome),
            end.exit_code,
            round(end.duration_s, 3),
            end.stdout,
            end.stderr,
            size,
            end.message,
            int(retry is not None),
            run_id,
            task_id,
        )
        kept = None
        if retry is None:
            rows = await self._write_one(FINISH_RUN, params)
        else:
            later, note = retry

            async def step(tx: _Tx) -> tuple[list[Any], LaterRun]:
                return await tx.rows(FINISH_RUN, params), await insert_later(tx, later, when, note)

            rows, kept = await self._write(step)
        *task, total = rows[0]  # the task's columns, then the output total
        now = time.time()
        if now - self._last_log_prune > _LOG_PRUNE_EVERY_S:
            self._last_log_prune = now
            cutoff = now - keep.log_days * 86400
            await self._write_one("DELETE FROM log WHERE time < ?", (cutoff,))
            await self.prune_output(total)
        elif total > keep.output_bytes:
            await self.prune_output(total)
        return _state(task), kept

    async def prune_output(self, total: int | None = None) -> int:
        """Clear the output of the oldest runs until all that is kept fits the retention
        budget, then give the freed pages back to the file system. Returns bytes cleared."""
        budget = self.retention.output_bytes

        async def step(tx: _Tx) -> tuple[int, bool]:
            (now_total,) = await tx.row("SELECT output_bytes FROM usage")
            excess = now_total - budget
            cleared = 0
            rows = await tx.rows(
                "SELECT id, output_bytes FROM run WHERE output_bytes > 0 AND outcome IS NOT NULL "
                "ORDER BY id LIMIT ?",
                (_CLEAR_BATCH,),
            )
            ids = []
            for run_id, size in rows:
                if cleared >= excess:
                    break
                ids.append((run_id,))
                cleared += size
            await tx.many(
                "UPDATE run SET stdout = '', stderr = '', output_bytes = 0 WHERE id = ?", ids
            )
            await tx.run("UPDATE usage SET output_bytes = output_bytes - ?", (cleared,))
            return cleared, cleared < excess and len(rows) == _CLEAR_BATCH

        cleared = 0
        more = total is None or total > budget
        while more:
            done, more = await self._write(step)
            cleared += done
            if not done:
                break
        # A pragma that frees one page per step: executescript steps it to the end. On the
        # writer, so in its turn: never inside another coroutine's transaction.
        async with self._writing:
            with self._translated():
                await self._conn.executescript("PRAGMA incremental_vacuum")
        return cleared

    async def open_runs(self) -> list[tuple[int, str]]:
        """The (run id, task id) of every run not ended: at a start, those a daemon that died
        left open."""
        rows = await self._read("SELECT id, task_id FROM run WHERE outcome IS NULL ORDER BY id")
        return [(run_id, task_id) for run_id, task_id in rows]

    async def recover_crashed(self, now: datetime) -> list[tuple[int, str]]:
        """Runs still open from a daemon that died are recorded `interrupted`; returns their
        (run id, task id)."""
        at = now.timestamp()

        async def step(tx: _Tx) -> list[tuple[int, str]]:
            rows = await tx.rows("SELECT id, task_id, started FROM run WHERE outcome IS NULL")
            # The run_ended trigger marks each task interrupted and logs it.
            await tx.many(
                "UPDATE run SET outcome = 'interrupted', ended = ?, duration_s = ?, "
                "message = 'moltsched was killed during this run (or the machine went down); "
                "it will resume' WHERE id = ?",
                [(at, max(0.0, at - started), run_id) for run_id, _, started in rows],
            )
            return [(run_id, task_id) for run_id, task_id, _ in rows]

        return await self._write(step)

    async def runs(self, task_id: str, limit: int = 20) -> list[RunRecord]:
        """The newest runs of a task, newest first."""
        rows = await self._read(
            f"SELECT {_RUN_COLUMNS} FROM run WHERE task_id = ? ORDER BY id DESC LIMIT ?",
            (task_id, limit),
        )
        return [_run(r) for r in rows]

    async def run(self, task_id: str, run_id: int | None = None) -> RunRecord | None:
        """One run of a task (the newest that has ended, by default), with its output."""
        if run_id is None:
            rows = await self._read(
                f"SELECT {_RUN_COLUMNS} FROM run WHERE task_id = ? AND ended IS NOT NULL "
                "ORDER BY id DESC LIMIT 1",
                (task_id,),
            )
        elif -(2**63) <= run_id < 2**63:  # beyond SQLite's integers, no run has that id
            rows = await self._read(
                f"SELECT {_RUN_COLUMNS} FROM run WHERE task_id = ? AND id = ?", (task_id, run_id)
            )
        else:
            rows = []
        return _run(rows[0]) if rows else None


_RUN_COLUMNS = (
    "id, task_id, cause, due, started, ended, outcome, exit_code, duration_s, stdout, stderr, "
    "message"
)


def _run(row: Sequence[Any]) -> RunRecord:
    """A run row (the `_RUN_COLUMNS`, unpacked by name)."""
    (
        run_id,
        task_id,
        cause,
        due,
        started,
        ended,
        outcome,
        exit_code,
        duration_s,
        stdout,
        stderr,
        message,
    ) = row
    return RunRecord(
        run_id=run_id,
        task_id=task_id,
        cause=Cause(cause),
        due=from_epoch(due),
        started=datetime.fromtimestamp(started, UTC),
        ended=from_epoch(ended),
        outcome=Outcome(outcome) if outcome else None,
        exit_code=exit_code,
        duration_s=duration_s,
        stdout=stdout,
        stderr=stderr,
        message=message,
    )
