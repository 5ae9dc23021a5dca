"""A loaded configuration, kept so that a file whose identity has not changed is not parsed
and validated again: a daemon restart, a reload of the same file, or a `status` with no
daemon reads 10,000 tasks without parsing YAML, checking every field or looking at every script.

The identity is the file's device, inode, size, modification and change times, the
program's version, the files of the code that defines what is kept and of the rules it is
checked by, and what the host's time zone comes from. Only a configuration that
loaded without a problem is kept, so a file with a problem is checked afresh every time; a
script deleted after a good load is found when it is due to run (the run fails and alerts).

Entries are pickles, so they are read only from a folder of our own that no one else can
write (made 0700, owned by us); anything odd about an entry (missing, another identity,
damaged, not ours) means the file is validated again. `$CACHE_DIRECTORY` (systemd's
`CacheDirectory=`) is used when set, else `$XDG_CACHE_HOME/moltsched` or `~/.cache/moltsched`.
A cache that cannot be written is no cache, never an error.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import time
import zlib
from pathlib import Path

from scheduler_core import __version__

_ZONE_FILES = ("/etc/localtime", "/etc/timezone")


def folder() -> Path | None:
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "moltsched"
    home = os.environ.get("HOME")
    return Path(home) / ".cache" / "moltsched" if home else None


def _code() -> list[object]:
    """The files that define what is kept, and the rules it was checked by: an edited
    checkout keeps its version number. The rules are looked at, not imported (importing the
    schema is what the cache spares a start)."""
    import config.loader
    import scheduler_core.model
    import scheduler_core.triggers

    modules = (config.loader, scheduler_core.model, scheduler_core.triggers)
    files = [m.__file__ or "" for m in modules]
    files += [
        os.path.join(os.path.dirname(__file__), n)
        for n in ("schema.py", "fields.py", "times.py", "raw.py")
    ]
    return [os.stat(f).st_mtime_ns for f in files]


def identity(path: Path) -> tuple[object, ...]:
    st = path.stat()
    zone: list[object] = [os.environ.get("TZ"), *_code()]
    for name in _ZONE_FILES:
        with contextlib.suppress(OSError):
            z = os.stat(name)
            zone += [z.st_ino, z.st_mtime_ns, z.st_size]
    return (
        __version__,
        str(path.resolve()),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        *zone,
    )


def _entry(path: Path) -> Path | None:
    where = folder()
    if where is None:
        return None
    # Not hashlib's: it loads OpenSSL, which a daemon without TLS does not (bot.lean). Two
    # files that share a name share an entry, each kept until the other replaces it: the
    # entry's key names its file (`identity`), and only that file's entry is taken.
    return where / f"config-{zlib.crc32(str(path.resolve()).encode()):08x}.pickle"


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read(path: Path, key: tuple[object, ...]) -> object | None:
    """The configuration kept for `path` if it was kept under `key` (its `identity`)."""
    found = _kept(path)
    return found[1] if found is not None and found[0] == key else None


def last(path: Path) -> object | None:
    """The configuration `path` last loaded to without a problem, whatever the file says
    now: what a daemon started from it may still run on."""
    found = _kept(path)
    return found[1] if found is not None else None


def _kept(path: Path) -> tuple[object, object] | None:
    try:
        entry = _entry(path)
        if entry is None or not _ours(os.stat(entry.parent)):
            return None
        # Not blocking, no link followed, a regular file only: a FIFO there (a task runs as
        # this user, and may make one) would wait for a writer, /dev/zero never end.
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not _ours(st):
                return None
            key, config = pickle.load(f)
        return (key, config) if key[1] == str(path.resolve()) else None
    except Exception:  # missing, damaged, from another version: validate again
        return None


def write(path: Path, key: tuple[object, ...], config: object) -> None:
    """Keep `config` as what `path` loads to while its identity is `key` (taken before it
    was read, so a file changed meanwhile is not taken for the one that was loaded)."""
    try:
        entry = _entry(path)
        if entry is None:
            return
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _ours(os.stat(entry.parent)):
            return
        data = pickle.dumps((key, config), protocol=pickle.HIGHEST_PROTOCOL)
        # A name no other writer takes, in a folder only we may write to (`_ours`): what
        # tempfile.mkstemp would give, without its import (4 ms of a first start).
        tmp = entry.parent / f".config-{os.getpid()}-{time.monotonic_ns()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # Entries named as 0.2 named them (24 hex digits) are never read again: a 10,000-task
        # file's is megabytes.
        for unused in entry.parent.glob(f"config-{'[0-9a-f]' * 24}.pickle"):
            with contextlib.suppress(OSError):
                unused.unlink()
    except Exception:  # a home that cannot be written to, a full disk: no cache
        return
