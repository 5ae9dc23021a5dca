"""`moltsched import-seed DIR`: move from the seed skill to moltsched, safely repeatable.

All of the import is here. It reads `DIR/config/tasks.json` and `DIR/data/scheduler.db`.
If the configuration file does not exist yet, it writes one (YAML) with the seed's tasks,
scripts still in `DIR/tasks`, paths absolute. If the file exists, it must already have every
seed task (it is never edited). Then the seed's task states (counts, last run, last error,
checkpoints, pauses) and log come into our database through the store
(`Store.import_history`). Running it again changes nothing. The configuration loader accepts
the seed's `tasks.json` keys as they are (`config.schema`), which is not an import.

The seed wrote `last_run`/`next_run` as naive local ISO times (`datetime.now().isoformat()`)
and `task_log.timestamp` as SQLite's `CURRENT_TIMESTAMP` (UTC, `YYYY-MM-DD HH:MM:SS`).
Columns its file lacks are read as empty.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from bot.lock import StateLock
from config.loader import AppConfig, ConfigError, load_config
from config.locate import FileTooBig, read_text, state_dir_for
from scheduler_core.checkpoint import CheckpointError, encode, parse
from scheduler_core.errors import what_it_is
from scheduler_core.model import LogEntry, Outcome, Status, TaskState
from scheduler_core.store import Store

ACTOR = "seed"  # what imported log entries are marked with, so they are never added twice


def seed_config(seed_dir: Path, config_path: Path) -> dict[str, Any]:
    """Our configuration for the seed's tasks.json (seed keys translated, scripts left where
    they are: the seed ran them from `DIR/tasks`)."""
    raw = json.loads(read_text(seed_dir / "config" / "tasks.json"))
    tasks = raw.get("tasks", []) if isinstance(raw, dict) else raw
    ours = []
    for t in tasks:
        task = {
            "id": t.get("task_id", t.get("id")),
            "name": t.get("name"),
            "script": t.get("script_path", t.get("script")),
        }
        minutes = t.get("interval_minutes")
        task["every"] = f"{minutes}m" if minutes is not None else t.get("every")
        for key in ("enabled", "priority"):
            if key in t:
                task[key] = t[key]
        ours.append({k: v for k, v in task.items() if v is not None})
    return {
        "state_dir": str(state_dir_for(config_path)),
        "tasks_dir": str((seed_dir / "tasks").resolve()),
        "tasks": ours,
    }


def import_seed(config_path: Path, seed_dir: Path, as_json: bool) -> int:
    tasks_json = seed_dir / "config" / "tasks.json"
    if not tasks_json.exists():
        raise SeedError(f"{tasks_json} does not exist: is {seed_dir} the seed skill's folder?")
    _a_file(tasks_json)
    try:
        wanted = seed_config(seed_dir, config_path)
    except (OSError, ValueError, AttributeError, FileTooBig) as exc:
        raise SeedError(f"cannot read {tasks_json}: {exc}") from None
    draft = None
    if config_path.exists():
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            raise SeedError(str(exc)) from None
        missing = [t["id"] for t in wanted["tasks"] if t["id"] not in {s.id for s in config.tasks}]
        if missing:
            raise SeedError(
                f"{config_path} exists and lacks the seed's task(s) {', '.join(missing)}; "
                "add them, or import into a new file with --config"
            )
    else:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        draft = config_path.with_name(f".{config_path.name}.import")
        header = (
            f"# Imported from the seed skill in {seed_dir.resolve()} by moltsched import-seed.\n"
        )
        draft.write_text(header + yaml.safe_dump(wanted, sort_keys=False), encoding="utf-8")
        try:
            config = load_config(draft)
        except ConfigError as exc:
            draft.unlink()
            raise SeedError(
                f"the seed's tasks.json does not make a valid configuration:\n{exc}"
            ) from None
    not_found: list[str] = []
    left_out: dict[str, str] = {}
    db = seed_dir / "data" / "scheduler.db"
    try:  # read before the configuration is written: a seed that cannot be read leaves none
        if db.exists():
            # A FIFO, opened to be read, would wait for a writer: the file, or one SQLite
            # opens beside it (a rollback journal to replay, a WAL and its index).
            for beside in (db, *(Path(f"{db}{extra}") for extra in ("-journal", "-wal", "-shm"))):
                if beside.exists():
                    _a_file(beside)
            states, logs = read_seed_db(db, config.zone, left_out)
        else:
            states, logs = [], []
            not_found.append(str(db))
    except BaseException:
        if draft is not None:
            draft.unlink()
        raise
    if draft is not None:
        draft.replace(config_path)
        config = load_config(config_path)
    lock = StateLock(config.settings.state_dir)
    if not lock.try_acquire():
        raise SeedError("the daemon is running on this state directory; stop it, then import")
    try:
        new_states, new_logs = asyncio.run(_import(config, states, logs))
    finally:
        lock.release()
    wrote = draft is not None
    summary = {
        "config": str(config_path),
        "config_written": wrote,
        "tasks": len(config.tasks),
        "states_imported": new_states,
        "log_entries_imported": new_logs,
        "not_found": not_found,
        "checkpoints_left_out": left_out,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        what = "wrote" if wrote else "kept"
        print(
            f"{what} {config_path} ({len(config.tasks)} task(s)); imported {new_states} task "
            f"state(s) and {new_logs} log entr{'y' if new_logs == 1 else 'ies'}"
        )
        for path in not_found:
            print(f"not found: {path} (no task states, checkpoints or log to import from it)")
        for task_id, why in left_out.items():
            print(f"checkpoint of {task_id} left out: {why}")
    return 0


async def _import(
    config: AppConfig, states: list[TaskState], logs: list[LogEntry]
) -> tuple[int, int]:
    store = await Store.open(config.settings.db_path, config.settings.retention)
    try:
        await store.sync_tasks(config.tasks)
        return await store.import_history(states, logs, actor=ACTOR)
    finally:
        await store.close()


# The seed's log actions, in ours.
_ACTIONS = {"error": "failed"}


# The seed's task status, as ours (its `paused` is our pause flag on an idle task).
_STATUS = {"running": Status.INTERRUPTED, "error": Status.ERROR}


class SeedError(Exception):
    """The seed cannot be imported; the message says why (the CLI reports it: exit 2)."""


def _a_file(path: Path) -> None:
    """SeedError if `path` is a FIFO, a directory or a device."""
    found = what_it_is(path.stat().st_mode)
    if found is not None:
        raise SeedError(f"{path} is {found}, not a file")


def read_seed_db(
    path: Path, zone: ZoneInfo, left_out: dict[str, str] | None = None
) -> tuple[list[TaskState], list[LogEntry]]:
    """The task states and log entries of a seed database, as ours. A checkpoint a run could
    not be given (the seed set no limit: see `scheduler_core.checkpoint.encode`) is left
    out, and why goes into `left_out` by task id.

    The seed's own file, opened read-only: the one SQLite file this project reads outside
    `scheduler_core.store`, which writes what is read here into ours."""
    left_out = {} if left_out is None else left_out
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SeedError(f"cannot open {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables & {"task_state", "task_log"}:
            raise SeedError(
                f"{path} has no task_state or task_log table: it is not the seed skill's "
                "database (move it aside to import the tasks alone)"
            )
        states = [_state(r, zone, left_out) for r in _rows(conn, "task_state")]
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


def _checkpoint(value: object) -> str:
    """The seed's checkpoint text as ours; CheckpointError if a run could not be given it."""
    if not isinstance(value, str) or not value:
        return ""
    return encode(parse(value))


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _state(row: dict[str, object], zone: ZoneInfo, left_out: dict[str, str]) -> TaskState:
    task_id = str(row.get("task_id"))
    try:
        checkpoint = _checkpoint(row.get("checkpoint")) or None
    except CheckpointError as exc:
        checkpoint, left_out[task_id] = None, str(exc)
    status = str(row.get("status") or "idle")
    run_count = _int(row.get("run_count"))
    outcome = Outcome.FAILED if status == "error" else (Outcome.SUCCESS if run_count else None)
    return TaskState(
        id=task_id,
        name=str(row.get("name") or task_id),
        status=_STATUS.get(status, Status.IDLE),
        paused=status == "paused",
        last_run=_local(row.get("last_run"), zone),
        next_run=_local(row.get("next_run"), zone),
        run_count=run_count,
        error_count=_int(row.get("error_count")),
        consecutive_failures=0,
        last_error=str(row["last_error"])[:2000] if row.get("last_error") else None,
        last_outcome=outcome,
        checkpoint=checkpoint,
    )


def _log(row: dict[str, object]) -> LogEntry | None:
    stamp = row.get("timestamp")
    if not isinstance(stamp, str) or not row.get("task_id"):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    action = str(row.get("action") or "note")
    duration = row.get("duration_seconds")
    return LogEntry(
        time=when if when.tzinfo else when.replace(tzinfo=UTC),
        task_id=str(row["task_id"]),
        action=_ACTIONS.get(action, action),
        message=str(row.get("message") or ""),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        actor=ACTOR,
    )
