"""How the daemon's process allocates memory: an idle daemon's RSS is what a small server pays."""

from __future__ import annotations

import os

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def one_malloc_arena() -> None:
    """Have every thread allocate from one heap, as MALLOC_ARENA_MAX=1 does (unless that is
    set already). glibc gives each thread that allocates an arena of its own; the database's
    threads then hold about a megabyte between them that one shared heap does not. Called
    before any thread starts; where there is no mallopt (not glibc), nothing changes."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass
