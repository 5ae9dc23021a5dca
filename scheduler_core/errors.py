"""The engine's errors, one flat module.

SchedulerError
├── TaskNotFoundError   (also LookupError) an id that is not configured
└── StoreError          SQLite failed; the cause is chained
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # every command imports this module; logging is for the daemon
    import logging


class SchedulerError(Exception):
    """Base of every error the engine raises on purpose."""


class TaskNotFoundError(SchedulerError, LookupError):
    """A task id that is not in the configuration."""

    def __init__(self, task_id: str, known: Iterable[str] = ()) -> None:
        self.task_id = task_id
        self.nearest = nearest_ids(task_id, known)
        hint = f" (did you mean {', '.join(self.nearest)}?)" if self.nearest else ""
        super().__init__(f"unknown task {task_id!r}{hint}")


class WaitsForItselfError(SchedulerError):
    """A run asked for a run that waits for it: of its own task, or of the task whose run
    asked for it (a asks for b, b for a). It would wait for ever."""

    def __init__(self, asking: str, asked: str) -> None:
        if asking == asked:
            super().__init__(f"{asked} cannot wait for its own run")
        else:
            super().__init__(f"{asking} cannot wait for {asked}: {asked} is waiting for {asking}")


class StoreError(SchedulerError):
    """The database could not do what was asked; the sqlite3 error is the cause.

    `kind` says what a person can do about it: `damaged` (not a database, or corrupt),
    `locked` (another process held it past the busy timeout), `permission`, `full` (the disk),
    or `unavailable` (anything else the system refused)."""

    def __init__(self, message: str, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def reason(self) -> str:
        """What is wrong, in a few words (a phone's status line): its kind's, or all of it."""
        return _REASONS.get(self.kind) or str(self)


class OddFile(StoreError):
    """Something else where one of the state's files belongs (a FIFO, a directory, a device),
    or where its directory belongs (a file): `damaged`. Opened to be read, a FIFO waits for a
    writer that never comes, and SQLite names neither the file nor what is wrong with it
    ("disk I/O error")."""

    def __init__(self, path: Path, found: str, fix: str, expected: str = "a file") -> None:
        self.what = f"{path} is {found}, not {expected}"
        self.fix = fix
        super().__init__(f"{self.what} ({fix})", "damaged")


def make_state_dir(path: Path) -> None:
    """Make the state directory, its user's alone (0700), unless it is there; OddFile if
    something else is in its place."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        try:
            found = what_it_is(os.stat(path).st_mode) or "a file"
        except OSError:
            found = "a symbolic link to nothing"
        fix = "move it aside, or set state_dir to another place"
        raise OddFile(path, found, fix, "a directory") from None


def what_it_is(mode: int) -> str | None:
    """What a file of `mode` is when it is no regular file ("a FIFO"); None when it is one."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def database_files(db: Path) -> None:
    """OddFile if the database, or its -wal, -shm or -journal file, is there and is no file.
    SQLite keeps those beside the file a symlink points at, and opens a -journal (a rollback
    to replay) as it opens any database, WAL or not: a FIFO there would hold it for ever."""
    real = os.path.realpath(db)
    for path, fix in (
        (db, "move it aside; the daemon makes a new database as it starts"),
        (Path(f"{real}-wal"), "remove it; SQLite makes its own"),
        (Path(f"{real}-shm"), "remove it; SQLite makes its own"),
        (Path(f"{real}-journal"), "remove it; SQLite makes its own"),
    ):
        try:
            found = what_it_is(os.stat(path).st_mode)
        except OSError:
            continue  # not there, or not ours to look at: opening it says why
        if found is not None:
            raise OddFile(path, found, fix)


def nearest_ids(task_id: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """The configured ids closest to a mistyped one, best first."""
    import difflib

    pool = list(known)
    close = difflib.get_close_matches(task_id, pool, n=limit, cutoff=0.5)
    if not close:
        close = [k for k in pool if task_id and (task_id in k or k in task_id)][:limit]
    return close


_KINDS = {
    "SQLITE_NOTADB": "damaged",
    "SQLITE_CORRUPT": "damaged",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_READONLY": "permission",
    "SQLITE_PERM": "permission",
    "SQLITE_AUTH": "permission",
    "SQLITE_FULL": "full",
}
_REASONS = {
    "damaged": "it is damaged",
    "locked": "another process keeps it locked",
    "permission": "no permission to write it",
    "full": "the disk is full",
}
_ADVICE = {
    "damaged": "it is damaged; move it aside (with its -wal file) and restore a backup, "
    "or let moltsched start a new one",
    "locked": "another process kept it locked past the busy timeout; `fuser` finds it",
    "permission": "no permission to write it; run as the daemon's user",
    "full": "the disk is full",
}


def describe_sqlite_error(exc: Exception, path: Path) -> tuple[str, str]:
    """A sqlite3 error on the database at `path`: one line a person can act on, and its kind
    (see StoreError)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    kind = _KINDS.get("_".join(name.split("_")[:2]), "unavailable")  # SQLITE_BUSY_SNAPSHOT too
    if name.startswith("SQLITE_CANTOPEN") and not os.access(path.parent, os.W_OK):
        kind = "permission"
    elif name == "SQLITE_ERROR" and str(exc).startswith(("no such table", "no such column")):
        kind = "damaged"  # part of the schema dropped by hand while it was open
    elif name.startswith("SQLITE_IOERR") and _no_room(path):
        kind = "full"  # SQLite says "disk I/O error" when it cannot grow its -shm file
    advice = _whose(path) if kind == "permission" else _ADVICE.get(kind)
    what = f"the database {path}: {exc}"
    return (f"{what} ({advice})" if advice else what), kind


def translate(exc: Exception, path: Path, cls: type[StoreError] = StoreError) -> StoreError:
    """A sqlite3 error on the database at `path` as a `cls`: one line a person can act on,
    with its kind."""
    message, kind = describe_sqlite_error(exc, path)
    return cls(message, kind)


def lost_schema(path: Path, missing: list[str]) -> StoreError:
    """A file that lacks part of the schema its version has: damaged, by hand."""
    what = ", ".join(missing)
    return StoreError(
        f"the database {path}: its {what} {'is' if len(missing) == 1 else 'are'} missing "
        f"({_ADVICE['damaged']})",
        "damaged",
    )


def _whose(path: Path) -> str:
    """What to do when the file may not be written: run as its user, or give it back."""
    found = stranger_owned(path)
    if found is None:
        return _ADVICE["permission"]
    theirs, owner = found
    return f"it is {theirs}'s, not {owner}'s, who owns its folder: chown {owner}: {path}*"


def stranger_owned(path: Path) -> tuple[str, str] | None:
    """(whose the file is, whose its folder is) when they differ: a file made by hand as root
    in the daemon's state directory, which the daemon cannot write."""
    try:
        folder, file = os.stat(path.parent), os.stat(path)
    except OSError:
        return None
    if file.st_uid == folder.st_uid:
        return None
    return user_name(file.st_uid), user_name(folder.st_uid)


def user_name(uid: int) -> str:
    """A user as a person names it, for messages."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _no_room(path: Path) -> bool:
    """Whether the disk of `path` has next to no room left for us."""
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < 1 << 16


def log_failure(log: logging.Logger, message: str, *args: object, said: bool = False) -> None:
    """From an `except` block: a StoreError (the database refused, an expected trouble with
    its own clear message) in one line, at DEBUG if `said` (the store's write health has it,
    and the daemon says it once: not a line per refused write); anything else, a bug, with its
    traceback."""
    import sys

    exc = sys.exc_info()[1]
    if isinstance(exc, StoreError):
        (log.debug if said else log.error)(message + ": %s", *args, exc)
    else:
        log.exception(message, *args)
