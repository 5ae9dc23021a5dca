"""The database's files as files: who owns a new one, whether it is still the one we opened,
and putting one back in its place."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
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
    """Make the file, if it is not there, its user's alone (0600, as SQLite then gives its
    -wal and -shm files): it holds what tasks printed, their checkpoints and who asked for
    what, and `control.group` may search the folder to reach the socket. Made by root (`sudo
    moltsched status` before the daemon first starts), it is made the folder's owner's:
    root's, the daemon, running as that owner, could write nothing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # there already, or SQLite's own open says why it cannot be made
    try:
        if os.geteuid() == 0:
            with contextlib.suppress(OSError):  # root that is not (NFS root_squash): as before
                folder = os.stat(path.parent)
                os.fchown(fd, folder.st_uid, folder.st_gid)
    finally:
        os.close(fd)


def closed_to_others(path: Path) -> None:
    """The database's files that are ours and open to others (SQLite's 0644, as earlier
    versions left them), closed to them: see `made_for_its_folder`."""
    real = os.path.realpath(path)
    for file in (real, f"{real}-wal", f"{real}-shm"):
        with contextlib.suppress(OSError):  # not there; or its owner's to change
            st = os.stat(file)
            if st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(file, stat.S_IMODE(st.st_mode) & 0o700)
                log.info("closed %s to other users (it was open to them)", file)
