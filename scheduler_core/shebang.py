"""How a `script:` task runs: the interpreter its `#!` line names, read as the kernel reads it."""

from __future__ import annotations

import os
import stat

# The kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE).
SHEBANG_MAX = 256
# What an editor's "UTF-8 with BOM" puts first: the kernel then sees no `#!` line, but the
# person who wrote one does, and the interpreters that matter here (Python, Node, Perl) skip it.
BOM = b"\xef\xbb\xbf"


def script_argv(script: str) -> tuple[str, ...]:
    """How a `script:` runs: with the interpreter its `#!` line names, as the kernel would run
    it (the interpreter, the rest of the line as one argument, the script), else with bash.
    A byte-order mark before the `#!` is passed over: what the line names still runs.

    Looked at as each run starts, so an edited first line applies at the next run: the line
    is read again whenever the file's identity (inode, size, times) has changed, which one
    stat tells. A file that cannot be read is left to bash, which says why.
    """
    try:
        st = os.stat(script)
    except OSError:
        return ("bash", script)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _SHEBANGS.get(script)
    if known is not None and known[0] == key:
        return known[1]
    head = head_of(script, SHEBANG_MAX)
    if head is None:  # bash reading a named pipe there holds one run, not the daemon
        return ("bash", script)
    argv = _shebang_argv(head, script)
    if len(_SHEBANGS) >= _SHEBANGS_MAX:
        _SHEBANGS.clear()
    _SHEBANGS[script] = (key, argv)
    return argv


def head_of(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """The first `limit` bytes of a regular file; None for anything else, or none there.
    Not blocking: a named pipe where a script belongs (another task may write where the
    scripts are) would hold whoever reads it, the daemon's loop or `validate`, for ever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            return f.read(limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None


def _shebang_argv(head: bytes, script: str) -> tuple[str, ...]:
    head = head.removeprefix(BOM)
    if not head.startswith(b"#!"):
        return ("bash", script)
    line = head[2:].split(b"\n", 1)[0].rstrip(b"\r").strip()
    words = line.split(None, 1)
    if not words:
        return ("bash", script)
    return (*(os.fsdecode(w.strip()) for w in words), script)


def no_shebang(head: bytes, file: str) -> str:
    """Why the system cannot run `file`, whose start is `head` ("Exec format error"), and
    what to do about it."""
    if head.startswith(BOM + b"#!"):
        return (
            'has its #! line after a byte-order mark ("UTF-8 with BOM"), which hides it from '
            f"the system; save it as plain UTF-8: sed -i '1s/^\\xEF\\xBB\\xBF//' {file}"
        )
    return "has no #! line, so the system cannot run it; give it one (#!/bin/sh), or use script:"


def which(name: str, path: str) -> str | None:
    """Where `name` is on the search path `path`: the first executable file of that name, as
    `shutil.which` finds it (on POSIX) without importing shutil, which brings compression
    modules with it: 3 ms of every start."""
    if not path:
        return None
    seen = set()
    for folder in path.split(os.pathsep):
        if folder in seen:
            continue
        seen.add(folder)
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.F_OK | os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


# What each script's `#!` line said, by its path, with the file identity it was read at: a
# burst of runs otherwise opens and reads every script once a run.
_SHEBANGS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}
_SHEBANGS_MAX = 10_000
