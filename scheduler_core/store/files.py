"""The database's files as files: who owns a new one, whether it is still the one we opened,
and putting one back in its place."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

from scheduler_core.errors import StoreError

log = logging.getLogger(__name__)


def swap_in(restoring: Path, path: Path) -> None:
    """Put `restoring` at `path`, setting aside what is there now."""
    if path.exists():
        aside = path.with_name(f"{path.name}.replaced-{int(time.time())}")
        os.replace(path, aside)
        log.error("what was at %s is kept as %s", path, aside)
    for extra in ("-wal", "-shm"):  # a new file's, or none: never ours any more
        Path(f"{path}{extra}").unlink(missing_ok=True)
    os.replace(restoring, path)


def identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def os_error(exc: OSError, what: str) -> StoreError:
    kind = "permission" if isinstance(exc, PermissionError) else "unavailable"
    if exc.errno == errno.ENOSPC:
        kind = "full"
    return StoreError(f"{what}: {exc.strerror or exc}", kind)


def made_for_its_folder(path: Path) -> None:
    """Make the file, if it is not there, as its folder's owner's: made by root (`sudo
    moltsched status` before the daemon first starts), it would be root's, and the daemon,
    running as the folder's owner, could write nothing. SQLite gives its -wal and -shm files
    the owner of the database file itself."""
    if os.geteuid() != 0:
        return  # the file is ours, whoever owns the folder
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # SQLite's mode
    except OSError:
        return  # there already, or SQLite's own open says why it cannot be made
    try:
        with contextlib.suppress(OSError):  # root that is not (NFS root_squash): as before
            folder = os.stat(path.parent)
            os.fchown(fd, folder.st_uid, folder.st_gid)
    finally:
        os.close(fd)
