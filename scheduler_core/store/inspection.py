"""What `moltsched doctor` reads from a database without changing it (`inspect`): whether it
is whole, the alerts waiting in its outbox, and the last alert some group members missed."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from scheduler_core.errors import StoreError, database_files, translate
from scheduler_core.migrations import MIGRATIONS
from scheduler_core.record import Record
from scheduler_core.store.core import _known_schema, _whole, from_epoch


class Inspection(Record):
    """What `moltsched doctor` reads from a database, without changing it."""

    problem: str | None  # None: `PRAGMA quick_check` says ok
    alerts_waiting: int = 0
    oldest_alert: datetime | None = None
    refused: tuple[str, str] | None = None  # the newest failed try: (recipient, what was said)
    # The newest send of the last MISSED_DAYS that some members of a group missed: when, and
    # its line in the action log.
    missed: tuple[datetime, str] | None = None


MISSED_DAYS = 7


def inspect(path: Path) -> Inspection:
    """Open the database read-only and check it (`quick_check`); StoreError if it cannot
    be opened at all (missing, no permission). Never writes, never creates the file."""
    if not path.exists():
        raise StoreError(f"the database {path} does not exist yet", "missing")
    database_files(path)
    if path.stat().st_size == 0:  # to SQLite, a new database: whatever it held is not in it
        raise StoreError(f"the database {path} is an empty file", "empty")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    try:
        version = _known_schema(db, path)
        (verdict,) = db.execute("PRAGMA quick_check(5)").fetchone()
        if verdict != "ok":
            return Inspection(f"quick_check: {verdict}")
        if version < len(MIGRATIONS):  # the daemon brings it up to date as it starts
            return Inspection(None)
        _whole(db, path)
        count, oldest = db.execute(
            "SELECT COUNT(*), MIN(created) FROM outbox WHERE sent IS NULL"
        ).fetchone()
        refused = db.execute(
            "SELECT recipient, last_error FROM outbox WHERE sent IS NULL AND last_error IS NOT "
            "NULL ORDER BY next_attempt DESC LIMIT 1"
        ).fetchone()
        found = db.execute(
            "SELECT time, message FROM log WHERE time > ? AND action = 'not_delivered' "
            "ORDER BY time DESC LIMIT 1",
            (time.time() - MISSED_DAYS * 86400,),
        ).fetchone()
        missed = None if found is None else (datetime.fromtimestamp(found[0], UTC), found[1])
        return Inspection(None, count, from_epoch(oldest), refused, missed)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    finally:
        db.close()
