"""Read the seed skill's database (`data/scheduler.db`): its `task_state` and `task_log`.

The seed wrote `last_run`/`next_run` as naive local ISO times (`datetime.now().isoformat()`)
and `task_log.timestamp` as SQLite's `CURRENT_TIMESTAMP` (UTC, `YYYY-MM-DD HH:MM:SS`). Columns
the file lacks are read as empty; the file is opened read-only.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

# The seed's log actions, in ours.
_ACTIONS = {"error": "failed"}


@dataclass(frozen=True)
class SeedState:
    task_id: str
    name: str
    status: str
    last_run: datetime | None
    next_run: datetime | None
    run_count: int
    error_count: int
    last_error: str | None
    checkpoint: str | None


@dataclass(frozen=True)
class SeedLog:
    time: datetime
    task_id: str
    action: str
    message: str
    duration_s: float | None


class SeedError(Exception):
    """The seed database cannot be read."""


def read_seed_db(path: Path, zone: ZoneInfo) -> tuple[list[SeedState], list[SeedLog]]:
    """The task states and log entries of a seed database."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SeedError(f"cannot open {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    try:
        states = [_state(r, zone) for r in _rows(conn, "task_state")]
        logs = [_log(r) for r in _rows(conn, "task_log")]
    except sqlite3.Error as exc:
        raise SeedError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
    return states, [entry for entry in logs if entry is not None]


def _rows(conn: sqlite3.Connection, table: str) -> list[dict[str, object]]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if not exists:
        return []
    order = "id" if table == "task_log" else "rowid"
    return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY {order}")]


def _local(value: object, zone: ZoneInfo) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=zone)).astimezone(UTC)


def _checkpoint(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return json.dumps(json.loads(value), separators=(",", ":"))
    except ValueError:
        return None  # not JSON: nothing a task could resume from


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _state(row: dict[str, object], zone: ZoneInfo) -> SeedState:
    task_id = str(row.get("task_id"))
    return SeedState(
        task_id=task_id,
        name=str(row.get("name") or task_id),
        status=str(row.get("status") or "idle"),
        last_run=_local(row.get("last_run"), zone),
        next_run=_local(row.get("next_run"), zone),
        run_count=_int(row.get("run_count")),
        error_count=_int(row.get("error_count")),
        last_error=str(row["last_error"])[:2000] if row.get("last_error") else None,
        checkpoint=_checkpoint(row.get("checkpoint")),
    )


def _log(row: dict[str, object]) -> SeedLog | None:
    stamp = row.get("timestamp")
    if not isinstance(stamp, str) or not row.get("task_id"):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    action = str(row.get("action") or "note")
    duration = row.get("duration_seconds")
    return SeedLog(
        time=when if when.tzinfo else when.replace(tzinfo=UTC),
        task_id=str(row["task_id"]),
        action=_ACTIONS.get(action, action),
        message=str(row.get("message") or ""),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
    )
