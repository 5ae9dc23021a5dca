"""Whether the database takes writes: the error of the last write that failed because of the
file, until the store's probe (a write sure to need room) works.

Every run needs a row before it starts, so while writes fail (the disk full, the file made
read-only or damaged, another process holding the lock past the busy timeout) no run can
start. Whoever must hear of that (the daemon's alarm, `status`) watches this instead of the
log. A write our own statement got wrong (a constraint, SQL) says nothing about the file and
leaves the state as it was; a table that is not there does (dropped by hand: `damaged`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator

from scheduler_core.errors import StoreError

Watcher = Callable[[StoreError | None], None]

# sqlite3's names for a statement that is wrong, not for a file that refuses it.
_OURS = ("SQLITE_CONSTRAINT", "SQLITE_ERROR", "SQLITE_MISUSE", "SQLITE_RANGE", "SQLITE_TOOBIG")


class WriteHealth:
    def __init__(self) -> None:
        self.error: StoreError | None = None  # None: the last write worked
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        """`watcher(error)` when writes begin to fail, and `watcher(None)` when one works."""
        self._watchers.append(watcher)

    @contextlib.contextmanager
    def writing(self, *, proof: bool = False) -> Iterator[None]:
        """Around one write (a statement or a transaction), with its errors as StoreErrors.

        Only a `proof` that works (the store's probe, which always writes a page) says that
        writes work again: a write that changed nothing works on a full disk too, and taking
        it for one would start the refused runs again at once, to be refused again."""
        try:
            yield
        except StoreError as exc:
            cause = exc.__cause__  # not sqlite's: the connection closed, as the daemon stops
            name = getattr(cause, "sqlite_errorname", "") or ""
            theirs = exc.kind == "damaged" or not name.startswith(_OURS)  # a table gone too
            if isinstance(cause, sqlite3.Error) and theirs:
                self._set(exc)
            raise
        if proof:
            self._set(None)

    def _set(self, error: StoreError | None) -> None:
        failing = self.error is not None
        self.error = error
        if failing != (error is not None):
            for watcher in self._watchers:
                watcher(error)
