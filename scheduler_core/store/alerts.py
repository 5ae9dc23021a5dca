"""The outbox of alerts and the action log: rows written before anything is sent, and
everything that happened, with who did it (reads counted, see `log_query`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from scheduler_core.model import LogEntry, OutboxItem, Retention
from scheduler_core.store.core import (
    _LOG_INSERT,
    DEFAULT_RETENTION,
    StoreCore,
    _Tx,
    from_epoch,
    log_row,
    to_epoch,
)
from scheduler_core.tally import Counted, Tally

log = logging.getLogger(__name__)


# A read as the action log keeps it: (actor, task id, the command as typed in the chat).
_Query = tuple[str | None, str | None, str]


class AlertAndLogRows(StoreCore):
    def __init__(
        self, conn: aiosqlite.Connection, path: Path, retention: Retention = DEFAULT_RETENTION
    ) -> None:
        super().__init__(conn, path, retention)
        self._queries: Tally[_Query] = Tally()

    async def close(self) -> None:
        """The counts of reads not written yet go in first."""
        for counted in self._queries.counted():
            self._log_query(counted)
        await super().close()

    async def queue_alert(
        self,
        task_id: str,
        kind: str,
        messages: Sequence[tuple[str, str]],
        alerted_at: datetime | None,
        now: datetime,
        *,
        stale: bool = False,
    ) -> None:
        """Queue (recipient, text) messages and set the task's `alerted_at` (with `stale`, a
        max_age alert: its `stale_alerted`), atomically."""
        at = now.timestamp()
        column = "stale_alerted" if stale else "alerted_at"

        async def step(tx: _Tx) -> None:
            await tx.many(
                "INSERT INTO outbox (created, task_id, kind, recipient, text, next_attempt) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(at, task_id, kind, to, text, at) for to, text in messages],
            )
            await tx.run(
                f"UPDATE task SET {column} = ? WHERE id = ?", (to_epoch(alerted_at), task_id)
            )

        await self._write(step)

    async def pending_alerts(self, limit: int = 100, *, signal: bool = True) -> list[OutboxItem]:
        """Alerts not yet delivered, oldest first.

        `signal`: those Signal can deliver (an alert queued with no `signal:` section has no
        recipient: the fallback's alone), at most `limit` of each recipient's, so one whose
        alerts never go through (a number not on Signal) cannot fill the batch and hold up
        everyone else's. Otherwise the oldest `limit` of all, for the fallback.
        """
        columns = "id, task_id, kind, recipient, text, attempts, next_attempt, created"
        if signal:
            sql = (
                f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER "
                "(PARTITION BY recipient ORDER BY id) AS n FROM outbox "
                "WHERE sent IS NULL AND recipient != '') WHERE n <= ? ORDER BY id"
            )
        else:
            sql = f"SELECT {columns} FROM outbox WHERE sent IS NULL ORDER BY id LIMIT ?"
        rows = await self._read(sql, (limit,))
        return [
            OutboxItem(
                item_id,
                task_id,
                kind,
                recipient,
                text,
                attempts,
                datetime.fromtimestamp(next_attempt, UTC),
                datetime.fromtimestamp(created, UTC),
            )
            for item_id, task_id, kind, recipient, text, attempts, next_attempt, created in rows
        ]

    async def alerts_sent(
        self, items: Sequence[OutboxItem], now: datetime, channel: str = "signal"
    ) -> None:
        """Mark alerts delivered by `channel` (`signal`: these rows, sent together as one
        message; `fallback`: the alerts of these rows by the fallback command, which marks
        every recipient's row of each, read or not, as a batch may end inside an alert), and
        log them with the channel."""
        at = now.timestamp()

        def what(kind: str, recipient: str) -> str:
            if channel != "signal":
                return f"{kind} via the {channel} command"
            text = f"{kind} to {recipient} via signal"
            return text + (f" (in a digest of {len(items)})" if len(items) > 1 else "")

        async def step(tx: _Tx) -> None:
            marked: list[tuple[str | None, str, str]] = []
            if channel == "signal":
                await tx.many(
                    "UPDATE outbox SET sent = ?, channel = ? WHERE id = ? AND sent IS NULL",
                    [(at, channel, i.id) for i in items],
                )
                marked = [(i.task_id, i.kind, i.recipient) for i in items]
            else:  # an alert's rows are those queued with it: same task, kind, text and time
                first = {(i.task_id, i.kind, i.text, i.created): i.id for i in reversed(items)}
                for (task_id, kind, text, _), row_id in first.items():
                    marked += await tx.rows(
                        "UPDATE outbox SET sent = ?, channel = ? WHERE sent IS NULL "
                        "AND task_id IS ? AND kind = ? AND text = ? "
                        "AND created = (SELECT created FROM outbox WHERE id = ?) "
                        "RETURNING task_id, kind, recipient",
                        (at, channel, task_id, kind, text, row_id),
                    )
            await tx.many(
                _LOG_INSERT,
                [(at, t, "alert_sent", what(k, r), None, None) for t, k, r in marked],
            )

        await self._write(step)

    async def alerts_dropped(self, items: Sequence[OutboxItem], now: datetime, why: str) -> None:
        """Give up alerts no one is to get any more (channel `dropped`), each logged `why`."""
        at = now.timestamp()

        async def step(tx: _Tx) -> None:
            await tx.many(
                "UPDATE outbox SET sent = ?, channel = 'dropped' WHERE id = ? AND sent IS NULL",
                [(at, i.id) for i in items],
            )
            await tx.many(
                _LOG_INSERT,
                [
                    (
                        at,
                        i.task_id,
                        "alert_dropped",
                        f"{i.kind} to {i.recipient}: {why}",
                        None,
                        None,
                    )
                    for i in items
                ],
            )

        await self._write(step)

    async def alerts_failed(
        self, items: Sequence[OutboxItem], error: str, retry_at: datetime
    ) -> None:
        """Record a failed delivery; the alerts are tried again at `retry_at`."""
        await self._write(
            lambda tx: tx.many(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ? "
                "WHERE id = ?",
                [(error[:500], retry_at.timestamp(), i.id) for i in items],
            )
        )

    async def recent_outcomes(self, task_id: str, limit: int) -> list[bool]:
        """Whether each of the task's newest finished runs worked (interrupted and stopped
        ones aside, and a run a retry followed: the retry speaks for it), oldest first."""
        rows = await self._read(
            "SELECT outcome FROM run WHERE task_id = ? AND outcome IN "
            "('success', 'failed', 'timeout') AND NOT retried ORDER BY id DESC LIMIT ?",
            (task_id, limit),
        )
        return [outcome == "success" for (outcome,) in reversed(rows)]

    async def staleness(
        self, task_ids: Sequence[str]
    ) -> list[tuple[str, datetime | None, datetime | None, datetime | None]]:
        """For max_age: each task's last success, when it was added, and when its current
        stale period was alerted."""
        if not task_ids:
            return []
        marks = ", ".join("?" * len(task_ids))
        rows = await self._read(
            f"SELECT id, last_success, added, stale_alerted FROM task WHERE id IN ({marks})",
            task_ids,
        )
        return [(i, from_epoch(s), from_epoch(a), from_epoch(x)) for i, s, a, x in rows]

    async def alerts_waiting(self) -> int:
        """How many alerts are not delivered yet."""
        ((waiting,),) = await self._read("SELECT COUNT(*) FROM outbox WHERE sent IS NULL")
        return int(waiting)

    # --- action log --------------------------------------------------------------------------

    async def log(
        self,
        action: str,
        message: str = "",
        *,
        task_id: str | None = None,
        duration_s: float | None = None,
        actor: str | None = None,
        when: datetime | None = None,
    ) -> None:
        """Append one entry to the action log."""
        at = (when or datetime.now(UTC)).timestamp()
        await self._write_one(_LOG_INSERT, log_row(at, task_id, action, message, duration_s, actor))

    def log_later(self, action: str, message: str = "", **kw: Any) -> None:
        """`log()`, without waiting for it: for audit entries of reads, which must not wait
        behind another process's write lock. A failure is logged, not raised."""
        task = asyncio.ensure_future(self.log(action, message, **kw))
        self._later.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._later.discard(t)
            if not t.cancelled() and t.exception() is not None:
                said = self.health.error is not None  # said once, by whoever watches it
                (log.debug if said else log.warning)(
                    "could not write a log entry: %s", t.exception()
                )

        task.add_done_callback(done)

    def log_query(self, message: str, *, task_id: str | None, actor: str | None) -> None:
        """Audit a read (`status`, `logs:x`...) as a `query` entry, without waiting for it
        (see `log_later`). The same read by the same caller within the hour is counted, not
        written, so an agent polling `status` adds an entry an hour, not one a call."""
        for counted in self._queries.note((actor, task_id, message), time.monotonic()):
            self._log_query(counted)

    def _log_query(self, c: Counted[_Query]) -> None:
        actor, task_id, message = c.key
        if c.this:
            text = message + c.before()
        else:
            text = f"{message}; {c.more} more, not logged one by one"
        self.log_later("query", text, task_id=task_id, actor=actor)

    async def logs(
        self, task_id: str | None = None, limit: int = 20, *, queries: bool = False
    ) -> list[LogEntry]:
        """The newest action-log entries, newest first.

        Read-only commands are audited as `query` entries; they are left out unless asked for,
        so an agent polling `status` does not bury the runs.
        """
        return [e async for batch in self.iter_logs(task_id, limit, queries=queries) for e in batch]

    async def iter_logs(
        self, task_id: str | None, limit: int, *, queries: bool = False, batch: int = 1000
    ) -> AsyncGenerator[list[LogEntry], None]:
        """`logs`, a batch at a time: each batch is its own short read (keyset paging on the
        id), so `logs -n 1000000` never holds the log in memory whole."""
        where = "1" if task_id is None else "task_id = :task"
        if not queries:
            where += " AND action != 'query'"
        sql = (
            "SELECT id, time, task_id, action, message, duration_s, actor FROM log "
            f"WHERE {where} AND id < :before ORDER BY id DESC LIMIT :n"
        )
        before, left = 1 << 62, limit
        while left > 0:
            rows = await self._read(sql, {"task": task_id, "before": before, "n": min(batch, left)})
            if not rows:
                return
            yield [
                LogEntry(datetime.fromtimestamp(at, UTC), task, action, message, duration, actor)
                for _, at, task, action, message, duration, actor in rows
            ]
            before, left = rows[-1][0], left - len(rows)
