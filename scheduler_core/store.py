"""The SQLite store: every SQL statement of the daemon lives here.

One aiosqlite connection per process for writing (and a read-only one, see `Store`), in
autocommit mode, used through aiosqlite's public API only. Every statement is a trip to
aiosqlite's thread, so the hot paths are single statements, each its own transaction
(`_write_one`): a run starting is one INSERT and a run ending one UPDATE, and triggers in
the schema (migration 4) do the rest in the same statement. Other changes are a short
`BEGIN IMMEDIATE ... COMMIT` (`_write`) that runs in a task of its own, so it finishes even
if the awaiting caller is cancelled. Both take turns on the writer (one lock), so no
statement lands inside another coroutine's transaction. The file is created and migrated
with a plain connection before aiosqlite opens it (`_prepare`). WAL lets
task scripts save checkpoints (`scheduler_core.checkpoint`) while the daemon writes.
`synchronous=NORMAL` in WAL mode keeps every commit across a crash of the daemon; only a power
cut can lose the newest few commits, never the database. Migrations are single statements
under `PRAGMA user_version`.

Times are stored as UNIX seconds (REAL) and returned as aware UTC datetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from scheduler_core.errors import StoreError, describe_sqlite_error
from scheduler_core.migrations import MIGRATIONS
from scheduler_core.model import (
    OUTCOME_BY_VALUE,
    STATUS_BY_VALUE,
    Cause,
    LogEntry,
    OutboxItem,
    Outcome,
    Retention,
    RunRecord,
    TaskSpec,
    TaskState,
    shown_status,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

_LOG_PRUNE_EVERY_S = 3600.0
DEFAULT_RETENTION = Retention()
_CLEAR_BATCH = 500  # runs whose output is cleared in one transaction, at most
BUSY_TIMEOUT_MS = 10_000


# The task table's columns are TaskState's fields, by the same names (see `_state`).
_TASK_COLUMNS = ", ".join(TaskState._fields)
# The task of a run, each column as the RETURNING of a statement on `run` can read it.
_TASK_AFTER_RUN = ", ".join(
    f"(SELECT {column} FROM task WHERE id = run.task_id) AS {column}"
    for column in _TASK_COLUMNS.split(", ")
)


def to_epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


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


def translate(exc: sqlite3.Error, path: Path) -> StoreError:
    """A sqlite3 error as one line a person can act on, with its kind."""
    message, kind = describe_sqlite_error(exc, path)
    return StoreError(message, kind)


def _swap_in(restoring: Path, path: Path) -> None:
    """Put `restoring` at `path`, setting aside what is there now."""
    if path.exists():
        aside = path.with_name(f"{path.name}.replaced-{int(time.time())}")
        os.replace(path, aside)
        log.error("what was at %s is kept as %s", path, aside)
    for extra in ("-wal", "-shm"):  # a new file's, or none: never ours any more
        Path(f"{path}{extra}").unlink(missing_ok=True)
    os.replace(restoring, path)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _os_error(exc: OSError, what: str) -> StoreError:
    kind = "permission" if isinstance(exc, PermissionError) else "unavailable"
    if exc.errno == errno.ENOSPC:
        kind = "full"
    return StoreError(f"{what}: {exc.strerror or exc}", kind)


def _prepare(path: Path) -> None:
    """Create or migrate the file, on a plain connection (run in a thread)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        (auto_vacuum,) = db.execute("PRAGMA auto_vacuum").fetchone()
        if auto_vacuum != 2:
            # Incremental, so pruning can give space back (`prune_output`). Set before the
            # first table is made; an older file is rebuilt once to take it.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
            if tables:
                db.execute("VACUUM")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            _migrate(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


async def _connect(
    path: Path, conns: list[aiosqlite.Connection]
) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
    """The writer and the read-only reader of a prepared file; each connection is added to
    `conns` as soon as it exists, so a failure can close it."""
    # Prepared without aiosqlite first: when aiosqlite's own connect fails, its thread
    # finishes after the caller has moved on, and complains about the closed event loop.
    await asyncio.to_thread(_prepare, path)
    writer = aiosqlite.connect(path, isolation_level=None)
    conns.append(writer)
    await writer
    for pragma in (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
    ):
        await writer.execute(pragma)
    reader = aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conns.append(reader)
    await reader
    await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return writer, reader


# Runs per statement when they start together: four parameters each (SQLite allows 32,766).
_BATCH = 500


class _Tx:
    """The writer inside one transaction (see `Store._write`): each statement is one trip to
    aiosqlite's connection thread."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute a statement; how many rows it changed."""
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Execute a statement (a query, or one with RETURNING); all its rows."""
        return list(await self._conn.execute_fetchall(sql, params))

    async def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row, or None."""
        found = await self.rows(sql, params)
        return found[0] if found else None

    async def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, params)

    async def log(
        self,
        at: float,
        task_id: str | None,
        action: str,
        message: str,
        duration_s: float | None = None,
        actor: str | None = None,
    ) -> None:
        await self.run(_LOG_INSERT, (at, task_id, action, message, duration_s, actor))


