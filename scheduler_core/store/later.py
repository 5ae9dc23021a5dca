"""The later table's rows: runs asked for at a time (one-shots and retries), kept until they
start, so a restart loses none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler_core.model import Cause, LaterRun
from scheduler_core.store.core import StoreCore, _Tx, from_epoch, to_epoch

_COLUMNS = "id, task_id, cause, due, attempt, actor, took_slot"


def _later(row: Sequence[Any]) -> LaterRun:
    later_id, task_id, cause, due, attempt, actor, took_slot = row
    return LaterRun(
        later_id,
        task_id,
        Cause(cause),
        datetime.fromtimestamp(due, UTC),
        attempt,
        actor,
        from_epoch(took_slot),
    )


async def insert_later(tx: _Tx, run: LaterRun, now: datetime, note: str) -> LaterRun:
    """Keep `run` (its id is given by the table) and log it (`scheduled`, with `note`)."""
    row = await tx.row(
        "INSERT INTO later (task_id, cause, due, created, attempt, actor, took_slot) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (
            run.task_id,
            str(run.cause),
            run.due.timestamp(),
            now.timestamp(),
            run.attempt,
            run.actor,
            to_epoch(run.took_slot),
        ),
    )
    await tx.log(now.timestamp(), run.task_id, "scheduled", note, None, run.actor)
    return _later(row)


class LaterRows(StoreCore):
    async def add_one_shot(
        self,
        task_id: str,
        due: datetime,
        now: datetime,
        *,
        actor: str | None,
        note: str,
        limit: int,
        near_s: float,
    ) -> tuple[LaterRun, bool] | None:
        """Keep a one-shot run for `due`, and log it (`scheduled`, with `note`): the run and
        True. A one-shot of the task waiting already less than `near_s` from `due` is taken
        for this one: it and False, nothing kept or logged. None, and nothing kept, when the
        task has `limit` one-shots waiting."""
        cause = str(Cause.ONE_SHOT)

        async def step(tx: _Tx) -> tuple[LaterRun, bool] | None:
            near = await tx.rows(
                f"SELECT {_COLUMNS} FROM later WHERE task_id = ? AND cause = ? "
                "AND abs(due - ?) < ? ORDER BY abs(due - ?) LIMIT 1",
                (task_id, cause, due.timestamp(), near_s, due.timestamp()),
            )
            if near:
                return _later(near[0]), False
            (count,) = await tx.row(
                "SELECT COUNT(*) FROM later WHERE task_id = ? AND cause = ?", (task_id, cause)
            )
            if count >= limit:
                return None
            run = LaterRun(0, task_id, Cause.ONE_SHOT, due, 0, actor)
            return await insert_later(tx, run, now, note), True

        return await self._write(step)

    async def later_runs(self, task_id: str | None = None) -> list[LaterRun]:
        """The runs kept for later (of one task, or of all), soonest first."""
        if task_id is None:
            rows = await self._read(f"SELECT {_COLUMNS} FROM later ORDER BY due, id")
        else:
            rows = await self._read(
                f"SELECT {_COLUMNS} FROM later WHERE task_id = ? ORDER BY due, id", (task_id,)
            )
        return [_later(r) for r in rows]

    async def drop_later(self, ids: Sequence[int]) -> None:
        """Forget runs kept for later (they are starting, or their task is gone)."""
        if ids:
            await self._write(
                lambda tx: tx.many("DELETE FROM later WHERE id = ?", [(i,) for i in ids])
            )

    async def cancel_later(self, task_id: str, actor: str | None, now: datetime) -> list[LaterRun]:
        """Remove every run kept for later of a task, and log who did; what was removed."""

        async def step(tx: _Tx) -> list[LaterRun]:
            rows = await tx.rows(
                f"DELETE FROM later WHERE task_id = ? RETURNING {_COLUMNS}", (task_id,)
            )
            gone = sorted((_later(r) for r in rows), key=lambda r: (r.due, r.id))
            if gone:
                what = f"{len(gone)} pending run(s) cancelled by {actor or 'unknown'}"
                await tx.log(now.timestamp(), task_id, "cancelled", what, None, actor)
            return gone

        return await self._write(step)
