"""Checkpoints for task scripts: `load_checkpoint()` and `save_checkpoint(value)`.

Used from inside a running task (`from scheduler_core.checkpoint import ...`), and by
`moltsched checkpoint`. The task id defaults to `$MOLTSCHED_TASK_ID` and the database to
`$MOLTSCHED_DB`, both set for every run. A save is one IMMEDIATE transaction with
`synchronous=FULL`: once it returns, the checkpoint survives a `kill -9` of the daemon and a
power cut. WAL and a generous busy timeout let it write while the daemon writes.

This is plain `sqlite3` on purpose: a task script should not need an event loop to save.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from scheduler_core.errors import OddFile, StoreError, database_files, translate

BUSY_TIMEOUT_S = 30.0
# The next run gets the checkpoint in its environment, where Linux allows one variable at most
# 128 KiB (MAX_ARG_STRLEN): a bigger one would keep the task from ever starting again.
MAX_BYTES = 64 * 1024
# Deeper JSON than this is refused: whoever reads it (the daemon's `status`, a task in another
# language) must not run out of stack where the saver, with its own limits, did not.
MAX_DEPTH = 100
_TOO_DEEP = f"a checkpoint must be JSON nested at most {MAX_DEPTH} deep"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


class CheckpointError(Exception):
    """A checkpoint could not be read or saved; the message says why."""


class CheckpointStoreError(CheckpointError, StoreError):
    """The database itself failed (damaged, locked, no permission): a StoreError too."""


def _store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    return translate(exc, path, CheckpointStoreError)


def _task_id(task_id: str | None) -> str:
    tid = task_id or os.environ.get("MOLTSCHED_TASK_ID")
    if not tid:
        raise CheckpointError("no task id: pass one or run inside a task ($MOLTSCHED_TASK_ID)")
    return tid


def _db(db: str | os.PathLike[str] | None) -> Path:
    path = db or os.environ.get("MOLTSCHED_DB")
    if not path:
        raise CheckpointError("no database: pass db= or run inside a task ($MOLTSCHED_DB)")
    path = Path(path)
    if not path.exists():
        raise CheckpointStoreError(f"no database at {path}: has the daemon run yet?", "missing")
    try:
        database_files(path)
    except OddFile as exc:
        raise CheckpointStoreError(str(exc), exc.kind) from None
    return path


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise _store_error(exc, path) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        conn.close()
        raise _store_error(exc, path) from exc
    return conn


def load_checkpoint(task_id: str | None = None, *, db: str | os.PathLike[str] | None = None) -> Any:
    """The task's checkpoint as a JSON value, or None if it has none."""
    tid = _task_id(task_id)
    if db is None and "MOLTSCHED_DB" not in os.environ:
        text = os.environ.get("MOLTSCHED_CHECKPOINT") or None
    else:
        path = _db(db)
        conn = _connect(path)
        try:
            row = conn.execute("SELECT checkpoint FROM task WHERE id = ?", (tid,)).fetchone()
        except sqlite3.Error as exc:
            raise _store_error(exc, path) from exc
        finally:
            conn.close()
        text = row[0] if row else None
    return None if text is None else decode(text, tid)


def decode(text: str, task_id: str) -> Any:
    """A stored checkpoint's value; CheckpointError if it is not JSON this can read (it was
    stored by other means than `save_checkpoint`)."""
    why = "nested too deep"
    if not too_deep(text):
        try:
            return json.loads(text)
        except RecursionError:
            pass
        except ValueError as exc:
            why = str(exc)
    raise CheckpointError(
        f"the stored checkpoint of {task_id} is not JSON this can read ({why}); "
        f"`moltsched checkpoint clear {task_id}` or a new save replaces it"
    )


def parse(text: str) -> Any:
    """A checkpoint value from JSON text; CheckpointError if it is not JSON, or is nested
    deeper than a checkpoint may be (`too_deep`)."""
    if too_deep(text):
        raise CheckpointError(_TOO_DEEP)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"the checkpoint is not JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError(_TOO_DEEP) from None


def too_deep(text: str) -> bool:
    """Whether JSON text nests deeper than MAX_DEPTH. Counted, not left to the interpreter:
    Python 3.11's decoder fails a few thousand deep, 3.12's reads far deeper, and a stored
    checkpoint must read the same under either (the brackets are counted first, cheaply)."""
    return text.count("[") + text.count("{") > MAX_DEPTH and depth(text) > MAX_DEPTH


def depth(text: str) -> int:
    """How deep JSON text nests its arrays and objects."""
    brackets = _BRACKET.findall(_STRING.sub("", text))
    steps = (1 if b in "[{" else -1 for b in brackets)
    return max(itertools.accumulate(steps), default=0)


def encode(value: Any) -> str:
    """A checkpoint value as JSON text; CheckpointError if it is not JSON-serialisable, is
    nested deeper than `MAX_DEPTH` or is larger than `MAX_BYTES`."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"a checkpoint must be JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError(_TOO_DEEP) from None
    if depth(text) > MAX_DEPTH:
        raise CheckpointError(_TOO_DEEP)
    size = len(text.encode())
    if size > MAX_BYTES:
        raise CheckpointError(
            f"a checkpoint is at most {MAX_BYTES // 1024} KiB and this one is {size:,} bytes "
            "(the next run gets it in $MOLTSCHED_CHECKPOINT); keep bigger state in a file of "
            "the task's own and save its name"
        )
    return text


def save_checkpoint(
    value: Any, task_id: str | None = None, *, db: str | os.PathLike[str] | None = None
) -> None:
    """Replace the task's checkpoint with `value` (any JSON value); None clears it."""
    tid = _task_id(task_id)
    text = None if value is None else encode(value)
    path = _db(db)
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO task (id, name, configured, checkpoint) VALUES (?, ?, 0, ?) "
            "ON CONFLICT (id) DO UPDATE SET checkpoint = excluded.checkpoint",
            (tid, tid, text),
        )
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise _store_error(exc, path) from exc
    finally:
        conn.close()
