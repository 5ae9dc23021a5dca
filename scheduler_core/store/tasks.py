"""The task table's rows: what each task is doing, its next slot, its pause and checkpoint;
and history brought in from elsewhere (`import_history`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler_core.model import (
    OUTCOME_BY_VALUE,
    STATUS_BY_VALUE,
    LogEntry,
    TaskSpec,
    TaskState,
    shown_status,
)
from scheduler_core.store.core import _BATCH, StoreCore, _Tx, to_epoch
from scheduler_core.triggers import schedule_key

_TASK_COLUMNS = ", ".join(TaskState._fields)


def _task_of(param: str) -> str:
    """A task's columns, as the RETURNING of a statement on `run` can read them: the task's
    id is the parameter `param` (`run.task_id` there would make SQLite scan every task)."""
    return ", ".join(
        f"(SELECT {column} FROM task WHERE id = {param}) AS {column}"
        for column in _TASK_COLUMNS.split(", ")
    )


def _state(row: Sequence[Any]) -> TaskState:
    """A task row as its state. The row holds the `_TASK_COLUMNS`, which are TaskState's own
    field names, so each value is unpacked into the name it has in both. (Tuples rather than
    sqlite3.Row: `status --json` reads 10,000 of these, and Row takes half as long again.)"""
    (
        task_id,
        name,
        status,
        paused,
        last_run,
        next_run,
        run_count,
        error_count,
        consecutive_failures,
        last_error,
        last_outcome,
        checkpoint,
        alerted_at,
    ) = row
    return TaskState(
        task_id,
        name,
        shown_status(STATUS_BY_VALUE[status], bool(paused), queued=False),
        bool(paused),
        None if last_run is None else datetime.fromtimestamp(last_run, UTC),
        None if next_run is None else datetime.fromtimestamp(next_run, UTC),
        run_count,
        error_count,
        consecutive_failures,
        last_error,
        OUTCOME_BY_VALUE[last_outcome] if last_outcome else None,
        checkpoint,
        None if alerted_at is None else datetime.fromtimestamp(alerted_at, UTC),
    )


class TaskRows(StoreCore):
    async def sync_tasks(self, specs: Sequence[TaskSpec]) -> set[str]:
        """Make the task table match the configuration; removed tasks keep their history.
        The ids of tasks whose schedule is not the one their stored next run was decided by
        (one the file changed while no daemon ran; a row from before schedules were kept
        counts as unchanged)."""
        now = time.time()
        keys = {s.id: schedule_key(s.trigger) for s in specs}
        rows = [(s.id, s.name, i, now, keys[s.id]) for i, s in enumerate(specs)]
        changed: set[str] = set()

        async def step(tx: _Tx) -> None:
            changed.clear()  # a retried transaction starts again
            for task_id, key in await tx.rows("SELECT id, schedule FROM task"):
                if key is not None and keys.get(task_id, key) != key:
                    changed.add(task_id)
            await tx.run("UPDATE task SET configured = 0")
            await tx.many(
                "INSERT INTO task (id, name, position, configured, added, schedule) "
                "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "position = excluded.position, configured = 1, schedule = excluded.schedule, "
                "added = COALESCE(task.added, excluded.added)",
                rows,
            )

        await self._write(step)
        return changed

    async def states(self) -> list[TaskState]:
        """Every configured task's state, in configuration order."""
        rows = await self._read(
            f"SELECT {_TASK_COLUMNS} FROM task WHERE configured = 1 ORDER BY position"
        )
        return [_state(r) for r in rows]

    async def unsettled(self) -> list[str]:
        """The configured tasks that are not simply idle (running, failed, cut short or
        paused), in configuration order."""
        rows = await self._read(
            "SELECT id FROM task WHERE configured = 1 AND (status != 'idle' OR paused = 1) "
            "ORDER BY position"
        )
        return [row[0] for row in rows]

    async def iter_states(self, batch: int = 2000) -> AsyncIterator[list[TaskState]]:
        """Every configured task's state in configuration order, a batch at a time.

        Each batch is its own short read (keyset paging on the position), so a slow reader
        holds no cursor open and a 10,000-task answer never sits in memory whole.
        """
        after = -1
        while True:
            rows = await self._read(
                f"SELECT position, {_TASK_COLUMNS} FROM task "
                "WHERE configured = 1 AND position > ? ORDER BY position LIMIT ?",
                (after, batch),
            )
            if not rows:
                return
            after = rows[-1][0]  # the position, first
            yield [_state(r[1:]) for r in rows]
            if len(rows) < batch:
                return

    async def states_of(self, ids: Sequence[str]) -> list[TaskState]:
        """The states of these tasks that the store has seen, in no set order (a batch at a
        time: SQLite allows only so many parameters in one statement)."""
        states = []
        for i in range(0, len(ids), _BATCH):
            batch = ids[i : i + _BATCH]
            marks = ", ".join("?" * len(batch))
            rows = await self._read(
                f"SELECT {_TASK_COLUMNS} FROM task WHERE id IN ({marks})", batch
            )
            states += [_state(r) for r in rows]
        return states

    async def state(self, task_id: str) -> TaskState | None:
        """One task's state, or None if the store has never seen it."""
        rows = await self._read(f"SELECT {_TASK_COLUMNS} FROM task WHERE id = ?", (task_id,))
        return _state(rows[0]) if rows else None

    async def set_next_runs(self, items: Sequence[tuple[str, datetime | None]]) -> None:
        """Record when tasks are due next."""
        if not items:
            return
        rows = [(to_epoch(when), tid) for tid, when in items]
        for i in range(0, len(rows), _BATCH):  # one statement per batch: one trip each
            batch = rows[i : i + _BATCH]
            await self._write_one(
                "UPDATE task SET next_run = v.column1 FROM (VALUES "
                + ", ".join("(?, ?)" for _ in batch)
                + ") AS v WHERE task.id = v.column2",
                [value for row in batch for value in row],
            )

    async def set_paused(self, task_id: str, paused: bool, actor: str | None) -> TaskState:
        """Pause or resume a task (it persists across restarts), and log who did it."""
        at = time.time()
        action = "paused" if paused else "resumed"

        async def step(tx: _Tx) -> TaskState:
            row = await tx.row(
                f"UPDATE task SET paused = ? WHERE id = ? RETURNING {_TASK_COLUMNS}",
                (int(paused), task_id),
            )
            await tx.log(at, task_id, action, f"{action} by {actor or 'unknown'}", None, actor)
            return _state(row)

        return await self._write(step)

    async def set_checkpoint(self, task_id: str, text: str | None) -> None:
        """Replace (or with None clear) a task's checkpoint."""
        await self._write_one(
            "INSERT INTO task (id, name, configured, checkpoint) VALUES (?, ?, 0, ?) "
            "ON CONFLICT (id) DO UPDATE SET checkpoint = excluded.checkpoint",
            (task_id, task_id, text),
        )

    async def import_history(
        self, states: Sequence[TaskState], logs: Sequence[LogEntry], actor: str
    ) -> tuple[int, int]:
        """Bring in task states and log entries kept elsewhere (`bot.import_seed`); safe to
        repeat. Returns how many states changed and how many entries were new.

        A task that has run here since keeps its own state (the imported one is older). Log
        entries are written with `actor` and not inserted twice.
        """

        async def step(tx: _Tx) -> tuple[int, int]:
            new_states = 0
            for st in states:
                ours = await tx.row("SELECT run_count, last_run FROM task WHERE id = ?", (st.id,))
                imported = (st.run_count, to_epoch(st.last_run))
                kept = None if ours is None else tuple(ours)  # (run_count, last_run)
                if kept is not None and kept != (0, None) and kept != imported:
                    continue  # it has run here since: ours is newer
                await tx.run(
                    "INSERT INTO task (id, name, configured) VALUES (?, ?, 0) "
                    "ON CONFLICT (id) DO NOTHING",
                    (st.id, st.name),
                )
                new_states += await tx.run(
                    "UPDATE task SET status = ?, paused = ?, last_run = ?, next_run = ?, "
                    "run_count = ?, error_count = ?, last_error = ?, last_outcome = ?, "
                    "checkpoint = ? WHERE id = ? AND NOT (run_count IS ? AND last_run IS ? "
                    "AND checkpoint IS ? AND paused = ?)",
                    (
                        str(st.status),
                        int(st.paused),
                        to_epoch(st.last_run),
                        to_epoch(st.next_run),
                        st.run_count,
                        st.error_count,
                        st.last_error,
                        str(st.last_outcome) if st.last_outcome else None,
                        st.checkpoint,
                        st.id,
                        st.run_count,
                        to_epoch(st.last_run),
                        st.checkpoint,
                        int(st.paused),
                    ),
                )
            new_logs = 0
            for entry in logs:
                at = entry.time.timestamp()
                seen = await tx.row(
                    "SELECT 1 FROM log WHERE time = ? AND task_id = ? AND action = ? "
                    "AND message = ? AND actor = ?",
                    (at, entry.task_id, entry.action, entry.message, actor),
                )
                if seen is None:
                    await tx.log(
                        at, entry.task_id, entry.action, entry.message, entry.duration_s, actor
                    )
                    new_logs += 1
            return new_states, new_logs

        return await self._write(step)
