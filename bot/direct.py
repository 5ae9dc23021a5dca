"""The CLI commands that work on files directly: `validate` (the configuration), never
through the daemon, and `checkpoint` (the database) from inside a running task, or when no
daemon answers (the daemon answers it otherwise: the agent's user may not write the file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot import client
from bot.failure import EXIT_STATE, EXIT_USAGE, Failure, load
from commands.match import find_task

if TYPE_CHECKING:
    from commands.command import Request
    from config.loader import AppConfig


def validate(config_path: Path, as_json: bool) -> int:
    from config.checks import file_warnings
    from config.loader import ConfigError, load_config

    try:
        config = load_config(config_path, cached=False)
    except ConfigError as exc:
        if as_json:
            print(
                json.dumps(
                    {
                        "valid": False,
                        "path": os.path.abspath(config_path),
                        "problems": exc.problems,
                        "error": str(exc),
                        "kind": exc.kind,
                    }
                )
            )
        print(exc, file=sys.stderr)
        return EXIT_STATE if exc.kind == "permission" else EXIT_USAGE
    warnings = file_warnings(config, os.environ.get("PATH"))
    if as_json:
        print(
            json.dumps(
                {
                    "valid": True,
                    "path": str(config.path),
                    "tasks": len(config.tasks),
                    "warnings": warnings,
                }
            )
        )
    else:
        print(f"{config.path}: valid, {len(config.tasks)} task(s)")
    for warning in warnings:
        print(f"moltsched: warning: {warning}", file=sys.stderr)
    return 0


def in_run(task_id: str) -> bool:
    """Whether this is a task's run asking about its own checkpoint: `$MOLTSCHED_DB` names
    the database, and the id is trusted."""
    return task_id == os.environ.get("MOLTSCHED_TASK_ID") and bool(os.environ.get("MOLTSCHED_DB"))


def checkpoint(
    config_path: Path,
    args: argparse.Namespace,
    request: Request | None = None,
    hint: Path | None = None,
) -> int:
    """`checkpoint show|save|clear TASK [JSON]`, straight on the database (`args.value` is
    the JSON text, stdin read already).

    Inside a task run the database is `$MOLTSCHED_DB`; elsewhere the configuration is loaded
    to find it and to check the id, and a daemon where it really keeps its state (not at
    `hint`, where `request` was asked already) answers instead. Writing directly is safe
    beside a running daemon (WAL, busy timeout) and durable once the command returns.
    """
    from scheduler_core.checkpoint import (
        CheckpointError,
        CheckpointStoreError,
        load_checkpoint,
        parse,
        save_checkpoint,
    )

    task_id: str = args.task
    fresh = False
    db = os.environ.get("MOLTSCHED_DB") if in_run(task_id) else None
    if db is None:
        config = load(config_path)
        state_dir = config.settings.state_dir
        if request is not None and state_dir != hint:
            answered = client.ask(state_dir, request)
            if answered is not None:
                return answered
        from bot.offline import needs_the_daemon

        needs_the_daemon(state_dir)  # one that may not write it hears that the daemon is down
        from scheduler_core.errors import TaskNotFoundError

        try:
            task_id = find_task(task_id, [t.id for t in config.tasks])
        except TaskNotFoundError as exc:
            raise Failure(str(exc), "unknown-task", extra={"nearest": exc.nearest}) from None
        db = str(config.settings.db_path)
        fresh = not _exists(config.settings.db_path)  # the daemon has never run: no state yet
    try:
        if fresh and args.action != "save":  # none saved, none to clear
            if args.json or args.action == "show":
                print("null" if args.json else "no checkpoint")
            return 0
        if args.action == "show":
            value = load_checkpoint(task_id, db=db)
            if args.json:
                print(json.dumps(value))
            else:
                from commands.reply import checkpoint_text

                print(checkpoint_text(value))
            return 0
        value = None
        if args.action == "save":
            if args.value is None:
                raise Failure("checkpoint save needs a JSON value", "usage")
            value = parse(args.value)
        if fresh:  # made as the daemon makes it, so that its first run begins from this
            _create(config)
        save_checkpoint(value, task_id, db=db)
        if args.json:  # what is stored now, as `show` would print it
            print(json.dumps(value))
        return 0
    except CheckpointStoreError:
        raise  # the state cannot be reached: see main()
    except CheckpointError as exc:
        raise Failure(str(exc), "usage") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # it cannot be looked at: what reading it says is the answer
        return True


def _create(config: AppConfig) -> None:
    import asyncio

    from scheduler_core.store import Store

    async def create() -> None:
        await (await Store.open(config.settings.db_path, config.settings.retention)).close()

    asyncio.run(create())


def given_value(value: str | None) -> str | None:
    """The checkpoint given (`-`: on stdin), as the JSON text it is stored as: that, not what
    was read (pretty-printed, it may be 16 times bigger), is what goes to the daemon."""
    from scheduler_core.checkpoint import MAX_BYTES, CheckpointError, encode, parse

    text = _from_stdin(MAX_BYTES) if value == "-" else value
    try:
        return None if text is None else encode(parse(text))
    except CheckpointError as exc:
        raise Failure(str(exc), "usage") from None


def _from_stdin(limit: int) -> str:
    """The value on stdin, read only so far: what a producer that never stops sends is not
    taken whole. Pretty-printed JSON is let through at up to 16 times the checkpoint's
    `limit`, as it may be that much bigger than the checkpoint it makes."""
    most = 16 * limit
    raw = sys.stdin.read(most + 1)
    if len(raw) > most:
        raise Failure(
            f"a checkpoint is at most {limit // 1024} KiB, and over {most >> 20} MiB came on "
            "stdin; keep bigger state in a file of the task's own and save its name",
            "usage",
        )
    return raw
