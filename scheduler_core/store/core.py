"""The store's core: the connections, the transactions, a file deleted under us.

One aiosqlite connection per process for writing (and a read-only one, see `Store`), in
autocommit mode, used through aiosqlite's public API only. Every statement is a trip to
aiosqlite's thread, so the hot paths are single statements, each its own transaction
(`_write_one`): a run starting is one INSERT and a run ending one UPDATE, and triggers in
the schema (migration 4) do the rest in the same statement. Other changes are a short
`BEGIN IMMEDIATE ... COMMIT` (`_write`) in a task of its own, which finishes even if the
awaiting caller is cancelled. Both hand their statements to the writer's thread in turns
(one lock), which runs them in that order, so no statement lands inside another coroutine's
transaction. The file is created and migrated with a plain connection before aiosqlite opens
it (`_prepare`). WAL lets task scripts save checkpoints (`scheduler_core.checkpoint`) while
the daemon writes. `synchronous=NORMAL` in WAL mode keeps every commit across a crash of the
daemon; only a power cut can lose the newest few commits, never the database. Migrations are
single statements under `PRAGMA user_version`.

Times are stored as UNIX seconds (REAL) and returned as aware UTC datetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from scheduler_core.errors import StoreError, database_files, lost_schema, make_state_dir, translate
from scheduler_core.migrations import MIGRATIONS, objects
from scheduler_core.model import Retention
from scheduler_core.safe import storable
from scheduler_core.store.files import (
    closed_to_others,
    identity,
    made_for_its_folder,
    os_error,
    swap_in,
)
from scheduler_core.store.health import WriteHealth

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_RETENTION = Retention()
BUSY_TIMEOUT_MS = 10_000
_SCHEMA = objects()
SCHEMA_NAMES = "SELECT type, name FROM sqlite_schema"


def to_epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _prepare(path: Path, reads_only: bool = False) -> None:
    """Create or migrate the file, on a plain connection (run in a thread). In the write lock
    even with nothing to migrate, so a writer learns now that it cannot write; not a reader,
    which WAL lets through while another process writes."""
    database_files(path)
    emptied = _size(path) == 0  # to SQLite, a new database: said below
    made_for_its_folder(path)
    if not reads_only:
        closed_to_others(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = _known_schema(db, path)
        if version == 0 and emptied:  # an error: what it held may be lost (the file says no more)
            log.error(
                "the database %s was an empty file, so a new one is made in it; if it held the "
                "scheduler's history, stop the daemon and restore it from a backup",
                path,
            )
        (auto_vacuum,) = db.execute("PRAGMA auto_vacuum").fetchone()
        if auto_vacuum != 2:
            # Incremental, so pruning can give space back (`prune_output`). Set before the
            # first table is made; an older file is rebuilt once to take it.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
            if tables:
                db.execute("VACUUM")
        db.execute("PRAGMA journal_mode = WAL")
        if version < len(MIGRATIONS) or not reads_only:
            _migrate(db)
        _whole(db, path)
    finally:
        db.close()


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


async def _connect(
    path: Path, reads_only: bool = False
) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
    """The writer and the read-only reader of a prepared file (see `_prepare`). A failure
    leaves neither open: its thread would keep the process from exiting."""
    # Prepared without aiosqlite first: when aiosqlite's own connect fails, its thread
    # finishes after the caller has moved on, and complains about the closed event loop.
    await asyncio.to_thread(_prepare, path, reads_only)
    conns: list[aiosqlite.Connection] = []
    try:
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
    except BaseException:
        for conn in conns:
            await conn.close()
        raise
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
        await self.run(_LOG_INSERT, log_row(at, task_id, action, message, duration_s, actor))


_LOG_INSERT = (
    "INSERT INTO log (time, task_id, action, message, duration_s, actor) VALUES (?, ?, ?, ?, ?, ?)"
)


def log_row(
    at: float,
    task_id: str | None,
    action: str,
    message: str,
    duration_s: float | None,
    actor: str | None,
) -> tuple[float, str | None, str, str, float | None, str | None]:
    """An action-log entry's values for `_LOG_INSERT`, its texts `storable`: they hold what
    people typed, and SQLite refused a whole entry for one lone surrogate."""
    return at, task_id, action, storable(message), duration_s, actor and storable(actor)


class StoreCore:
    """The connections to one SQLite file and the ways to use them: transactions, single
    statements, reads. The rows of each table are parts of their own (see `Store`)."""

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
        self._identity = identity(path)  # to notice the file deleted or replaced under us
        self._usable = asyncio.Event()
        self._usable.set()
        self.health = WriteHealth()  # whether writes work (runs cannot start while they fail)

    @classmethod
    async def open(
        cls, path: Path, retention: Retention = DEFAULT_RETENTION, *, reads_only: bool = False
    ) -> Self:
        """Open (creating if needed) and migrate the database at `path`; `reads_only` for a
        command that writes no more than its audit line (see `_prepare`). Fails with a
        StoreError."""
        try:
            make_state_dir(path.parent)
        except OSError as exc:
            raise os_error(exc, f"cannot create the state directory {path.parent}") from exc
        try:
            writer, reader = await _connect(path, reads_only)
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, path) from exc
            if isinstance(exc, OSError):
                raise os_error(exc, f"cannot open the database {path}") from exc
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
        return self._usable.is_set() and identity(self.path) != self._identity

    async def keep(self) -> None:
        """Put the file back now if it was deleted (see `_put_back`), not at the next write."""
        if self._deleted():
            await self._put_back()

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
        make_state_dir(path.parent)  # removed with it (`rm -rf`)
        restoring.unlink(missing_ok=True)
        made_for_its_folder(restoring)
        target = await asyncio.to_thread(sqlite3.connect, restoring, check_same_thread=False)
        try:
            await self._conn.backup(target)
        finally:
            target.close()
        if self._reader is not None:
            await self._reader.close()
        await self._conn.close()
        swap_in(restoring, path)
        self._conn, self._reader = await _connect(path)
        self._identity = identity(path)
        log.error("the database %s is back, with everything committed before", path)

    async def _write(self, fn: Callable[[_Tx], Awaitable[T]], *, proof: bool = False) -> T:
        """Run `fn` inside one IMMEDIATE transaction, after any other under way.

        The transaction runs in a task of its own: a caller that is cancelled (a client
        that went away) leaves it to finish, never half done."""
        if self._deleted():
            await self._put_back()
        task = asyncio.ensure_future(self._transaction(fn, proof))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _transaction(self, fn: Callable[[_Tx], Awaitable[T]], proof: bool) -> T:
        if not self._usable.is_set():
            await self._usable.wait()  # the file is being put back (see `_put_back`)
        async with self._writing:
            conn = self._conn
            with self.health.writing(proof=proof), self._translated():
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await fn(_Tx(conn))
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
            return result

    async def _write_one(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One statement, its own transaction (autocommit): one trip, its rows. Handed to the
        writer's thread in its turn, which the thread keeps, so the next writer need not wait
        for this answer (waiting made the thread and the loop take turns: a burst ran 15%
        slower). Once handed over it runs whole, whether or not the caller still waits."""
        if self._deleted():
            await self._put_back()
        if not self._usable.is_set():
            await self._usable.wait()
        async with self._writing:
            handed = asyncio.ensure_future(self._conn.execute_fetchall(sql, params))
            await asyncio.sleep(0)  # its first step puts it on the thread's queue, no more
        with self.health.writing(), self._translated():
            return list(await handed)

    async def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """One query, on the reader (which WAL lets through while another process writes)."""
        if not self._usable.is_set():
            await self._usable.wait()
        with self._translated():
            return list(await (self._reader or self._conn).execute_fetchall(sql, params))

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """sqlite3's errors, and aiosqlite's "Connection closed" (a ValueError), as StoreErrors."""
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        except ValueError as exc:
            raise StoreError(f"database unavailable: {exc}") from exc


def _known_schema(db: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; StoreError (`newer`) if a later version migrated it: this
    one must not read or write a schema it does not know (after a downgrade)."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the database {path} is from a newer moltsched (schema {version}; this one "
            f"knows up to {len(MIGRATIONS)}): install that version again, or restore a "
            "backup from before it",
            "newer",
        )
    return version


def _whole(db: sqlite3.Connection, path: Path) -> None:
    """StoreError (`damaged`) if the file, up to date, lacks part of its schema (dropped by
    hand): without a table every write fails; without a trigger, runs go on and their ends
    are recorded nowhere."""
    missing = lost(db.execute(SCHEMA_NAMES))
    if missing:
        raise lost_schema(path, missing)


def lost(have: Iterable[tuple[str, str]]) -> list[str]:
    """What of the schema is not among `have` (`SCHEMA_NAMES`' rows), tables first."""
    names = {f"{kind} {name}" for kind, name in have}
    return sorted(_SCHEMA - names, key=lambda o: (o[:5] != "table", o))


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()  # as of the lock
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for sql in statements:
                db.execute(sql)
            db.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