_LOG_INSERT = (
    "INSERT INTO log (time, task_id, action, message, duration_s, actor) VALUES (?, ?, ?, ?, ?, ?)"
)


class Store:
    """Task state, runs and the action log in one SQLite file."""

    def __init__(
        self, conn: aiosqlite.Connection, path: Path, retention: Retention = DEFAULT_RETENTION
    ) -> None:
        self._conn = conn
        # Reads go through a connection (and thread) of their own: while another process holds
        # the write lock, a write waits out the busy timeout on the writer's thread, and WAL
        # still lets reads through, so `status` answers at once instead of queueing behind it.
        self._reader: aiosqlite.Connection | None = None
        self._later: set[asyncio.Task[None]] = set()  # writes nobody waits for (log_later)
        self._writes: set[asyncio.Task[Any]] = set()  # transactions under way (see _write)
        self._writing = asyncio.Lock()  # one transaction at a time on the writer
        self.path = path
        self.retention = retention
        self._last_log_prune = 0.0
        self._runs_per_task: int | None = None  # as the `retention` table has it
        self._identity = _identity(path)  # to notice the file deleted or replaced under us
        self._usable = asyncio.Event()
        self._usable.set()

    @classmethod
    async def open(cls, path: Path, retention: Retention = DEFAULT_RETENTION) -> Store:
        """Open (creating if needed) and migrate the database at `path`.

        Fails with a StoreError, never leaving a connection (and its thread, which would keep
        the process from exiting) behind."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"cannot create the state directory {path.parent}") from exc
        conns: list[aiosqlite.Connection] = []
        try:
            writer, reader = await _connect(path, conns)
        except BaseException as exc:
            for conn in conns:
                await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, path) from exc
            if isinstance(exc, OSError):
                raise _os_error(exc, f"cannot open the database {path}") from exc
            raise
        store = cls(writer, path, retention)
        store._reader = reader
        return store

    async def close(self) -> None:
        """Close the connections; writes already queued finish first."""
        if self._later:
            await asyncio.wait(self._later, timeout=BUSY_TIMEOUT_MS / 1000 + 1)
        if self._writes:
            await asyncio.wait(self._writes, timeout=BUSY_TIMEOUT_MS / 1000 + 1)
        if self._deleted():
            with contextlib.suppress(StoreError, OSError):
                await self._put_back()
        if self._reader is not None:
            await self._reader.close()
        await self._conn.close()

    def _deleted(self) -> bool:
        """Whether the file at `path` is no longer the one we have open."""
        return self._usable.is_set() and _identity(self.path) != self._identity

    async def _put_back(self) -> None:
        """The database file was deleted (or replaced) while we had it open. Our connection
        still holds all of it: write it back to `path` (setting aside whatever is there now),
        then carry on with the file put back. Nothing committed is lost."""
        async with self._writing:
            if not self._deleted():
                return  # put back meanwhile, by the transaction this one waited for
            self._usable.clear()
            try:
                await self._restore()
            finally:
                self._usable.set()

    async def _restore(self) -> None:
        path = self.path
        restoring = path.with_name(path.name + ".restoring")
        log.error("the database %s was deleted or replaced while in use; putting it back", path)
        restoring.unlink(missing_ok=True)
        target = await asyncio.to_thread(sqlite3.connect, restoring, check_same_thread=False)
        try:
            await self._conn.backup(target)
        finally:
            target.close()
        if self._reader is not None:
            await self._reader.close()
        await self._conn.close()
        _swap_in(restoring, path)
        conns: list[aiosqlite.Connection] = []
        try:
            self._conn, self._reader = await _connect(path, conns)
        except BaseException:
            for c in conns:
                await c.close()
            raise
        self._identity = _identity(path)
        log.error("the database %s is back, with everything committed before", path)

    async def _write(self, fn: Callable[[_Tx], Awaitable[T]]) -> T:
        """Run `fn` inside one IMMEDIATE transaction, after any other under way.

        The transaction runs in a task of its own: a caller that is cancelled (a client
        that went away) leaves it to finish, never half done."""
        if self._deleted():
            await self._put_back()
        task = asyncio.ensure_future(self._transaction(fn))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _transaction(self, fn: Callable[[_Tx], Awaitable[T]]) -> T:
        if not self._usable.is_set():
            await self._usable.wait()  # the file is being put back (see `_put_back`)
        async with self._writing:
            conn = self._conn
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await fn(_Tx(conn))
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc
            except ValueError as exc:  # aiosqlite: "Connection closed"
                raise StoreError(f"database unavailable: {exc}") from exc
            return result

    async def _write_one(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One statement, which is its own transaction (autocommit): one trip, its rows.

        Taken in its turn on the writer, so it never lands inside another coroutine's
        transaction. No task of its own is needed: once handed to aiosqlite's queue it runs
        whole, whether or not the caller is still waiting."""
        if self._deleted():
            await self._put_back()
        if not self._usable.is_set():
            await self._usable.wait()
        async with self._writing:
            try:
                return list(await self._conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc
            except ValueError as exc:
                raise StoreError(f"database unavailable: {exc}") from exc

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One query, on the reader (which WAL lets through while another process writes)."""
        if not self._usable.is_set():
            await self._usable.wait()
        conn = self._reader or self._conn
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        except ValueError as exc:
            raise StoreError(f"database unavailable: {exc}") from exc

    # --- tasks -------------------------------------------------------------------------------

    async def sync_tasks(self, specs: Sequence[TaskSpec]) -> None:
        """Make the task table match the configuration; removed tasks keep their history."""
        rows = [(s.id, s.name, i) for i, s in enumerate(specs)]

        async def step(tx: _Tx) -> None:
            await tx.run("UPDATE task SET configured = 0")
            await tx.many(
                "INSERT INTO task (id, name, position, configured) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "position = excluded.position, configured = 1",
                rows,
            )

        await self._write(step)

    async def states(self) -> list[TaskState]:
        """Every configured task's state, in configuration order."""
        rows = await self._read(
            f"SELECT {_TASK_COLUMNS} FROM task WHERE configured = 1 ORDER BY position"
        )
        return [_state(r) for r in rows]

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
        """The states of these tasks that the store has seen, in configuration order."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = await self._read(
            f"SELECT {_TASK_COLUMNS} FROM task WHERE id IN ({marks}) ORDER BY position", ids
        )
        return [_state(r) for r in rows]

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

    # --- runs --------------------------------------------------------------------------------

    async def start_run(
        self, task_id: str, cause: Cause, due: datetime | None, started: datetime
    ) -> tuple[int, str | None]:
        """Record that a run started; returns its run id and the task's checkpoint."""
        (record,) = await self.start_runs([(task_id, cause, due)], started)
        return record

    async def start_runs(
        self, runs: Sequence[tuple[str, Cause, datetime | None]], started: datetime
    ) -> list[tuple[int, str | None]]:
        """Record runs that start together; (run id, checkpoint) each. One statement per
        batch of runs (the `run_started` trigger updates the task and the log)."""
        at = started.timestamp()
        records: dict[str, tuple[int, str | None]] = {}
        for i in range(0, len(runs), _BATCH):
            batch = runs[i : i + _BATCH]
            for run_id, task_id, checkpoint in await self._write_one(
                "INSERT INTO run (task_id, cause, due, started) VALUES "
                + ", ".join("(?, ?, ?, ?)" for _ in batch)
                + " RETURNING id, task_id, (SELECT checkpoint FROM task WHERE id = task_id)",
                [v for t, cause, due in batch for v in (t, str(cause), to_epoch(due), at)],
            ):
                records[task_id] = (run_id, checkpoint)
        return [records[t] for t, _, _ in runs]

    async def finish_run(
        self,
        run_id: int,
        task_id: str,
        *,
        outcome: Outcome,
        exit_code: int | None,
        ended: datetime,
        duration_s: float,
        stdout: str,
        stderr: str,
        message: str,
    ) -> TaskState:
        """Record how a run ended, update the task's counters, and apply retention."""
        keep = self.retention
        if keep.runs_per_task != self._runs_per_task:  # at the first run, and after a reload
            await self._write_one("UPDATE retention SET runs_per_task = ?", (keep.runs_per_task,))
            self._runs_per_task = keep.runs_per_task
        size = len(stdout.encode()) + len(stderr.encode())
        rows = await self._write_one(
            "UPDATE run SET ended = ?, outcome = ?, exit_code = ?, duration_s = ?, stdout = ?, "
            "stderr = ?, output_bytes = ?, message = ? WHERE id = ? RETURNING "
            + _TASK_AFTER_RUN
            + ", (SELECT output_bytes FROM usage) AS output_total",
            (
                ended.timestamp(),
                str(outcome),
                exit_code,
                duration_s,
                stdout,
                stderr,
                size,
                message,
                run_id,
            ),
        )
        *task, total = rows[0]  # the task's columns, then the output total
        now = time.time()
        if now - self._last_log_prune > _LOG_PRUNE_EVERY_S:
            self._last_log_prune = now
            cutoff = now - keep.log_days * 86400
            await self._write_one("DELETE FROM log WHERE time < ?", (cutoff,))
            await self.prune_output(total)
        elif total > keep.output_bytes:
            await self.prune_output(total)
        return _state(task)

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
            try:
                await self._conn.executescript("PRAGMA incremental_vacuum")
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc
        return cleared

    async def recover_crashed(self, now: datetime) -> list[tuple[int, str]]:
        """Runs still open from a daemon that died are recorded `interrupted`; returns their
        (run id, task id)."""
        at = now.timestamp()

        async def step(tx: _Tx) -> list[tuple[int, str]]:
            rows = await tx.rows("SELECT id, task_id, started FROM run WHERE outcome IS NULL")
            # The run_ended trigger marks each task interrupted and logs it.
            await tx.many(
                "UPDATE run SET outcome = 'interrupted', ended = ?, duration_s = ?, "
                "message = 'the daemon stopped during this run; it will resume' WHERE id = ?",
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
        else:
            rows = await self._read(
                f"SELECT {_RUN_COLUMNS} FROM run WHERE task_id = ? AND id = ?", (task_id, run_id)
            )
        return _run(rows[0]) if rows else None

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

    # --- alerts ------------------------------------------------------------------------------

    async def queue_alert(
        self,
        task_id: str,
        kind: str,
        messages: Sequence[tuple[str, str]],
        alerted_at: datetime | None,
        now: datetime,
    ) -> None:
        """Queue (recipient, text) messages and set the task's `alerted_at`, atomically."""
        at = now.timestamp()

        async def step(tx: _Tx) -> None:
            await tx.many(
                "INSERT INTO outbox (created, task_id, kind, recipient, text, next_attempt) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(at, task_id, kind, to, text, at) for to, text in messages],
            )
            await tx.run(
                "UPDATE task SET alerted_at = ? WHERE id = ?", (to_epoch(alerted_at), task_id)
            )

        await self._write(step)

    async def pending_alerts(self, limit: int = 100) -> list[OutboxItem]:
        """Alerts not yet delivered, oldest first."""
        rows = await self._read(
            "SELECT id, task_id, kind, recipient, text, attempts, next_attempt FROM outbox "
            "WHERE sent IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            OutboxItem(
                item_id,
                task_id,
                kind,
                recipient,
                text,
                attempts,
                datetime.fromtimestamp(next_attempt, UTC),
            )
            for item_id, task_id, kind, recipient, text, attempts, next_attempt in rows
        ]

    async def alerts_sent(self, items: Sequence[OutboxItem], now: datetime) -> None:
        """Mark alerts delivered (together, as one message), and log them."""
        at = now.timestamp()

        def what(item: OutboxItem) -> str:
            text = f"{item.kind} to {item.recipient}"
            return text + (f" (in a digest of {len(items)})" if len(items) > 1 else "")

        async def step(tx: _Tx) -> None:
            await tx.many("UPDATE outbox SET sent = ? WHERE id = ?", [(at, i.id) for i in items])
            await tx.many(
                _LOG_INSERT,
                [(at, i.task_id, "alert_sent", what(i), None, None) for i in items],
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
        """Whether each of the task's newest finished runs worked (interrupted ones aside),
        oldest first."""
        rows = await self._read(
            "SELECT outcome FROM run WHERE task_id = ? AND outcome IN "
            "('success', 'failed', 'timeout') ORDER BY id DESC LIMIT ?",
            (task_id, limit),
        )
        return [outcome == "success" for (outcome,) in reversed(rows)]

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
        await self._write_one(_LOG_INSERT, (at, task_id, action, message, duration_s, actor))

    def log_later(self, action: str, message: str = "", **kw: Any) -> None:
        """`log()`, without waiting for it: for audit entries of reads, which must not wait
        behind another process's write lock. A failure is logged, not raised."""
        task = asyncio.ensure_future(self.log(action, message, **kw))
        self._later.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._later.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("could not write a log entry: %s", t.exception())

        task.add_done_callback(done)

    async def logs(
        self, task_id: str | None = None, limit: int = 20, *, queries: bool = False
    ) -> list[LogEntry]:
        """The newest action-log entries, newest first.

        Read-only commands are audited as `query` entries; they are left out unless asked for,
        so an agent polling `status` does not bury the runs.
        """
        cols = "time, task_id, action, message, duration_s, actor"
        skip = "" if queries else "AND action != 'query'"
        if task_id is None:
            rows = await self._read(
                f"SELECT {cols} FROM log WHERE 1 {skip} ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._read(
                f"SELECT {cols} FROM log WHERE task_id = ? {skip} ORDER BY id DESC LIMIT ?",
                (task_id, limit),
            )
        return [
            LogEntry(datetime.fromtimestamp(at, UTC), task_id, action, message, duration_s, actor)
            for at, task_id, action, message, duration_s, actor in rows
        ]


@dataclass(frozen=True)
class Inspection:
    """What `moltsched doctor` reads from a database, without changing it."""

    problem: str | None  # None: `PRAGMA quick_check` says ok
    alerts_waiting: int = 0
    oldest_alert: datetime | None = None


def inspect(path: Path) -> Inspection:
    """Open the database read-only and check it (`quick_check`); StoreError if it cannot
    be opened at all (missing, no permission). Never writes, never creates the file."""
    if not path.exists():
        raise StoreError(f"the database {path} does not exist yet", "missing")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    try:
        (verdict,) = db.execute("PRAGMA quick_check(5)").fetchone()
        if verdict != "ok":
            return Inspection(f"quick_check: {verdict}")
        count, oldest = db.execute(
            "SELECT COUNT(*), MIN(created) FROM outbox WHERE sent IS NULL"
        ).fetchone()
        return Inspection(None, count, from_epoch(oldest))
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    finally:
        db.close()


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


def _migrate(db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        for sql in statements:
            db.execute(sql)
        db.execute(f"PRAGMA user_version = {number}")
