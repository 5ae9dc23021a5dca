"""`moltsched import-seed DIR`: move from the seed skill to moltsched, safely repeatable.

Reads `DIR/config/tasks.json` and `DIR/data/scheduler.db`. If the configuration file does not
exist yet, writes one (YAML) with the seed's tasks, scripts still in `DIR/tasks`; if it
exists, it must already have every seed task (it is never edited). Then brings the seed's task
states (counts, last run, last error, checkpoints, pauses) and log into our database. Running
it again changes nothing: see `Store.import_seed`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from bot.lock import StateLock
from config.loader import AppConfig, ConfigError, load_config
from scheduler_core.seed import SeedError, SeedLog, SeedState, read_seed_db
from scheduler_core.store import Store

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"moltsched: {message}", file=sys.stderr)
    return EXIT_USAGE


def seed_config(seed_dir: Path, config_path: Path) -> dict[str, Any]:
    """Our configuration for the seed's tasks.json (seed keys translated, scripts left where
    they are: the seed ran them from `DIR/tasks`)."""
    raw = json.loads((seed_dir / "config" / "tasks.json").read_text(encoding="utf-8"))
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


def state_dir_for(config_path: Path) -> Path:
    """Where a new configuration keeps its state: absolute, so the file can be moved, and
    /var/lib/moltsched (the unit's StateDirectory) for one written under /etc."""
    folder = config_path.resolve().parent
    if folder.is_relative_to("/etc"):
        return Path("/var/lib/moltsched")
    return folder / "state"


def import_seed(config_path: Path, seed_dir: Path, as_json: bool) -> int:
    tasks_json = seed_dir / "config" / "tasks.json"
    if not tasks_json.is_file():
        return _fail(f"{tasks_json} does not exist: is {seed_dir} the seed skill's folder?")
    try:
        wanted = seed_config(seed_dir, config_path)
    except (OSError, ValueError, AttributeError) as exc:
        return _fail(f"cannot read {tasks_json}: {exc}")
    wrote = False
    if config_path.exists():
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            return _fail(str(exc))
        missing = [t["id"] for t in wanted["tasks"] if t["id"] not in {s.id for s in config.tasks}]
        if missing:
            return _fail(
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
            return _fail(f"the seed's tasks.json does not make a valid configuration:\n{exc}")
        draft.replace(config_path)
        config = load_config(config_path)
        wrote = True
    lock = StateLock(config.settings.state_dir)
    if not lock.try_acquire():
        return _fail("the daemon is running on this state directory; stop it, then import")
    not_found: list[str] = []
    try:
        db = seed_dir / "data" / "scheduler.db"
        if db.exists():
            states, logs = read_seed_db(db, config.zone)
        else:
            states, logs = [], []
            not_found.append(str(db))
        new_states, new_logs = asyncio.run(_import(config, states, logs))
    except SeedError as exc:
        return _fail(str(exc))
    finally:
        lock.release()
    summary = {
        "config": str(config_path),
        "config_written": wrote,
        "tasks": len(config.tasks),
        "states_imported": new_states,
        "log_entries_imported": new_logs,
        "not_found": not_found,
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
    return 0


async def _import(
    config: AppConfig, states: list[SeedState], logs: list[SeedLog]
) -> tuple[int, int]:
    store = await Store.open(config.settings.db_path, config.settings.retention)
    try:
        await store.sync_tasks(config.tasks)
        return await store.import_seed(states, logs)
    finally:
        await store.close()
